//! Size limits of what tidings takes in and sends out.
//!
//! - [`CONTENT_LIMITS`]: the providers' limits on a rendered content field, per channel. A
//!   message whose rendered content is over its channel's limit is a dead letter at step 1 (like
//!   a missing variable): the provider would refuse or cut it, and a cut verification code or
//!   link is worse than none.
//! - [`DEAD_LETTER_PAYLOAD_MAX`]: how much of a rejected record a dead letter keeps.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::template::Channel;

/// How a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Unicode characters (SMS and push count characters: one Chinese character is one).
    Chars,
    /// Bytes of the UTF-8 text.
    Bytes,
}

/// One provider limit on one field of a channel's rendered content model.
#[derive(Debug, Clone, Copy)]
pub struct ContentLimit {
    /// The channel.
    pub channel: Channel,
    /// The content-model field the provider sends (what the sink reads).
    pub field: &'static str,
    /// The most it may hold.
    pub max: usize,
    /// In characters or bytes.
    pub unit: Unit,
    /// Where the limit comes from.
    pub source: &'static str,
}

/// The limits, by channel. Channels without a row have no limit tidings enforces (email,
/// WeChat templates, webhooks: their providers take far more than a record may hold).
pub const CONTENT_LIMITS: &[ContentLimit] = &[
    ContentLimit {
        channel: Channel::Sms,
        field: "content",
        max: 500,
        unit: Unit::Chars,
        source: "Chinese SMS gateways (Tencent Cloud, Aliyun): one send is at most 500 characters, \
                 signature included, billed in 67-character parts past 70",
    },
    ContentLimit {
        channel: Channel::EnterpriseWeChatRobot,
        field: "content",
        max: 2048,
        unit: Unit::Bytes,
        source: "WeCom group robot, text message: content at most 2048 bytes of UTF-8",
    },
    ContentLimit {
        channel: Channel::DingDingRobot,
        field: "content",
        max: 20_000,
        unit: Unit::Bytes,
        source: "DingTalk custom robot: error 460101 \"message too long, exceed 20000 bytes\"",
    },
    ContentLimit {
        channel: Channel::FeiShuRobot,
        field: "content",
        max: 20 * 1024,
        unit: Unit::Bytes,
        source: "Feishu custom bot: the request body is at most 20 KB",
    },
    ContentLimit {
        channel: Channel::Push,
        field: "title",
        max: 50,
        unit: Unit::Chars,
        source: "GeTui push API v2: notification title at most 50 characters",
    },
    ContentLimit {
        channel: Channel::Push,
        field: "content",
        max: 256,
        unit: Unit::Chars,
        source: "GeTui push API v2: notification body at most 256 characters",
    },
];

/// Whether a rendered content model whose compact JSON is `json_len` bytes long is within
/// every limit of its channel without looking at its fields: a field's text is never longer
/// than the JSON it is written in (escapes only lengthen it, and a character is at least a
/// byte), so a JSON within the smallest limit has every field within its own.
pub fn within_limits_by_size(channel: Channel, json_len: usize) -> bool {
    CONTENT_LIMITS
        .iter()
        .filter(|l| l.channel == channel)
        .all(|l| json_len <= l.max)
}

/// `Ok` when every field of a rendered content model is within its channel's limits, else the
/// reason naming the field, its size, the limit and where the limit comes from.
pub fn check_content(channel: Channel, content: &Map<String, Value>) -> Result<(), String> {
    check_fields(channel, |name| Ok(content.get(name).map(Cow::Borrowed)))
}

/// [`check_content`] with the rendered fields given one by one, only those the channel limits
/// (`field(name)`: the field rendered, `None` when the model has none, or why it cannot be).
pub fn check_fields<'a>(
    channel: Channel,
    mut field: impl FnMut(&str) -> Result<Option<Cow<'a, Value>>, String>,
) -> Result<(), String> {
    for limit in CONTENT_LIMITS.iter().filter(|l| l.channel == channel) {
        let value = field(limit.field)?;
        let text = match value.as_deref() {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => Cow::Borrowed(s.as_str()),
            Some(other) => Cow::Owned(other.to_string()),
        };
        let (size, unit) = match limit.unit {
            // Bytes first: a text with fewer bytes than the limit has fewer characters too.
            Unit::Chars if text.len() <= limit.max => continue,
            Unit::Chars => (text.chars().count(), "characters"),
            Unit::Bytes => (text.len(), "bytes"),
        };
        if size > limit.max {
            return Err(format!(
                "rendered `{}` is {size} {unit}, more than the {} limit of {} {unit} ({})",
                limit.field,
                channel.name(),
                limit.max,
                limit.source
            ));
        }
    }
    Ok(())
}

/// How much of a rejected record's raw bytes a dead letter keeps: 4 KiB.
pub const DEAD_LETTER_PAYLOAD_MAX: usize = 4096;

/// The payload a dead letter keeps of `bytes` (lossy UTF-8), and a note for its reason when it
/// was cut: at most [`DEAD_LETTER_PAYLOAD_MAX`] bytes, cut at a character boundary.
pub fn payload_prefix(bytes: &[u8]) -> (String, Option<String>) {
    if bytes.len() <= DEAD_LETTER_PAYLOAD_MAX {
        return (String::from_utf8_lossy(bytes).into_owned(), None);
    }
    let mut cut = DEAD_LETTER_PAYLOAD_MAX;
    // Back off at most three continuation bytes so that a character is not split.
    while cut > DEAD_LETTER_PAYLOAD_MAX - 3 && bytes[cut] & 0xC0 == 0x80 {
        cut -= 1;
    }
    (
        String::from_utf8_lossy(&bytes[..cut]).into_owned(),
        Some(format!(
            "payload cut to its first {cut} of {} bytes",
            bytes.len()
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn content_limits_table() {
        let cases: Vec<(Channel, Value, Option<&str>)> = vec![
            (Channel::Sms, json!({"content": "码".repeat(500)}), None),
            (
                Channel::Sms,
                json!({"content": "码".repeat(501)}),
                Some(
                    "rendered `content` is 501 characters, more than the sms limit of 500 characters",
                ),
            ),
            (
                Channel::EnterpriseWeChatRobot,
                json!({"content": "a".repeat(2048)}),
                None,
            ),
            (
                Channel::EnterpriseWeChatRobot,
                json!({"content": "码".repeat(683)}),
                Some(
                    "2049 bytes, more than the enterprise_we_chat_robot limit of 2048 bytes (WeCom",
                ),
            ),
            (
                Channel::DingDingRobot,
                json!({"content": "x".repeat(20_001)}),
                Some("20001 bytes"),
            ),
            (
                Channel::FeiShuRobot,
                json!({"content": "x".repeat(20_481)}),
                Some("20481 bytes"),
            ),
            (
                Channel::Push,
                json!({"title": "t".repeat(51), "content": "ok"}),
                Some("rendered `title` is 51 characters"),
            ),
            (Channel::Push, json!({"content": "b".repeat(256)}), None),
            (
                Channel::Email,
                json!({"content": "x".repeat(1_000_000)}),
                None,
            ),
            (Channel::Sms, json!({"other": "x".repeat(1000)}), None),
        ];
        for (i, (channel, content, want)) in cases.into_iter().enumerate() {
            // The shortcut by size never passes a model the full check refuses.
            let json = serde_json::to_string(&content).unwrap();
            if within_limits_by_size(channel, json.len()) {
                assert!(
                    want.is_none(),
                    "case {i}: passed by size, refused by fields"
                );
            }
            let got = check_content(channel, &model(content));
            match want {
                None => assert!(got.is_ok(), "case {i}: {got:?}"),
                Some(w) => {
                    let err = got.unwrap_err();
                    assert!(err.contains(w), "case {i}: {err}");
                }
            }
        }
    }

    #[test]
    fn payload_prefix_keeps_4_kib_and_says_so() {
        let small = b"{\"code\":1}";
        assert_eq!(payload_prefix(small), ("{\"code\":1}".into(), None));
        let big = vec![b'x'; 10 * 1024 * 1024];
        let (p, note) = payload_prefix(&big);
        assert_eq!(p.len(), 4096);
        assert_eq!(
            note.as_deref(),
            Some("payload cut to its first 4096 of 10485760 bytes")
        );
        // A multi-byte character across the cut is left out whole, not split.
        let mut text = "a".repeat(4095).into_bytes();
        text.extend("码码".as_bytes());
        let (p, note) = payload_prefix(&text);
        assert_eq!(p, "a".repeat(4095));
        assert!(note.unwrap().contains("first 4095 of 4101 bytes"));
    }
}
