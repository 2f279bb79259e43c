//! What every network provider shares: the [`Provider`] trait each one implements, settings
//! parsing (with `${ENV}` secrets), the content model's fields, its endpoint, and the
//! per-receiver answer of a call. Providers import this, never the registry
//! (`crate::provider`), so the chain runs one way: util ← providers ← registry ← account.

use std::future::Future;
use std::time::Duration;
use tidings_model::Receiver;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tidings_model::Channel;

use crate::SendBatch;
use crate::util::retry::SendError;
/// The wall clock (ms since the Unix epoch).
pub use tidings_model::time::wall_ms as now_ms;

/// A network provider: everything the registry (`crate::provider`) needs of one. A provider
/// module implements it for its sender; the registry's one list of implementations generates
/// the job file's `provider` names, the settings check, the build and the dispatch.
pub trait Provider: Sized + Send + Sync + std::fmt::Debug + 'static {
    /// Its `settings` table (unknown keys refused; `"${NAME}"` read from the environment).
    type Settings: DeserializeOwned;
    /// Its name in the job file (`provider = "..."`) and in labels.
    const KIND: &'static str;
    /// The channels it sends on (`None`: any).
    const CHANNELS: Option<&'static [Channel]>;
    /// Its own quota in messages per minute: the account's rate limit when it sets none.
    const PER_MINUTE: Option<u32> = None;
    /// The most receivers the provider's API takes in one request, when it takes several
    /// (`None`: one request per receiver, or none named). A message has at most
    /// `tidings_model::receiver::MAX_RECEIVERS`, and the registry's tests check that every
    /// limit is at least that, so one call per message never needs splitting.
    const RECEIVERS_PER_CALL: Option<usize> = None;
    /// The most receivers one call of [`Provider::send_many`] takes across several messages,
    /// when the provider's API takes messages of different content in one call (Aliyun's
    /// `SendBatchSms`: 100 numbers, each with its own template parameters). `None`: one
    /// message per call.
    const MESSAGES_PER_CALL: Option<usize> = None;
    /// Whether a call takes one content for all its numbers (Tencent's one parameter set,
    /// Yunpian's one text): then only messages of the same content share a call, and a
    /// shared call is the first message's call to all their receivers.
    const ONE_CONTENT_PER_CALL: bool = false;

    /// Checks parsed settings beyond their types (a key that must parse, an address); the
    /// error names `key` (e.g. `accounts.sms-main`).
    fn validate(_key: &str, _settings: &Self::Settings) -> Result<(), String> {
        Ok(())
    }

    /// Where it is reached: its endpoint's base URL (SMTP: `smtp://host:port`).
    fn base_url(settings: &Self::Settings) -> String;

    /// Builds it over the shared HTTP client; a call may take `timeout`.
    fn build(
        settings: Self::Settings,
        client: reqwest::Client,
        timeout: Duration,
    ) -> Result<Self, String>;

    /// Told the job region's country calling code (86 for CN). A phone provider dials a
    /// receiver written in its national form, as the job region's numbers are normalised,
    /// with it ([`dialled`]); the others ignore it.
    fn dial_with(&mut self, _calling_code: u16) {}

    /// One call: one message to `receivers`.
    fn send(
        &self,
        batch: &SendBatch,
        receivers: &[Receiver],
    ) -> impl Future<Output = Result<Delivered, SendError>> + Send;

    /// Whether messages `a` and `b` may go in one [`Provider::send_many`] call: any two when
    /// the API takes each number's parameters, the same content when
    /// [`Provider::ONE_CONTENT_PER_CALL`].
    fn shares_call(a: &SendBatch, b: &SendBatch) -> bool {
        !Self::ONE_CONTENT_PER_CALL || a.meta.content == b.meta.content
    }

    /// Whether `error`, answered to a call shared by several messages, may be one message's
    /// fault (a number or parameter of it, a number's own rate limit): the call is then made
    /// again in halves. By default no: the error is the account's or the content's, the
    /// same for each message alone.
    fn refuses_one(_error: &SendError) -> bool {
        false
    }

    /// Whether `error`, answered to a call for one message's numbers, may be one number's
    /// fault (an illegal number, a number's own rate limit): the call is then made again in
    /// halves of its numbers ([`crate::provider::Remote::send`]). By default no. Of
    /// [`Provider::refuses_one`]'s errors, not a bad parameter: a message's parameters are
    /// every half's, and halving would make ~2n calls all refused alike.
    fn refuses_one_number(_error: &SendError) -> bool {
        false
    }

    /// A receiver as the provider writes it in a call (two receivers written alike are one
    /// number: never twice in one call).
    fn number(receiver: &Receiver) -> String {
        receiver.to_string()
    }

    /// One call for several messages, each to its receivers (at most
    /// [`Provider::MESSAGES_PER_CALL`] receivers in all); the answer covers the whole call,
    /// receivers in order (the first message's, then the next one's). Only called when
    /// `MESSAGES_PER_CALL` is set. By default, with [`Provider::ONE_CONTENT_PER_CALL`], the
    /// first message's [`Provider::send`] to every receiver.
    fn send_many(
        &self,
        calls: &[(&SendBatch, &[Receiver])],
    ) -> impl Future<Output = Result<Delivered, SendError>> + Send {
        async move {
            match calls.first() {
                _ if !Self::ONE_CONTENT_PER_CALL => Err(SendError::Permanent(
                    "this provider takes one message per call".into(),
                )),
                None => Ok(Delivered::All),
                Some((first, _)) => {
                    let all: Vec<Receiver> =
                        calls.iter().flat_map(|(_, r)| r.iter().cloned()).collect();
                    self.send(first, &all).await
                }
            }
        }
    }

    /// Takes back the message the provider knows as `reference` (its `task_id`, `msgid`).
    fn recall(&self, _reference: &str) -> impl Future<Output = Result<(), SendError>> + Send {
        async {
            Err(SendError::Permanent(
                "this provider cannot recall a message".into(),
            ))
        }
    }

    /// The health check (nothing is sent): by default a TCP connection to `base_url`.
    fn check(
        &self,
        base_url: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<String, String>> + Send {
        async move {
            crate::util::http::reach(base_url, timeout)
                .await
                .map(|a| format!("reached {a}"))
        }
    }
}

/// A token-based provider's health check: an access token fetched with the credentials.
pub fn token_checked(base_url: &str, fetched: Result<(), SendError>) -> Result<String, String> {
    fetched
        .map(|()| format!("{base_url}: access token fetched"))
        .map_err(|e| e.reason().to_string())
}

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
pub async fn one_by_one<F, Fut>(receivers: &[Receiver], mut send: F) -> Result<Delivered, SendError>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), SendError>>,
{
    let mut results = Vec::with_capacity(receivers.len());
    for r in receivers {
        match send(r.to_string()).await {
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

/// Robots and webhooks name no receiver: `@all` (or no receiver) mentions everyone, other
/// receivers are mentioned by mobile or user id.
pub fn mentions(receivers: &[Receiver]) -> (bool, Vec<String>) {
    let all = receivers.is_empty() || receivers.iter().any(|r| &**r == "@all");
    (
        all,
        receivers
            .iter()
            .filter(|r| &***r != "@all")
            .map(|r| r.to_string())
            .collect(),
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

/// The URL an account posts its calls to: `path` under its [`endpoint`], parsed once, when
/// the account is built (each call clones it: a URL string parsed again for every call was
/// ~8% of the send threads' time in `tidings-bench providers`). An endpoint that is not an
/// `http` or `https` URL, or that has a query or a fragment (the call's path would land in
/// it), is refused by the job's check (the provider's `validate` asks this too; its error
/// goes after the account's key and quotes the endpoint as written), instead of failing
/// every send.
pub fn endpoint_url(
    configured: &Option<String>,
    default: &str,
    path: &str,
) -> Result<reqwest::Url, String> {
    let written = configured.as_deref().unwrap_or(default);
    let base = http_url("settings.endpoint", written, default)?;
    if base.query().is_some() || base.fragment().is_some() {
        return Err(format!(
            "settings.endpoint: `{written}` has a query or a fragment; write the base URL alone, such as `{default}`"
        ));
    }
    let text = format!("{}/{path}", endpoint(configured, default));
    http_url("settings.endpoint", &text, default)
}

/// A provider's `validate` of a URL it builds from its settings (`built`, its error naming the
/// setting): the error after the account's `key`, as the job's check reports it.
pub fn url_checked(key: &str, built: Result<reqwest::Url, String>) -> Result<(), String> {
    built.map(|_| ()).map_err(|e| format!("{key}.{e}"))
}

/// `text`, the setting `field`, as an `http` or `https` URL, or an error naming the field and
/// showing `example`.
pub fn http_url(field: &str, text: &str, example: &str) -> Result<reqwest::Url, String> {
    match reqwest::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(url),
        Ok(_) => Err(format!(
            "{field}: `{text}` is not an http or https URL; write one such as `{example}`"
        )),
        Err(e) => Err(format!(
            "{field}: `{text}` is not a URL ({e}); write one such as `{example}`"
        )),
    }
}

/// A one-message batch for the providers' tests: message `m1` of template 7, on `channel`,
/// with the rendered content model `content`.
#[cfg(test)]
pub(crate) fn test_batch(channel: Channel, content: &str) -> SendBatch {
    SendBatch {
        meta: std::sync::Arc::new(tidings_model::MessageMeta {
            live: None,
            accounts: None,
            message_id: "m1".into(),
            template_id: 7,
            business_id: 1,
            biz_id: None,
            content: content.into(),
            event_time: 0,
            seq: 0,
        }),
        channel,
        msg_type: tidings_model::MsgType::Notice,
        event_time: 0,
        receivers: vec![].into(),
    }
}

/// A string of a provider's answer read into a struct, borrowed where it has no escapes.
/// (serde borrows a `Cow<str>` only where it is a field's whole type: within an `Option` it
/// would always copy.)
#[derive(serde::Deserialize)]
#[serde(transparent)]
pub(crate) struct Text<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);

/// The text of a string field that is there.
pub(crate) fn text_of<'s>(field: &'s Option<Text>) -> Option<&'s str> {
    field.as_ref().map(|Text(t)| &**t)
}

/// For the providers' property tests: JSON objects with each of `names` there (a value from
/// `values`) or not, beside the `fixed` fields.
#[cfg(test)]
pub(crate) fn objects_of<S>(
    names: &'static [&'static str],
    values: S,
    fixed: Vec<(&'static str, Value)>,
) -> impl proptest::strategy::Strategy<Value = Value>
where
    S: proptest::strategy::Strategy<Value = Value>,
{
    use proptest::strategy::Strategy;
    proptest::collection::vec(proptest::option::of(values), names.len()).prop_map(move |chosen| {
        let mut object: Map<String, Value> = names
            .iter()
            .zip(chosen)
            .filter_map(|(k, v)| Some((k.to_string(), v?)))
            .collect();
        for (k, v) in &fixed {
            object.insert(k.to_string(), v.clone());
        }
        Value::Object(object)
    })
}

/// How an SMS API wants a number written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dial {
    /// E.164 with its `+` (`+8613800138000`, `+85291234567`).
    E164,
    /// Mainland numbers national (`13800138000`), others E.164 with its `+`.
    MainlandNational,
    /// Mainland numbers national, others their country code and number, no `+`
    /// (`85291234567`).
    MainlandNationalElseDigits,
}

/// `receiver` (a normalised phone receiver: national when of the job region, whose country
/// calling code is `calling_code`, else E.164 with its `+`) as `dial` writes it: borrowed
/// when already so. A job of region `HK` normalises `+852 9123 4567` to `91234567`, which
/// must not go out as a mainland number.
pub fn dialled(receiver: &str, calling_code: u16, dial: Dial) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    match (receiver.strip_prefix('+'), dial) {
        (Some(digits), Dial::MainlandNationalElseDigits) => Cow::Borrowed(digits),
        (Some(_), _) => Cow::Borrowed(receiver),
        (None, Dial::MainlandNational | Dial::MainlandNationalElseDigits) if calling_code == 86 => {
            Cow::Borrowed(receiver)
        }
        (None, Dial::MainlandNationalElseDigits) => Cow::Owned(format!("{calling_code}{receiver}")),
        (None, _) => Cow::Owned(format!("+{calling_code}{receiver}")),
    }
}
