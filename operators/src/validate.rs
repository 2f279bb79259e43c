//! Step 1 of the pipeline: a raw record becomes messages, or a dead letter with a reason.
//!
//! A record that is unparsable, has an unknown `code` or template, or has both or neither of
//! `messageParam`/`messageParamList` is one dead letter. Otherwise each param is judged alone:
//! no receivers, more than 100, or a missing variable makes that message a dead letter and its
//! siblings go on.

use std::sync::Arc;

use chrono_tz::Tz;
use tidings_model::receiver::{MAX_RECEIVERS, split_receivers};
use tidings_model::render::Variables;
use tidings_model::render::render;
use tidings_model::request::{Code, decode_line, decode_request};
use tidings_model::time::{Millis, local_date};
use tidings_model::{DeadLetter, Message, MessageMeta, Template, Templates, ids};

use crate::SourceRecord;

/// A template's content model rendered with `vars`, as the content dedup key and the sinks
/// see it (compact JSON of the rendered model).
pub fn rendered_content(
    template: &Template,
    vars: &Variables,
) -> Result<String, tidings_model::render::RenderError> {
    render(&template.content, vars).map(|c| serde_json::Value::Object(c).to_string())
}

/// Turns records into messages. Shared read-only state only.
#[derive(Debug, Clone)]
pub struct Validator {
    templates: Arc<Templates>,
    tz: Tz,
}

/// The outcome of one record.
#[derive(Debug, Default, PartialEq)]
pub struct Validated {
    /// Messages that go on.
    pub messages: Vec<Message>,
    /// Recall requests that go on.
    pub recalls: Vec<crate::flow::RecallOrder>,
    /// Dead letters: the whole record, or single params.
    pub dead: Vec<DeadLetter>,
}

impl Validator {
    /// A validator over the job's templates, dating businessIds in `tz`.
    pub fn new(templates: Arc<Templates>, tz: Tz) -> Validator {
        Validator { templates, tz }
    }

    /// Judges one record; `now` stamps dead letters.
    pub fn validate(&self, rec: &SourceRecord, now: Millis) -> Validated {
        let mut out = Validated::default();
        let dead = |reason: String| DeadLetter {
            time: now,
            source: rec.position(),
            payload: String::from_utf8_lossy(&rec.bytes).into_owned(),
            reason,
        };
        let decoded = match rec.timestamp {
            None => decode_line(&rec.bytes, rec.read_time),
            Some(ts) => decode_request(&rec.bytes).map(|r| (ts, r)),
        };
        // The source chose the event time (the record's own, or its partition's watermark when
        // it came late): every worker and every replay judge the record at the same time.
        let event_time = rec.event_time;
        let request = match decoded {
            Ok((_, request)) => request,
            Err(reason) => {
                out.dead.push(dead(reason));
                return out;
            }
        };
        let Some(template) = self.templates.get(request.template_id) else {
            out.dead
                .push(dead(format!("unknown template {}", request.template_id)));
            return out;
        };
        if request.code == Code::Recall {
            if template.channel.supports_recall() {
                out.recalls.push(crate::flow::RecallOrder {
                    template_id: template.id,
                    message_ids: request.recall_message_ids.clone(),
                    event_time,
                    source: rec.position(),
                });
            } else {
                out.dead.push(dead(format!(
                    "recall is not supported on channel {} (only ding_ding_work_notice and enterprise_we_chat): nothing was recalled",
                    template.channel.name()
                )));
            }
            return out;
        }
        let date = local_date(self.tz, event_time);
        let business_id = ids::business_id(template.template_type.code(), template.id, date);
        let empty = serde_json::Map::new();
        for (index, param) in request.params.iter().enumerate() {
            let at = |reason: String| {
                if request.params.len() > 1 {
                    format!("messageParamList[{index}]: {reason}")
                } else {
                    reason
                }
            };
            let receivers = split_receivers(param.receiver.as_deref().unwrap_or(""));
            if receivers.is_empty() {
                out.dead.push(dead(at("no receivers".into())));
                continue;
            }
            if receivers.len() > MAX_RECEIVERS {
                out.dead.push(dead(at(format!(
                    "{} receivers: at most {MAX_RECEIVERS} per message",
                    receivers.len()
                ))));
                continue;
            }
            let vars = param.variables.as_ref().unwrap_or(&empty);
            let content = match rendered_content(template, vars) {
                Ok(c) => c,
                Err(e) => {
                    out.dead.push(dead(at(e.to_string())));
                    continue;
                }
            };
            let index = index as u32;
            let seq = ((rec.partition as u32 as u128) << 96)
                | ((rec.offset as u64 as u128) << 32)
                | index as u128;
            out.messages.push(Message {
                meta: Arc::new(MessageMeta {
                    message_id: ids::message_id(&rec.source, rec.partition, rec.offset, index),
                    template_id: template.id,
                    business_id,
                    biz_id: param.biz_id.clone(),
                    content,
                    event_time,
                    seq,
                }),
                receivers,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn templates() -> Arc<Templates> {
        Arc::new(
            Templates::parse(
                "t.toml",
                r#"
[[template]]
id = 1
name = "code"
channel = "sms"
msg_type = "auth_code"
id_type = "phone"
account = "a"
[template.content]
content = "code {$code}"
"#,
            )
            .unwrap(),
        )
    }

    fn record(line: &str) -> SourceRecord {
        SourceRecord {
            source: "file:r.jsonl".into(),
            partition: 0,
            offset: 3,
            bytes: line.as_bytes().to_vec(),
            read_time: 1_763_770_200_000,
            timestamp: None,
            event_time: 1_763_770_200_000,
            late_by: 0,
            bad_time: None,
        }
    }

    fn v() -> Validator {
        Validator::new(templates(), "Asia/Shanghai".parse().unwrap())
    }

    #[test]
    fn every_bad_input_case_is_one_dead_letter_with_a_reason() {
        let many: Vec<String> = (0..101).map(|i| format!("1380013{i:04}")).collect();
        let cases = [
            ("{oops".to_string(), "unparsable"),
            (json!({"code": "x", "messageTemplateId": 1, "messageParam": {}}).to_string(), "unknown code"),
            (json!({"code": "send", "messageTemplateId": 9, "messageParam": {}}).to_string(), "unknown template 9"),
            (json!({"code": "send", "messageTemplateId": 1, "messageParam": {}, "messageParamList": []}).to_string(), "both"),
            (json!({"code": "send", "messageTemplateId": 1}).to_string(), "neither"),
            (json!({"code": "send", "messageTemplateId": 1, "messageParam": {"receiver": " , ", "variables": {"code": 1}}}).to_string(), "no receivers"),
            (json!({"code": "send", "messageTemplateId": 1, "messageParam": {"receiver": many.join(","), "variables": {"code": 1}}}).to_string(), "101 receivers"),
            (json!({"code": "send", "messageTemplateId": 1, "messageParam": {"receiver": "13800138000"}}).to_string(), "missing variable `code`"),
        ];
        for (line, want) in cases {
            let out = v().validate(&record(&line), 7);
            assert!(out.messages.is_empty(), "{line}");
            assert_eq!(out.dead.len(), 1, "{line}");
            assert!(
                out.dead[0].reason.contains(want),
                "{line}: {}",
                out.dead[0].reason
            );
            assert_eq!(out.dead[0].source, "file:r.jsonl:3");
            assert_eq!(out.dead[0].payload, line);
        }
    }

    #[test]
    fn siblings_go_on() {
        let line = json!({"code": "send", "messageTemplateId": 1, "messageParamList": [
            {"receiver": "13800138000", "variables": {"code": "1"}},
            {"receiver": "13800138001"},
            {"receiver": "13800138002,13800138002, ", "variables": {"code": "3"}, "bizId": "b"}
        ]})
        .to_string();
        let out = v().validate(&record(&line), 7);
        assert_eq!(out.messages.len(), 2);
        assert_eq!(out.dead.len(), 1);
        assert!(
            out.dead[0]
                .reason
                .starts_with("messageParamList[1]: missing variable")
        );
        assert_eq!(out.messages[1].receivers, vec!["13800138002"]);
        assert_eq!(out.messages[1].meta.content, r#"{"content":"code 3"}"#);
        assert_eq!(out.messages[1].meta.biz_id.as_deref(), Some("b"));
        assert_eq!(out.messages[0].meta.business_id, 2000000120251122);
        assert_ne!(
            out.messages[0].meta.message_id,
            out.messages[1].meta.message_id
        );
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[a-z0-9 ,{}$@.]{0,12}".prop_map(serde_json::Value::from),
            prop_oneof![
                Just("send"),
                Just("recall"),
                Just("code"),
                Just("messageTemplateId")
            ]
            .prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("code".to_string()),
                        Just("messageTemplateId".to_string()),
                        Just("messageParam".to_string()),
                        Just("messageParamList".to_string()),
                        Just("receiver".to_string()),
                        Just("variables".to_string()),
                        Just("payload".to_string()),
                        Just("ts".to_string()),
                        "[a-z]{1,5}",
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn accounted(out: &Validated) -> bool {
        !(out.messages.is_empty() && out.dead.is_empty())
            && out.dead.iter().all(|d| !d.reason.is_empty())
            && out
                .messages
                .iter()
                .all(|m| !m.receivers.is_empty() && m.receivers.len() <= 100)
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_yield_messages_or_a_reason(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut rec = record("");
            rec.bytes = bytes;
            prop_assert!(accounted(&v().validate(&rec, 1)));
        }

        #[test]
        fn arbitrary_json_yields_messages_or_a_reason(value in arb_json(), template in 0i64..3) {
            let mut value = value;
            if let Some(map) = value.as_object_mut() {
                map.insert("messageTemplateId".into(), template.into());
            }
            prop_assert!(accounted(&v().validate(&record(&value.to_string()), 1)));
        }
    }
}
