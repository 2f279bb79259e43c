//! What every network provider shares: settings parsing (with `${ENV}` secrets), the content
//! model's fields, its endpoint, and the per-receiver answer of a call. Providers import this,
//! never the registry (`crate::provider`), so the chain runs one way: util ← providers ←
//! registry ← account.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::SendBatch;
use crate::util::retry::SendError;

/// What one provider call achieved.
#[derive(Debug)]
pub enum Delivered {
    /// Every receiver of the call was accepted.
    All,
    /// One result per receiver, in order (SMS providers answer per number).
    Each(Vec<Result<(), SendError>>),
    /// Accepted, with the provider's reference for a later recall; `each` when the
    /// provider answered per receiver.
    Tracked {
        /// The provider's id of the sent message (`task_id`, `msgid`).
        reference: String,
        /// Per receiver, in order, when not all were accepted.
        each: Option<Vec<Result<(), SendError>>>,
    },
}

/// One provider call per receiver (WeChat and Alipay take one user per message), in order:
/// a receiver's own refusal fails it alone; a transient answer leaves it and the receivers
/// after it unsettled (the account retries only those); refused credentials after some
/// receivers were accepted fail the rest but keep those accepted.
pub async fn one_by_one<F, Fut>(receivers: &[String], mut send: F) -> Result<Delivered, SendError>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), SendError>>,
{
    let mut results = Vec::with_capacity(receivers.len());
    for r in receivers {
        match send(r.clone()).await {
            Ok(()) => results.push(Ok(())),
            Err(e @ SendError::Permanent(_)) => results.push(Err(e)),
            Err(e) if matches!(e, SendError::Transient(_)) || !results.is_empty() => {
                results.resize(receivers.len(), Err(e));
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Delivered::Each(results))
}

/// Expands every `${NAME}` inside string leaves from the environment (whole values and parts
/// of longer strings, e.g. `"https://hook/${TOKEN}/x"`; `$${` is a literal `${`). An error
/// names the key under `settings` (`hook`, `headers.auth`) and the variable.
pub fn resolve_env(v: &mut Value) -> Result<(), String> {
    fn walk(v: &mut Value, at: &str) -> Result<(), String> {
        match v {
            Value::String(s) => {
                if s.contains('$') {
                    *s = crate::util::secrets::expand(s)
                        .map_err(|e| format!("{at}: {e}"))?
                        .0;
                }
                Ok(())
            }
            Value::Array(items) => items
                .iter_mut()
                .enumerate()
                .try_for_each(|(i, x)| walk(x, &format!("{at}[{i}]"))),
            Value::Object(map) => map.iter_mut().try_for_each(|(k, x)| {
                walk(
                    x,
                    &if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    },
                )
            }),
            _ => Ok(()),
        }
    }
    walk(v, "")
}

/// Parses an account's `settings` table into a provider's config (unknown keys refused).
/// Errors never show a secret of the settings.
pub fn settings<T: DeserializeOwned>(key: &str, raw: &Map<String, Value>) -> Result<T, String> {
    let secrets = crate::util::secrets::Secrets::of_settings(raw);
    let mut v = Value::Object(raw.clone());
    resolve_env(&mut v).map_err(|e| format!("{key}.settings.{e}"))?;
    serde_json::from_value(v).map_err(|e| secrets.scrub(&format!("{key}.settings: {e}")))
}

/// The rendered content model of a batch.
pub fn content(batch: &SendBatch) -> Map<String, Value> {
    match serde_json::from_str(&batch.meta.content) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// A string field of the content model (`""` when missing).
pub fn field(model: &Map<String, Value>, name: &str) -> String {
    match model.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Robots and webhooks name no receiver: `@all` (or no receiver) mentions everyone, other
/// receivers are mentioned by mobile or user id.
pub fn mentions(receivers: &[String]) -> (bool, Vec<String>) {
    let all = receivers.is_empty() || receivers.iter().any(|r| r == "@all");
    (
        all,
        receivers.iter().filter(|r| *r != "@all").cloned().collect(),
    )
}

/// The errcode of a `{"errcode": N, "errmsg": ...}` answer (DingTalk, WeCom, WeChat).
pub fn errcode(body: &str) -> Option<(i64, String)> {
    let v: Value = serde_json::from_str(body).ok()?;
    Some((v.get("errcode")?.as_i64()?, field(v.as_object()?, "errmsg")))
}

/// An account's base URL: its `endpoint`, or the provider's own, without a trailing slash.
pub fn endpoint(configured: &Option<String>, default: &str) -> String {
    configured
        .as_deref()
        .unwrap_or(default)
        .trim_end_matches('/')
        .to_string()
}
