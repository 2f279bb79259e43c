//! Storage figures of issue 14: checkpoint parts per million active keys, and a day's
//! `GROUP BY state` over small tracking files before and after compaction. Each prints one
//! JSON object.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tidings_model::Templates;
use tidings_operators::checkpoint::{read_keyed, write_keyed};
use tidings_operators::dedup::{ContentDedup, FrequencyDedup, KeyedRule};

/// A spread of 128-bit keys (as the dedup keys are hashes).
fn key(k: u64) -> u128 {
    let a = k.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (k >> 29);
    let b = a.rotate_left(31).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    ((a as u128) << 64) | b as u128
}

/// A delivery of message `i` (its id a hash of `i`, to a phone), its content `content`.
fn delivery_of(i: u64, event_time: i64, seq: u128, content: &str) -> tidings_model::Delivery {
    use tidings_model::{Delivery, MessageMeta};
    Delivery::new(
        Arc::new(MessageMeta {
            live: None,
            accounts: None,
            message_id: format!("{:032x}", key(i)).into(),
            template_id: 1,
            business_id: 2_000_000_120_251_122,
            biz_id: None,
            content: content.into(),
            event_time,
            seq,
        }),
        format!("138{:08}", i % 100_000_000).into(),
        0,
        event_time,
        (key(i), key(i) ^ 1),
    )
}

/// Writes and reads back each rule's checkpoint part with `keys` active keys.
pub fn checkpoint(keys: u64) -> anyhow::Result<()> {
    let templates = Arc::new(Templates::default());
    let t0 = 1_763_740_800_000i64;
    let mut content = ContentDedup::new(1, 300_000, 3_600_000, templates.clone());
    let mut frequency = FrequencyDedup::new(5, chrono_tz::Asia::Shanghai, 3_600_000, templates);
    for k in 0..keys {
        let _ = content.admit(key(k), t0 + (k % 300_000) as i64);
        let _ = frequency.admit(key(k) ^ 1, t0 + (k % 300_000) as i64);
    }
    let dir = tempfile::tempdir()?;
    let mut out = serde_json::Map::new();
    out.insert("keys".into(), keys.into());
    let per_million = |d: Duration| d.as_secs_f64() * 1000.0 * 1_000_000.0 / keys as f64;
    for (name, snapshot) in [
        ("content", content.snapshot()),
        ("frequency", frequency.snapshot()),
    ] {
        let path = dir.path().join(format!("{name}.keys"));
        let start = Instant::now();
        write_keyed(&path, snapshot)?;
        let write = start.elapsed();
        let bytes = std::fs::metadata(&path)?.len();
        let start = Instant::now();
        let mut read = 0u64;
        read_keyed(&path, |_| true, |_, _| read += 1)?;
        let read_time = start.elapsed();
        anyhow::ensure!(read == keys, "{name}: read {read} keys of {keys}");
        out.insert(
            name.into(),
            serde_json::json!({
                "bytes": bytes,
                "bytes_per_key": bytes as f64 / keys as f64,
                "write_ms_per_million_keys": per_million(write),
                "read_ms_per_million_keys": per_million(read_time),
            }),
        );
    }
    // The worker's side of a cut since parts are written off the worker: flattening its
    // state into one buffer, then admitting a batch while the writer thread encodes it,
    // beside the same batch with no write pending and the synchronous write the worker used
    // to do.
    let batch = 20_000u64;
    // A running job flattens every cut into memory the allocator has had before; the first
    // flatten here pays the kernel's zeroing of fresh pages too.
    let mut flat = tidings_operators::dedup::Flat::default();
    let start = Instant::now();
    content.flatten(&mut flat);
    let first_flatten = start.elapsed();
    // As the writer gives a buffer back: emptied, its memory kept.
    flat.clear();
    let start = Instant::now();
    content.flatten(&mut flat);
    let flatten = start.elapsed();
    anyhow::ensure!(
        flat.len() as u64 == keys,
        "flattened {} keys of {keys}",
        flat.len()
    );
    let path = dir.path().join("content-flat.keys");
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        let r = write_keyed(&path, flat.iter());
        (r, started.elapsed())
    });
    let start = Instant::now();
    for k in keys..keys + batch {
        let _ = content.admit(key(k), t0 + (k % 300_000) as i64);
    }
    let during = start.elapsed();
    let (written, write_off_worker) = writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
    written?;
    let start = Instant::now();
    for k in keys + batch..keys + 2 * batch {
        let _ = content.admit(key(k), t0 + (k % 300_000) as i64);
    }
    let idle = start.elapsed();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let sync_write = out["content"]["write_ms_per_million_keys"]
        .as_f64()
        .unwrap_or(0.0)
        * keys as f64
        / 1_000_000.0;
    let worker = ms(flatten) + (ms(during) - ms(idle)).max(0.0);
    out.insert(
        "content_cut_on_the_worker".into(),
        serde_json::json!({
            "synchronous_write_ms": sync_write,
            "flatten_ms": ms(flatten),
            "first_flatten_fresh_memory_ms": ms(first_flatten),
            "admit_20k_while_writing_ms": ms(during),
            "admit_20k_no_write_pending_ms": ms(idle),
            "write_on_the_writer_thread_ms": ms(write_off_worker),
            "worker_cost_ms": worker,
            "synchronous_over_off_worker": sync_write / worker.max(0.001),
        }),
    );
    out.insert(
        "content_incremental_cut".into(),
        incremental(&mut content, keys, t0, dir.path())?,
    );
    out.insert(
        "content_burst_cut".into(),
        burst_cut(&mut content, keys / 2, t0, dir.path())?,
    );
    out.insert("park_cut".into(), park_cut(keys / 10, t0, dir.path())?);
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}

/// A cut after a burst of `n` new keys (more than 65,536: the worker encodes the part into
/// its file itself). The worker's share as it was (the noted keys' state flattened into one
/// buffer, which the writer thread then encodes) and as it is (flattened 4,096 keys at a time
/// and encoded into the file's blocks), and the memory each holds at once.
fn burst_cut(
    content: &mut ContentDedup,
    n: u64,
    t0: i64,
    dir: &std::path::Path,
) -> anyhow::Result<serde_json::Value> {
    use tidings_operators::dedup::{Flat, encode};
    anyhow::ensure!(n > 65_536, "a burst of {n} keys is not a large cut");
    let base = 100 * n;
    let mut noted: Vec<u128> = (base..base + n)
        .map(key)
        .filter(|&k| content.admit(k, t0 + 600_000).is_ok())
        .collect();
    noted.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    // As it was: one buffer of every noted key, written on the writer thread.
    let mut whole = Flat::default();
    let start = Instant::now();
    content.flatten_keys(&noted, &mut whole);
    let flatten = start.elapsed();
    let start = Instant::now();
    write_keyed(&dir.join("burst-flat.keys"), whole.iter())?;
    let flat_write = start.elapsed();
    // As it is: through a buffer of 4,096 keys into the file (the worker's own `encode`),
    // made durable on the writer.
    let mut chunk = Flat::default();
    let start = Instant::now();
    let mut part = encode(&*content, &noted, &mut chunk, &dir.join("burst.keys"))?;
    let encoded = start.elapsed();
    let held = chunk.bytes() + part.bytes();
    let start = Instant::now();
    part.finish(&dir.join("burst.keys"))?;
    let finish = start.elapsed();
    let mut keys = 0u64;
    read_keyed(&dir.join("burst.keys"), |_| true, |_, _| keys += 1)?;
    anyhow::ensure!(
        keys == noted.len() as u64,
        "{keys} keys written of {}",
        noted.len()
    );
    anyhow::ensure!(
        std::fs::read(dir.join("burst.keys"))? == std::fs::read(dir.join("burst-flat.keys"))?,
        "the two ways wrote different parts"
    );
    Ok(serde_json::json!({
        "burst_keys": noted.len(),
        "worker_flatten_whole_ms": ms(flatten),
        "writer_encode_whole_ms": ms(flat_write),
        "whole_buffer_bytes": whole.bytes(),
        "worker_encode_chunked_ms": ms(encoded),
        "writer_finish_ms": ms(finish),
        "chunk_buffer_bytes": held,
    }))
}

/// The park's part of a cut with `n` deliveries parked (a night's, one for every ten keys):
/// what a cut wrote before its parts were a chain (the whole store) and what it writes now
/// between the whole writes (the parks since the cut before: 1,000 of them, as a delta).
fn park_cut(n: u64, t0: i64, dir: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    use tidings_operators::park::{ParkStore, Parked};
    let parked = |i: u64| Parked {
        release_at: t0 + 9 * 3_600_000,
        delivery: delivery_of(
            i,
            t0 + i as i64,
            u128::from(i) << 32,
            r#"{"content":"Tonight's offer: 20% off."}"#,
        ),
    };
    let mut store = ParkStore::open(&dir.join("parked.jsonl"))?;
    let mut i = 0;
    while i < n {
        let end = (i + 10_000).min(n);
        store.park((i..end).map(parked).collect())?;
        i = end;
    }
    store.limit_changes(usize::MAX);
    let _ = store.take_changes();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let start = Instant::now();
    let whole_bytes = store.write_to(&dir.join("whole.jsonl"))?;
    let whole = start.elapsed();
    store.park((n..n + 1_000).map(parked).collect())?;
    let start = Instant::now();
    let changes = store.take_changes().unwrap_or_default();
    tidings_operators::checkpoint::write_durably(&dir.join("delta.jsonl"), &changes)?;
    let delta = start.elapsed();
    Ok(serde_json::json!({
        "parked": n,
        "whole_store_bytes": whole_bytes,
        "whole_store_write_ms": ms(whole),
        "delta_parks": 1_000,
        "delta_bytes": changes.len(),
        "delta_write_ms": ms(delta),
    }))
}

/// Incremental cuts of the content rule holding `keys` keys: 20 cuts, each after 10,000
/// admissions (one second at 10,000 requests/s). The worker's share of each is sorting the
/// keys it noted and flattening their state; the writer thread links the chain into the cut's
/// directory and writes the delta; then one compaction merges the full part and the 20
/// deltas, as the writer thread does every 64 cuts.
fn incremental(
    content: &mut ContentDedup,
    keys: u64,
    t0: i64,
    dir: &std::path::Path,
) -> anyhow::Result<serde_json::Value> {
    use tidings_operators::checkpoint::merge_keyed;
    use tidings_operators::dedup::Flat;
    let changed = 10_000u64;
    let cuts = 20u64;
    // The run's first cut: the whole state, sorted on the writer thread.
    let mut flat = Flat::default();
    content.flatten(&mut flat);
    let full_keys = flat.len();
    let first = dir.join("cut-0");
    std::fs::create_dir_all(&first)?;
    let start = Instant::now();
    tidings_operators::checkpoint::write_keyed(&first.join("content-0.keys"), flat.sorted())?;
    let full_write = start.elapsed();
    let mut chain = vec!["content-0.keys".to_string()];
    let mut prev = first;
    let (mut worker, mut writer) = (Vec::new(), Vec::new());
    let mut noted: Vec<u128> = Vec::new();
    let base = 10 * keys;
    for cut in 1..=cuts {
        for k in base + cut * changed..base + (cut + 1) * changed {
            if content.admit(key(k), t0 + 300_000).is_ok() {
                noted.push(key(k));
            }
        }
        flat.clear();
        let start = Instant::now();
        noted.sort_unstable();
        noted.dedup();
        content.flatten_keys(&noted, &mut flat);
        noted.clear();
        worker.push(start.elapsed());
        let here = dir.join(format!("cut-{cut}"));
        std::fs::create_dir_all(&here)?;
        let start = Instant::now();
        for f in &chain {
            std::fs::hard_link(prev.join(f), here.join(f))?;
        }
        let name = format!("content-0.delta-{cut:020}.keys");
        write_keyed(&here.join(&name), flat.iter())?;
        writer.push(start.elapsed());
        chain.push(name);
        prev = here;
    }
    let sources: Vec<_> = chain.iter().map(|f| prev.join(f)).collect();
    let start = Instant::now();
    let merged = merge_keyed(
        &dir.join("compacted.keys"),
        &sources,
        std::iter::empty::<(u128, Vec<i64>)>(),
    )?;
    let compaction = start.elapsed();
    anyhow::ensure!(
        merged == content.keys(),
        "compacted {merged} keys, the rule holds {}",
        content.keys()
    );
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        ms(&v[v.len() / 2])
    };
    let worst = |v: &[Duration]| v.iter().map(ms).fold(0.0, f64::max);
    Ok(serde_json::json!({
        "keys": full_keys,
        "changed_per_cut": changed,
        "cuts": cuts,
        "worker_ms_median": median(&mut worker.clone()),
        "worker_ms_max": worst(&worker),
        "writer_delta_ms_median": median(&mut writer.clone()),
        "writer_delta_ms_max": worst(&writer),
        "first_cut_full_write_ms": ms(&full_write),
        "compaction_ms": ms(&compaction),
        "compacted_keys": merged,
    }))
}

/// Lists `days` days of `per_day` compacted files with their lists on a store answering each
/// read after `latency_ms`: lists read one at a time, [`tidings_sql::compacted::FETCHES`] at a
/// time, and kept from the listing before.
#[cfg(not(feature = "sql"))]
pub fn replaces_listing(_days: usize, _per_day: usize, _latency_ms: u64) -> anyhow::Result<()> {
    anyhow::bail!("replaces-listing reads through tidings-sql: build with `--features sql`")
}

/// Lists `days` days of `per_day` compacted files with their lists on a store answering each
/// read after `latency_ms`: lists read one at a time, [`tidings_sql::compacted::FETCHES`] at a
/// time, and kept from the listing before.
#[cfg(feature = "sql")]
pub fn replaces_listing(days: usize, per_day: usize, latency_ms: u64) -> anyhow::Result<()> {
    use futures::TryStreamExt as _;
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::throttle::{ThrottleConfig, ThrottledStore};
    use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
    use tidings_model::compaction::{PREFIX, REPLACES_SUFFIX, Replaces};
    use tidings_sql::compacted::{Compacted, FETCHES};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let memory = InMemory::new();
        for d in 0..days {
            let day = Path::from(format!(
                "events/date=2025-{:02}-{:02}",
                1 + d / 28,
                1 + d % 28
            ));
            for i in 0..per_day {
                let small = format!("part-{i}.parquet");
                let list = serde_json::to_vec(&Replaces {
                    files: vec![small.clone()],
                })?;
                for (name, body) in [
                    (small, b"x".to_vec()),
                    (format!("{PREFIX}{i}.parquet"), b"x".to_vec()),
                    (format!("{PREFIX}{i}{REPLACES_SUFFIX}"), list),
                ] {
                    memory
                        .put(&day.clone().join(name), PutPayload::from(body))
                        .await?;
                }
            }
        }
        let config = ThrottleConfig {
            wait_get_per_call: Duration::from_millis(latency_ms),
            ..ThrottleConfig::default()
        };
        let store = Arc::new(ThrottledStore::new(memory, config));
        let prefix = Path::from("events");
        let listed = |c: &Compacted<ThrottledStore<InMemory>>| {
            let started = Instant::now();
            let names = c.list(Some(&prefix));
            async move {
                let n = names.try_collect::<Vec<_>>().await?.len();
                anyhow::ensure!(n == days * per_day * 2, "listed {n}");
                Ok::<_, anyhow::Error>(started.elapsed())
            }
        };
        let one = listed(&Compacted::from_arc(store.clone()).with_fetches(1)).await?;
        let many = Compacted::from_arc(store.clone());
        let first = listed(&many).await?;
        let again = listed(&many).await?;
        let s = |d: Duration| d.as_secs_f64();
        println!(
            "{}",
            serde_json::json!({
                "lists": days * per_day,
                "latency_ms": latency_ms,
                "one_at_a_time_s": s(one),
                "fetches": FETCHES,
                "at_once_s": s(first),
                "kept_s": s(again),
                "one_over_at_once": s(one) / s(first),
                "one_over_kept": s(one) / s(again),
            })
        );
        Ok(())
    })
}

/// `rows` event rows of one day in `files` files; the query before and after compaction.
#[cfg(not(feature = "sql"))]
pub fn compaction_query(_rows: u64, _files: u64) -> anyhow::Result<()> {
    anyhow::bail!("compaction-query runs DataFusion: build with `--features sql`")
}

/// `rows` event rows of one day in `files` files; the query before and after compaction.
#[cfg(feature = "sql")]
pub fn compaction_query(rows: u64, files: u64) -> anyhow::Result<()> {
    use std::time::SystemTime;
    use tidings_model::{EventRow, MessageMeta, State};
    use tidings_sinks::tracking::compact::{CompactSettings, compact_partition};
    use tidings_sinks::tracking::{ParquetTracking, Tracking};
    let dir = tempfile::tempdir()?;
    let tz: chrono_tz::Tz = chrono_tz::Asia::Shanghai;
    let mut w = Tracking::Parquet(ParquetTracking::new(
        dir.path(),
        tz,
        Arc::new(Templates::default()),
        "bench",
        0,
    ));
    let at = 1_763_784_000_000i64;
    let per_file = rows.div_ceil(files.max(1));
    let states = [
        State::Receive,
        State::SendSuccess,
        State::ContentDeduplication,
        State::SendFail,
    ];
    let started = Instant::now();
    let mut meta = None;
    for r in 0..rows {
        if r % 4 == 0 {
            meta = Some(Arc::new(MessageMeta {
                live: None,
                accounts: None,
                message_id: format!("m{:012}", r / 4).into(),
                template_id: 1 + (r % 7) as i64,
                business_id: 2,
                biz_id: None,
                content: "{}".into(),
                event_time: at,
                seq: 0,
            }));
        }
        w.event(EventRow {
            time: at + (r % 86_400_000) as i64 / 4,
            event_time: at,
            meta: meta.clone().expect("set at r = 0"),
            receiver: format!("1380{:07}", r % 10_000_000).into(),
            state: states[(r % 4) as usize],
            reason: None,
        });
        if (r + 1) % per_file == 0 {
            w.flush()?;
        }
    }
    w.flush()?;
    let generated = started.elapsed();
    let day = dir.path().join("events/date=2025-11-22");
    let count = || std::fs::read_dir(&day).map(|d| d.count()).unwrap_or(0);
    let files_before = count();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let query = |label: &str| -> anyhow::Result<(Duration, String)> {
        // Best of three: the first run also warms the page cache.
        let mut best = Duration::MAX;
        let mut answer = String::new();
        for _ in 0..3 {
            let start = Instant::now();
            answer = rt.block_on(async {
                let t = tidings_sql::Tracking::open(dir.path()).await?;
                let b = t
                    .query("SELECT state, count(*) AS n FROM events GROUP BY state ORDER BY state")
                    .await?;
                tidings_sql::format(&b, tidings_sql::Format::Csv)
            })?;
            best = best.min(start.elapsed());
        }
        eprintln!("{label}: {best:?}\n{answer}");
        Ok((best, answer))
    };
    let (before, answer_before) = query("before")?;
    let settings = CompactSettings {
        settle: Duration::ZERO,
        grace: Duration::ZERO,
        target_bytes: 64 * 1024 * 1024,
        ..CompactSettings::default()
    };
    let start = Instant::now();
    let pass = compact_partition(&day, &settings, SystemTime::now())?;
    let compact_time = start.elapsed();
    // The grace period (zero) is over: the replaced files go.
    compact_partition(&day, &settings, SystemTime::now() + Duration::from_secs(1))?;
    let files_after = count();
    let (after, answer_after) = query("after")?;
    anyhow::ensure!(answer_before == answer_after, "the answers differ");
    println!(
        "{}",
        serde_json::json!({
            "rows": rows,
            "files_before": files_before,
            "files_after": files_after,
            "generate_s": generated.as_secs_f64(),
            "compact_s": compact_time.as_secs_f64(),
            "merged": pass.merged,
            "query_before_s": before.as_secs_f64(),
            "query_after_s": after.as_secs_f64(),
            "before_over_after": before.as_secs_f64() / after.as_secs_f64(),
        })
    );
    Ok(())
}

/// Encodes `messages` messages' RECEIVE and SEND_SUCCESS rows into one worker's Parquet
/// tracking files as the job does (a file every `flush_rows` rows, written and fsynced), three
/// times, and prints the best round's time per row for putting rows into columns and encoding
/// them, for finishing and storing the files, and the bytes per row. The rows are like the
/// 1M-request `e2e` run's: distinct message ids and receivers, ~250 rows per millisecond.
pub fn tracking_encode(messages: u64, flush_rows: usize) -> anyhow::Result<()> {
    use tidings_model::{EventRow, State};
    use tidings_sinks::tracking::{ParquetTracking, Tracking};
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo/templates.toml");
    let templates = Arc::new(Templates::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?);
    let t0 = 1_763_773_200_000i64;
    let rows: Vec<EventRow> = (0..messages)
        .flat_map(|i| {
            let d = delivery_of(
                i,
                t0 + (i / 250) as i64,
                u128::from(i),
                r#"{"content":"Your code is 4711."}"#,
            );
            let at = d.event_time + 5;
            [
                EventRow::of(&d, State::Receive, None, at),
                EventRow::of(&d, State::SendSuccess, None, at + 3),
            ]
        })
        .collect();
    let mut best: Option<(Duration, Duration, u64)> = None;
    for _ in 0..3 {
        let dir = tempfile::tempdir()?;
        let mut tracking = Tracking::Parquet(ParquetTracking::new(
            dir.path(),
            chrono_tz::Asia::Shanghai,
            templates.clone(),
            "bench",
            0,
        ));
        let (mut push, mut flush) = (Duration::ZERO, Duration::ZERO);
        for part in rows.chunks(flush_rows) {
            let start = Instant::now();
            for r in part {
                tracking.event(r.clone());
            }
            push += start.elapsed();
            let start = Instant::now();
            tracking.flush()?;
            flush += start.elapsed();
        }
        let bytes = dir_bytes(dir.path())?;
        if best.is_none_or(|(p, f, _)| push + flush < p + f) {
            best = Some((push, flush, bytes));
        }
    }
    let (push, flush, bytes) = best.unwrap_or_default();
    let n = rows.len() as f64;
    let ns = |d: Duration| d.as_secs_f64() * 1e9 / n;
    println!(
        "{}",
        serde_json::json!({
            "rows": rows.len(),
            "flush_rows": flush_rows,
            "columns_and_encoding_ns_per_row": ns(push),
            "finish_and_store_ns_per_row": ns(flush),
            "total_ns_per_row": ns(push + flush),
            "bytes_per_row": bytes as f64 / n,
        })
    );
    Ok(())
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
