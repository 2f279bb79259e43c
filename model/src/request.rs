//! The send request (docs/requests.md) and the two line forms of the file source.
//!
//! Decoding is total: any bytes give either a [`Request`] with its event time or a reason
//! string for a dead letter. It never panics (a property test feeds it arbitrary bytes).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::time::Millis;

mod fast;

/// austin's `MessageParam`: one message.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MessageParam {
    /// The producer's own id for this message.
    #[serde(default, deserialize_with = "text_or_number")]
    pub biz_id: Option<String>,
    /// Comma-separated receivers: shared, so that the one receiver most requests name becomes
    /// the message's without a copy ([`crate::receiver::receivers_of`]).
    #[serde(default, deserialize_with = "text_or_number")]
    pub receiver: Option<crate::Receiver>,
    /// Placeholder values.
    #[serde(default)]
    pub variables: Option<crate::variables::Variables>,
    /// Channel-specific extras (kept for providers). Boxed: rarely given, and a param is
    /// moved whole several times while a request is read (under 128 bytes, a move is a few
    /// vector copies, not a `memcpy` call).
    #[serde(default)]
    pub extra: Option<Box<Map<String, Value>>>,
}

/// A text field producers may write as a whole number, as austin reads it (its `MessageParam`
/// fields are Java strings, which Jackson fills from `13800138000` as `"13800138000"`): a
/// phone number written as a number sank the whole request, every param of its list.
fn text_or_number<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: for<'a> From<&'a str>,
{
    struct Text<T>(std::marker::PhantomData<T>);
    impl<'de, T: for<'a> From<&'a str>> serde::de::Visitor<'de> for Text<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string (or a whole number)")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Option<T>, E> {
            Ok(Some(T::from(v)))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Option<T>, E> {
            Ok(Some(T::from(v.to_string().as_str())))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Option<T>, E> {
            Ok(Some(T::from(v.to_string().as_str())))
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
            d.deserialize_any(self)
        }
    }
    d.deserialize_option(Text(std::marker::PhantomData))
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Send messages.
    Send,
    /// Recall sent messages.
    Recall,
}

/// A decoded send request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// send | recall.
    pub code: Code,
    /// The template.
    pub template_id: i64,
    /// One message per param, in order (`messageParam` gives one, held in place: no list
    /// allocated for it).
    pub params: smallvec::SmallVec<[MessageParam; 1]>,
    /// For recalls: the message ids to recall.
    pub recall_message_ids: Vec<String>,
}

/// A template id as producers write it: austin's clients send a number; a numeric string is
/// accepted too. Decoded by a visitor of its own: serde's untagged enum would buffer the value
/// and try each form in turn.
#[derive(Debug, Clone)]
enum IdValue {
    Int(i64),
    Text(String),
}

/// What a bad `messageTemplateId` is told it should be.
const TEMPLATE_ID_EXPECTED: &str =
    "messageTemplateId: a template id, a number such as 7 or a numeric string such as \"7\"";

impl<'de> Deserialize<'de> for IdValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Id;
        impl serde::de::Visitor<'_> for Id {
            type Value = IdValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(TEMPLATE_ID_EXPECTED)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IdValue, E> {
                Ok(IdValue::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IdValue, E> {
                i64::try_from(v)
                    .map(IdValue::Int)
                    .map_err(|_| E::custom(TEMPLATE_ID_EXPECTED))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IdValue, E> {
                Ok(IdValue::Text(v.to_string()))
            }
        }
        d.deserialize_any(Id)
    }
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    /// Borrowed from the record's bytes when read by hand and without escapes (serde's derive
    /// borrows a bare `Cow` only: through the `Option` it copies).
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(default)]
    message_template_id: Option<IdValue>,
    #[serde(default)]
    message_param: Option<Object<MessageParam>>,
    #[serde(default)]
    message_param_list: Option<Vec<Object<MessageParam>>>,
    #[serde(default)]
    recall_message_ids: Option<Vec<String>>,
    // kcat -J envelope fields.
    #[serde(default)]
    ts: Option<i64>,
    /// `Some(Null)` for `"payload": null` (a kcat tombstone), `None` when absent.
    #[serde(default, deserialize_with = "present")]
    payload: Option<Value>,
}

/// `T` read from a JSON object only. serde's derived structs also take an array of their
/// fields in order, so `["send", 1, {...}]` would be read as a request: no client writes one,
/// and one that did means a mistake, which gets a dead letter.
#[derive(Debug)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(ObjectVisitor(std::marker::PhantomData))
            .map(Object)
    }
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Decodes one line of the file source: a bare request (event time = `read_time`) or a kcat
/// `-J` envelope (event time = its `ts`; an absent `ts`, or kcat's `-1` for a record without a
/// timestamp, means `read_time`). Any other `ts` is returned as written, however far out: the
/// validator judges its range (`tidings_model::time::check_event_time`).
pub fn decode_line(bytes: &[u8], read_time: Millis) -> Result<(Millis, Request), String> {
    decode_line_by(bytes, read_time, parse)
}

/// [`decode_line`] with the JSON read by `parse` (the tests' oracle reads it as bytes).
#[inline]
fn decode_line_by(
    bytes: &[u8],
    read_time: Millis,
    parse: fn(&[u8]) -> Result<Line<'_>, String>,
) -> Result<(Millis, Request), String> {
    let line = parse(bytes)?;
    if line.code.is_none()
        && line.message_template_id.is_none()
        && let Some(payload) = line.payload
    {
        let event_time = envelope_time(line.ts, read_time);
        let Value::String(text) = payload else {
            return Err("envelope payload is not a string".into());
        };
        return request_from(parse(text.as_bytes())?).map(|r| (event_time, r));
    }
    request_from(line).map(|r| (read_time, r))
}

/// A UTF-8 byte order mark (an editor's, at the start of a file) is not part of the JSON.
pub fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// Decodes a request body (a Kafka record's value, or an envelope's payload): read by hand
/// into the request where it can be ([`fast::request`]), else as [`parse`] reads it.
pub fn decode_request(bytes: &[u8]) -> Result<Request, String> {
    let bytes = strip_bom(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => match fast::request(text) {
            Some(request) => request,
            None => request_from(by_serde(serde_json::from_str(text))?),
        },
        Err(_) => request_from(by_serde(serde_json::from_slice(bytes))?),
    }
}

/// A request's JSON object (or an envelope's), after a byte order mark.
///
/// Bytes that are UTF-8 throughout (all but broken records) are checked once and read as a
/// `str`: read from bytes, serde_json checks every string it meets on its own, a call each
/// (~1,000 instructions a request; one check of the whole saved ~520 net). The common shapes
/// of a request are read by hand ([`fast`]); the rest by serde_json, which on a `str` reads the same values and gives the
/// same errors at the same places (`str_and_bytes_read_alike`). Bytes that are not UTF-8 are
/// read as bytes, for serde_json's own error.
#[inline]
fn parse(bytes: &[u8]) -> Result<Line<'_>, String> {
    let bytes = strip_bom(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => match fast::read(text) {
            Some(line) => Ok(line),
            None => by_serde(serde_json::from_str(text)),
        },
        Err(_) => by_serde(serde_json::from_slice(bytes)),
    }
}

/// What serde read, or its error in our words.
fn by_serde(read: serde_json::Result<Object<Line<'_>>>) -> Result<Line<'_>, String> {
    read.map(|Object(line)| line)
        .map_err(|e| format!("unparsable JSON: {e}"))
}

/// The event time of a kcat `-J` envelope whose `ts` is `ts`: that, or `read_time` when it has
/// none (absent, or kcat's `-1` for a record without a timestamp).
pub fn envelope_time(ts: Option<i64>, read_time: Millis) -> Millis {
    match ts {
        None | Some(-1) => read_time,
        Some(ts) => ts,
    }
}

fn request_from(line: Line) -> Result<Request, String> {
    request_of(
        line.code,
        line.message_template_id,
        line.message_param.map(|Object(p)| p),
        line.message_param_list,
        line.recall_message_ids,
    )
}

/// A request of its fields as read, checked: its code known, its template id an integer, one
/// of `messageParam` and `messageParamList` (not empty) for a send.
#[inline(always)]
fn request_of(
    code: Option<Cow<'_, str>>,
    message_template_id: Option<IdValue>,
    message_param: Option<MessageParam>,
    message_param_list: Option<Vec<Object<MessageParam>>>,
    recall_message_ids: Option<Vec<String>>,
) -> Result<Request, String> {
    let code = match code.as_deref() {
        Some("send") => Code::Send,
        Some("recall") => Code::Recall,
        Some(other) => return Err(format!("unknown code `{other}`: expected send or recall")),
        None => return Err("missing `code`: expected send or recall".into()),
    };
    let template_id = match message_template_id {
        Some(IdValue::Int(i)) => i,
        Some(IdValue::Text(s)) => s
            .trim()
            .parse()
            .map_err(|_| format!("messageTemplateId `{s}` is not an integer"))?,
        None => return Err("missing `messageTemplateId`".into()),
    };
    let params = match (message_param, message_param_list) {
        (Some(_), Some(_)) => {
            return Err("both messageParam and messageParamList given: send one of them".into());
        }
        (Some(p), None) => smallvec::smallvec![p],
        (None, Some(list)) => list.into_iter().map(|p| p.0).collect(),
        (None, None) if code == Code::Recall => smallvec::SmallVec::new(),
        (None, None) => return Err("neither messageParam nor messageParamList given".into()),
    };
    if code == Code::Send && params.is_empty() {
        return Err("messageParamList is empty".into());
    }
    Ok(Request {
        code,
        template_id,
        params,
        recall_message_ids: recall_message_ids.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A param stays small enough to be moved in a few vector copies, not a `memcpy` call (it
    /// is moved whole several times while a request is read).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_param_is_at_most_128_bytes() {
        assert!(
            std::mem::size_of::<MessageParam>() <= 128,
            "{}",
            std::mem::size_of::<MessageParam>()
        );
    }

    #[test]
    fn template_ids_are_numbers_or_numeric_strings() {
        let id = |v: &str| {
            decode_request(
                format!(
                    r#"{{"code":"send","messageTemplateId":{v},"messageParam":{{"receiver":"a"}}}}"#
                )
                .as_bytes(),
            )
            .map(|r| r.template_id)
        };
        assert_eq!(id("7"), Ok(7));
        assert_eq!(id("-3"), Ok(-3));
        assert_eq!(id(r#"" 42 ""#), Ok(42));
        assert_eq!(id(r#""9\u0030""#), Ok(90));
        assert_eq!(id("null"), Err("missing `messageTemplateId`".into()));
        for bad in ["9223372036854775808", "7.5", "true", "{}", r#""seven""#] {
            let e = id(bad).unwrap_err();
            assert!(
                e.contains("a number such as 7 or a numeric string")
                    || e.contains("is not an integer"),
                "{bad}: {e}"
            );
        }
    }

    /// austin reads a receiver or bizId written as a whole number as its text (Jackson fills
    /// its Java strings so): one such param sank every param of its list.
    #[test]
    fn a_receiver_or_biz_id_written_as_a_number_is_its_text() {
        let r = decode_request(
            br#"{"code":"send","messageTemplateId":1,"messageParamList":[{"receiver":13800138000,"bizId":77},{"receiver":"a","bizId":null},{"receiver":null}]}"#,
        )
        .unwrap();
        assert_eq!(r.params.len(), 3);
        assert_eq!(r.params[0].receiver.as_deref(), Some("13800138000"));
        assert_eq!(r.params[0].biz_id.as_deref(), Some("77"));
        assert_eq!(
            (
                r.params[1].receiver.as_deref(),
                r.params[1].biz_id.as_deref()
            ),
            (Some("a"), None)
        );
        assert_eq!(r.params[2].receiver, None);
        for bad in ["13800138000.5", "true", "[1]"] {
            let e = decode_request(
                format!(
                    r#"{{"code":"send","messageTemplateId":1,"messageParam":{{"receiver":{bad}}}}}"#
                )
                .as_bytes(),
            )
            .unwrap_err();
            assert!(e.contains("a string (or a whole number)"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_byte_order_mark_and_a_bad_template_id_are_explained() {
        let line = "\u{feff}{\"code\":\"send\",\"messageTemplateId\":1,\"messageParam\":{\"receiver\":\"a\"}}";
        assert!(decode_line(line.as_bytes(), 5).is_ok());
        let bad = decode_request(br#"{"code":"send","messageTemplateId":[1],"messageParam":{}}"#)
            .unwrap_err();
        assert!(
            bad.contains("a number such as 7 or a numeric string"),
            "{bad}"
        );
        assert!(!bad.contains("untagged"), "{bad}");
    }

    #[test]
    fn bare_and_envelope() {
        let bare = br#"{"code":"send","messageTemplateId":1,"messageParam":{"bizId":"o-77","receiver":"13800138000","variables":{"code":"4711"}}}"#;
        let (t, r) = decode_line(bare, 42).unwrap();
        assert_eq!(t, 42);
        assert_eq!(r.params[0].biz_id.as_deref(), Some("o-77"));
        let env = serde_json::json!({"ts": 1763770200000i64, "key": "k1", "payload": String::from_utf8_lossy(bare)});
        let (t, r2) = decode_line(env.to_string().as_bytes(), 42).unwrap();
        assert_eq!(t, 1763770200000);
        assert_eq!(r, r2);
    }

    /// A price written `9.90` fills `{$price}` as `9.90`, whether the request is a Kafka
    /// record's value, a file line or an envelope's payload (austin keeps a number's text).
    #[test]
    fn a_fraction_variable_keeps_its_text_on_every_path() {
        let bare = br#"{"code":"send","messageTemplateId":1,"messageParam":{"receiver":"1","variables":{"price":9.90}}}"#;
        let env = serde_json::json!({"ts": 7, "payload": String::from_utf8_lossy(bare)});
        let requests = [
            decode_request(bare).unwrap(),
            decode_line(bare, 1).unwrap().1,
            decode_line(env.to_string().as_bytes(), 1).unwrap().1,
        ];
        for r in requests {
            let vars = r.params[0].variables.as_ref().unwrap();
            assert_eq!(crate::render::render_str("{$price}", vars).unwrap(), "9.90");
        }
    }

    #[test]
    fn envelope_ts_is_kept_as_written_except_kcats_no_timestamp() {
        let payload = r#"{"code":"send","messageTemplateId":1,"messageParam":{"receiver":"1"}}"#;
        for (ts, want) in [
            (serde_json::json!(-1), 42),
            (serde_json::json!(i64::MAX), i64::MAX),
            (serde_json::json!(i64::MIN), i64::MIN),
            (serde_json::json!(0), 0),
            (serde_json::json!(-5), -5),
        ] {
            let line = serde_json::json!({"ts": ts, "payload": payload}).to_string();
            assert_eq!(decode_line(line.as_bytes(), 42).unwrap().0, want, "{ts}");
        }
        let line = serde_json::json!({"payload": payload}).to_string();
        assert_eq!(decode_line(line.as_bytes(), 42).unwrap().0, 42);
    }

    #[test]
    fn record_level_rejections() {
        let cases: &[(&str, &str)] = &[
            ("not json", "unparsable"),
            (
                r#"{"code":"blast","messageTemplateId":1,"messageParam":{}}"#,
                "unknown code",
            ),
            (
                r#"{"messageTemplateId":1,"messageParam":{}}"#,
                "missing `code`",
            ),
            (
                r#"{"code":"send","messageParam":{}}"#,
                "missing `messageTemplateId`",
            ),
            (
                r#"{"code":"send","messageTemplateId":1,"messageParam":{},"messageParamList":[]}"#,
                "both",
            ),
            (r#"{"code":"send","messageTemplateId":1}"#, "neither"),
            (
                r#"{"code":"send","messageTemplateId":"x","messageParam":{}}"#,
                "not an integer",
            ),
            (r#"{"ts":1,"payload":null}"#, "not a string"),
            // serde's derived structs would take the fields in order from an array.
            (
                r#"["send", 1, {"receiver": "13800138000"}]"#,
                "invalid type: sequence, expected a JSON object",
            ),
            (
                r#"[1, "{\"code\":\"send\",\"messageTemplateId\":1,\"messageParam\":{}}"]"#,
                "expected a JSON object",
            ),
            (
                r#"{"code":"send","messageTemplateId":1,"messageParam":["13800138000"]}"#,
                "expected a JSON object",
            ),
            (
                r#"{"code":"send","messageTemplateId":1,"messageParamList":[{}, [null, "x"]]}"#,
                "expected a JSON object",
            ),
        ];
        for (line, want) in cases {
            let err = decode_line(line.as_bytes(), 0).unwrap_err();
            assert!(err.contains(want), "{line}: {err}");
        }
    }

    /// serde_json's reading of bytes, as `parse` read every record before.
    fn parse_bytes(bytes: &[u8]) -> Result<Line<'_>, String> {
        serde_json::from_slice::<Object<Line>>(strip_bom(bytes))
            .map(|Object(line)| line)
            .map_err(|e| format!("unparsable JSON: {e}"))
    }

    /// A JSON value that may be a request's, an envelope's or neither: members of every field
    /// a request or an envelope has, strings with escapes and characters of every width.
    fn jsonish() -> impl Strategy<Value = String> {
        let text = prop_oneof![
            Just("send".to_string()),
            Just("recall".to_string()),
            Just("13800138000,13900139000".to_string()),
            Just(r#"a\"b\\c\u00e9\ud83d\ude00\n"#.to_string()),
            Just(r"\ud800".to_string()),
            Just("héllo 世界 😀".to_string()),
            "[a-z0-9 ,]{0,12}",
        ]
        .prop_map(|t| format!("\"{t}\""));
        let scalar = prop_oneof![
            text.clone(),
            Just("7".to_string()),
            Just("-1".to_string()),
            Just("1.5e3".to_string()),
            Just("18446744073709551616".to_string()),
            Just("-9223372036854775809".to_string()),
            Just("-0".to_string()),
            Just("01".to_string()),
            Just("1.0".to_string()),
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            // A key given twice once unescaped.
            Just(r#"{"a":1,"\u0061":2}"#.to_string()),
        ];
        let leaf = scalar.clone().boxed();
        let value = leaf.prop_recursive(3, 24, 4, move |inner| {
            let key = prop_oneof![
                Just("code"),
                Just("messageTemplateId"),
                Just("messageParam"),
                Just("messageParamList"),
                Just("receiver"),
                Just("variables"),
                Just("extra"),
                Just("bizId"),
                Just("recallMessageIds"),
                Just("ts"),
                Just("payload"),
                Just(r"c\u00f6de"),
                Just("ü"),
            ];
            prop_oneof![
                proptest::collection::vec((key, inner.clone()), 0..5).prop_map(|members| {
                    let m: Vec<String> = members
                        .into_iter()
                        .map(|(k, v)| format!("\"{k}\": {v}"))
                        .collect();
                    format!("{{{}}}", m.join(","))
                }),
                proptest::collection::vec(inner, 0..3)
                    .prop_map(|items| format!("[{}]", items.join(", "))),
            ]
        });
        let code = prop_oneof![
            6 => Just(r#""send""#.to_string()),
            1 => Just(r#""recall""#.to_string()),
            1 => text.clone(),
        ];
        let id =
            prop_oneof![4 => Just("7".to_string()), 1 => Just(r#""8""#.to_string()), 1 => scalar];
        let plain = prop_oneof![
            3 => "[a-z0-9 ,]{0,12}".prop_map(|t| format!("\"{t}\"")),
            1 => text,
        ];
        let variables =
            proptest::collection::vec(("[a-z]{1,3}", plain.clone(), value.clone()), 0..4).prop_map(
                |vars| {
                    let m: Vec<String> = vars
                        .into_iter()
                        .enumerate()
                        .map(|(i, (k, s, v))| format!("\"{k}\":{}", if i % 3 == 2 { v } else { s }))
                        .collect();
                    format!("{{{}}}", m.join(","))
                },
            );
        let param = prop_oneof![
            4 => (plain, variables).prop_map(|(r, v)| format!(r#"{{"receiver":{r},"variables":{v}}}"#)),
            1 => value.clone(),
        ];
        let request = (param, code, id).prop_map(|(param, code, id)| {
            format!(r#"{{"code":{code},"messageTemplateId":{id},"messageParam":{param}}}"#)
        });
        prop_oneof![
            value,
            request.clone(),
            request.prop_map(|r| {
                let payload = serde_json::to_string(&r).unwrap_or_default();
                format!(r#"{{"ts": 1763740800000, "payload": {payload}}}"#)
            })
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        /// Read as a `str` once checked, every line decodes as serde_json read it from bytes:
        /// the same request, or the same error at the same place; bytes that are not UTF-8
        /// included (one byte inserted, changed or removed anywhere).
        #[test]
        fn str_and_bytes_read_alike(
            line in prop_oneof![jsonish(), common_request()],
            bom in any::<bool>(),
            edit in proptest::option::of((any::<proptest::sample::Index>(), 0u8..3, any::<u8>())),
        ) {
            let mut bytes = line.into_bytes();
            if bom {
                bytes.splice(0..0, *b"\xEF\xBB\xBF");
            }
            if let Some((at, kind, byte)) = edit {
                let i = at.index(bytes.len() + 1);
                match kind {
                    0 => bytes.insert(i, byte),
                    1 if i < bytes.len() => bytes[i] = byte,
                    _ if i < bytes.len() => drop(bytes.remove(i)),
                    _ => {}
                }
            }
            prop_assert_eq!(
                decode_line(&bytes, 5),
                decode_line_by(&bytes, 5, parse_bytes),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
            prop_assert_eq!(
                decode_request(&bytes),
                parse_bytes(&bytes).and_then(request_from)
            );
        }
    }

    /// A request as producers write it: the fields of a request and of its `MessageParam`s in
    /// any order, JSON's whitespace anywhere, strings with any escape and characters of any
    /// width, variables of strings, whole numbers, `true`, `false` and `null`; any field
    /// `null`.
    fn common_request() -> impl Strategy<Value = String> {
        use crate::json::strategies::json_string;
        let ws =
            || prop_oneof![4 => Just(""), 1 => Just(" "), 1 => Just("\n\t "), 1 => Just("\r\n")];
        let string = || json_string(false).prop_map(|s| String::from_utf8(s).unwrap_or_default());
        let or_null = |v: BoxedStrategy<String>| prop_oneof![6 => v, 1 => Just("null".to_string())];
        let scalar = prop_oneof![
            4 => string(),
            2 => any::<u64>().prop_map(|n| n.to_string()),
            1 => any::<i64>().prop_map(|n| n.to_string()),
            // The edges of serde's integers (past them it reads a float: left to serde).
            1 => prop_oneof![
                Just("0"), Just("-1"), Just("9223372036854775807"), Just("9223372036854775808"),
                Just("18446744073709551615"), Just("-9223372036854775808"),
            ]
            .prop_map(String::from),
            1 => prop_oneof![Just("true"), Just("false"), Just("null")].prop_map(String::from),
        ];
        // Keys distinct once unescaped, written as they are or every character escaped.
        let key = "[a-zA-Z_]{1,6}|[α-ω]{1,3}";
        let map = proptest::collection::btree_map(key, (any::<bool>(), scalar, ws(), ws()), 0..5)
            .prop_map(|m| {
                let members: Vec<String> = m
                    .into_iter()
                    .map(|(k, (escaped, v, a, b))| {
                        let k = if escaped {
                            k.chars()
                                .map(|c| format!("\\u{:04x}", u32::from(c)))
                                .collect()
                        } else {
                            k
                        };
                        format!("{a}\"{k}\"{b}:{a}{v}{b}")
                    })
                    .collect();
                format!("{{{}}}", members.join(","))
            })
            .boxed();
        let members = |fields: Vec<(&'static str, BoxedStrategy<String>)>| {
            let n = fields.len();
            let (names, values): (Vec<_>, Vec<_>) = fields.into_iter().unzip();
            (
                values,
                proptest::sample::subsequence((0..n).collect::<Vec<_>>(), 0..=n).prop_shuffle(),
                ws(),
            )
                .prop_map(move |(values, chosen, w)| {
                    let members: Vec<String> = chosen
                        .into_iter()
                        .map(|i| format!("{w}\"{}\"{w}:{w}{}{w}", names[i], values[i]))
                        .collect();
                    format!("{w}{{{}}}", members.join(","))
                })
        };
        let param = members(vec![
            ("bizId", or_null(string().boxed()).boxed()),
            ("receiver", or_null(string().boxed()).boxed()),
            ("variables", or_null(map.clone()).boxed()),
            ("extra", or_null(map).boxed()),
        ])
        .boxed();
        let id = prop_oneof![
            4 => any::<i64>().prop_map(|n| n.to_string()),
            1 => (0..1000u32).prop_map(|n| format!("\" {n}\"")),
        ];
        members(vec![
            (
                "code",
                or_null(
                    prop_oneof![
                        6 => Just(r#""send""#.to_string()),
                        1 => Just(r#""recall""#.to_string()),
                        1 => Just(r#""s\u0065nd""#.to_string()),
                        1 => string(),
                    ]
                    .boxed(),
                )
                .boxed(),
            ),
            ("messageTemplateId", or_null(id.boxed()).boxed()),
            ("messageParam", or_null(param.clone()).boxed()),
            (
                "messageParamList",
                or_null(
                    proptest::collection::vec(param, 0..3)
                        .prop_map(|ps| format!("[{}]", ps.join(",")))
                        .boxed(),
                )
                .boxed(),
            ),
            (
                "recallMessageIds",
                or_null(
                    proptest::collection::vec(string(), 0..3)
                        .prop_map(|ids| format!("[ {} ]", ids.join(" , ")))
                        .boxed(),
                )
                .boxed(),
            ),
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]
        /// Requests as producers write them are read by hand, not left to serde, and read as
        /// serde reads them.
        #[test]
        fn common_requests_are_read_by_hand(line in common_request()) {
            let by_hand = fast::read(&line);
            prop_assert!(by_hand.is_some(), "left to serde: {}", line);
            // The whole line, not only the request made of it (whose errors drop the rest).
            prop_assert_eq!(
                format!("{by_hand:?}"),
                format!("{:?}", parse_bytes(line.as_bytes()).ok()),
                "{}",
                line
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_line(&bytes, 0);
        }
    }
}
