//! `tidings-bench austin-dedup`: the same dedup decisions made austin's way (Redis) and
//! in-graph (tidings' keyed state), on the same input, checked equal, timed side by side.
//!
//! austin's way, as its deduplication services do it:
//! - content dedup (`SlideWindowLimitService`): one `EVALSHA` per receiver of a sliding-window
//!   Lua script over a ZSET (`ZREMRANGEBYSCORE`, `ZCARD`, then `ZADD` + `EXPIRE` when under
//!   the threshold);
//! - frequency dedup (`SimpleLimitService`): per message, one `MGET` of its receivers' counters,
//!   then one pipeline of `SETEX counter+1` for those that pass.
//!
//! In-graph: [`ContentDedup::admit`] and [`FrequencyDedup::admit`] on the same keys, in the
//! same order — the state machines the keyed operators run, without the exchange.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tidings_operators::dedup::{ContentDedup, FrequencyDedup};

/// austin's sliding-window script (KEYS[1] key; ARGV window ms, now ms, limit, member).
const SLIDING_WINDOW: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[2] - ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
if n < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
  redis.call('EXPIRE', KEYS[1], math.floor(ARGV[1] / 1000))
  return 0
end
return 1
"#;

/// One delivery of the generated input.
struct Item {
    receiver: u64,
    content: u64,
    time: i64,
}

/// The input: `n` deliveries in messages of `per_message`, over `receivers` receivers and a few
/// contents, event times one hour long (one local day), so both rules reject some.
fn input(n: u64, receivers: u64, per_message: u64) -> Vec<Vec<Item>> {
    let t0 = 1_763_773_200_000i64; // 2025-11-22 09:00 Asia/Shanghai
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let messages = n.div_ceil(per_message);
    (0..messages)
        .map(|m| {
            let time = t0 + (m as i64 * 3_600_000) / messages as i64;
            let content = next() % 4;
            (0..per_message)
                .map(|_| Item {
                    receiver: next() % receivers,
                    content,
                    time,
                })
                .collect()
        })
        .collect()
}

/// Runs both ways; returns the report.
pub fn compare(
    redis_url: &str,
    n: u64,
    receivers: u64,
    per_message: u64,
) -> anyhow::Result<serde_json::Value> {
    let window_ms = 300_000i64;
    let (content_num, frequency_num) = (1u32, 5u32);
    let messages = input(n, receivers, per_message);
    let total: usize = messages.iter().map(Vec::len).sum();

    // In-graph.
    let templates = Arc::new(tidings_model::Templates::default());
    let tz = chrono_tz::Asia::Shanghai;
    let start = Instant::now();
    let mut content = ContentDedup::new(content_num, window_ms, 3_600_000, templates.clone());
    let mut frequency = FrequencyDedup::new(frequency_num, tz, 3_600_000, templates);
    let mut ours = Vec::with_capacity(total);
    for message in &messages {
        for it in message {
            let ckey = ((it.receiver as u128) << 64) | it.content as u128;
            let pass = content.admit(ckey, it.time).is_ok()
                && frequency.admit(it.receiver as u128, it.time).is_ok();
            ours.push(pass);
        }
    }
    let in_graph = start.elapsed();

    // austin's way, against a clean key space.
    let prefix = format!("austin-bench:{}:", std::process::id());
    let mut con = redis::Client::open(redis_url)?.get_connection()?;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(SLIDING_WINDOW)
        .query(&mut con)?;
    let start = Instant::now();
    let mut theirs = Vec::with_capacity(total);
    let mut member = 0u64;
    for message in &messages {
        // Content dedup: one script call per receiver.
        let mut passed = Vec::with_capacity(message.len());
        for it in message {
            member += 1;
            let rejected: i64 = redis::cmd("EVALSHA")
                .arg(&sha)
                .arg(1)
                .arg(format!("{prefix}c:{}:{}", it.receiver, it.content))
                .arg(window_ms)
                .arg(it.time)
                .arg(content_num)
                .arg(member)
                .query(&mut con)?;
            passed.push(rejected == 0);
        }
        // Frequency dedup: MGET the survivors' counters, then SETEX the ones that pass.
        let keys: Vec<String> = message
            .iter()
            .zip(&passed)
            .filter(|(_, p)| **p)
            .map(|(it, _)| format!("{prefix}f:{}", it.receiver))
            .collect();
        let counts: Vec<Option<u32>> = if keys.is_empty() {
            Vec::new()
        } else {
            redis::cmd("MGET").arg(&keys).query(&mut con)?
        };
        // A receiver twice in one message sees its own first admission (as tidings judges).
        let mut seen: HashMap<&str, u32> = HashMap::new();
        let mut pipe = redis::pipe();
        let mut k = 0;
        for p in passed.iter_mut() {
            if !*p {
                theirs.push(false);
                continue;
            }
            let key = keys[k].as_str();
            let count = *seen.entry(key).or_insert(counts[k].unwrap_or(0));
            k += 1;
            if count >= frequency_num {
                theirs.push(false);
            } else {
                seen.insert(key, count + 1);
                pipe.set_ex(key, count + 1, 86_400).ignore();
                theirs.push(true);
            }
        }
        pipe.query::<()>(&mut con)?;
    }
    let austin = start.elapsed();
    // Tidy up.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut con)?;
    for chunk in keys.chunks(10_000) {
        redis::cmd("DEL").arg(chunk).query::<()>(&mut con)?;
    }

    let differ = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
    let rate = |d: std::time::Duration| total as f64 / d.as_secs_f64();
    Ok(serde_json::json!({
        "deliveries": total,
        "receivers": receivers,
        "per_message": per_message,
        "passed": ours.iter().filter(|p| **p).count(),
        "decisions_differ": differ,
        "in_graph_per_s": rate(in_graph),
        "austin_redis_per_s": rate(austin),
        "ratio": austin.as_secs_f64() / in_graph.as_secs_f64(),
    }))
}
