//! Step 1 of the pipeline: a raw record becomes messages, or a dead letter with a reason.
//!
//! A record that is larger than `max_record_bytes`, unparsable, has an event time outside the
//! sane range (before 2000, or more than `max_future_ms` ahead of the wall clock), an unknown
//! `code` or template, or both or neither of `messageParam`/`messageParamList` is one dead
//! letter. Otherwise each param is judged alone: no receivers, more than 100, a missing (or
//! `null`, object or array) variable, or rendered content over its channel's limit makes that
//! message a dead letter and its siblings go on. A dead letter keeps at most the first 4 KiB of
//! the record.

use std::borrow::Cow;
use std::sync::Arc;

use chrono_tz::Tz;
use tidings_model::limits::{check_fields, within_limits_by_size};
use tidings_model::receiver::{MAX_RECEIVERS, receivers_of};
use tidings_model::render::Variables;
use tidings_model::render::render_field;
use tidings_model::request::{Code, decode_line, decode_request};
use tidings_model::time::{DEFAULT_MAX_FUTURE_MS, Millis, check_event_time, local_date};
use tidings_model::{DeadLetter, Message, MessageMeta, Templates, ids};

use crate::SourceRecord;
use crate::book::{Book, Found};

/// The words of a dead letter for an unknown template, before its id (the send API codes it
/// apart: A0002).
pub const UNKNOWN_TEMPLATE: &str = "unknown template ";
/// The words of a dead letter for a disabled template, between its id and its version (A0002).
pub const DISABLED: &str = " is disabled (version ";

/// The largest record the validator parses by default: 1 MiB. A larger one is a dead letter
/// without being parsed.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;

/// The most content one request renders: a record of a megabyte holds tens of thousands of
/// params, and each renders the whole template (50 KB of mail each would be gigabytes). Once
/// a request's rendered contents pass it, its later params are dead letters.
pub const MAX_RENDERED_PER_REQUEST: usize = 64 << 20;

/// Turns records into messages. Shared read-only state only.
#[derive(Debug, Clone)]
pub struct Validator {
    book: Book,
    tz: Tz,
    max_future_ms: Millis,
    max_record_bytes: usize,
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
    ///
    /// Event times may be up to [`DEFAULT_MAX_FUTURE_MS`] ahead of the wall clock and records
    /// up to [`DEFAULT_MAX_RECORD_BYTES`] long; see [`Validator::with_max_future_ms`] and
    /// [`Validator::with_max_record_bytes`].
    pub fn new(templates: Arc<Templates>, tz: Tz) -> Validator {
        Validator {
            book: Book::new(templates, Default::default()),
            tz,
            max_future_ms: DEFAULT_MAX_FUTURE_MS,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }

    /// Judges with `book` (the job file's templates and the changes applied so far).
    pub fn with_book(mut self, book: Book) -> Validator {
        self.book = book;
        self
    }

    /// The templates and changes it judges with.
    pub fn book(&self) -> &Book {
        &self.book
    }

    /// The book, to apply changes to.
    pub fn book_mut(&mut self) -> &mut Book {
        &mut self.book
    }

    /// How far ahead of the wall clock at a record's read (`read_time`) an event time may be
    /// (the job's `source.max_future_ms`); a later one is a dead letter.
    pub fn with_max_future_ms(mut self, ms: Millis) -> Validator {
        self.max_future_ms = ms.max(0);
        self
    }

    /// The largest record parsed; a larger one is a dead letter (with a 4 KiB prefix).
    pub fn with_max_record_bytes(mut self, bytes: usize) -> Validator {
        self.max_record_bytes = bytes;
        self
    }

    /// Judges one record; `now` (the wall clock) stamps dead letters; event times are bounded
    /// by the wall clock at the record's read (`read_time`), as its source bounded them.
    pub fn validate(&self, rec: &SourceRecord, now: Millis) -> Validated {
        let mut out = Validated::default();
        self.validate_into(rec, now, &mut out);
        out
    }

    /// [`Validator::validate`] into `out`'s lists (added to, not cleared): the admit stage
    /// reuses one set of lists for its records instead of three per record.
    pub fn validate_into(&self, rec: &SourceRecord, now: Millis, out: &mut Validated) {
        let dead = |reason: String| DeadLetter::of_record(now, rec.position(), &rec.bytes, reason);
        if rec.bytes.len() > self.max_record_bytes {
            out.dead.push(dead(format!(
                "record is {} bytes, more than the limit of {} bytes: not parsed",
                rec.bytes.len(),
                self.max_record_bytes
            )));
            return;
        }
        // A record with a timestamp (Kafka's, an envelope's) is the request's body itself:
        // decoded straight into the request, not through a pair.
        let decoded = match rec.timestamp {
            None => decode_line(&rec.bytes, rec.read_time).map(|(_, r)| r),
            Some(_) => decode_request(&rec.bytes),
        };
        // The source chose the event time (the record's own, or its partition's watermark when
        // it came late): every worker and every replay judge the record at the same time.
        let event_time = rec.event_time;
        let request = match decoded {
            Ok(request) => request,
            Err(reason) => {
                out.dead.push(dead(reason));
                return;
            }
        };
        // Against the wall clock at the record's read, as its source checked it: the worker
        // that judges it may be in another process, whose clock is another.
        if let Err(reason) = check_event_time(event_time, rec.read_time, self.max_future_ms) {
            out.dead.push(dead(reason));
            return;
        }
        let found = self.book.at(request.template_id, event_time);
        let live = match &found {
            Found::Live(l) => Some((*l).clone()),
            _ => None,
        };
        let template = match found {
            Found::Base(t) => &**t,
            Found::Live(l) => {
                // A version restored from a checkpoint may name an account the job's file no
                // longer has.
                if let Err(why) = self.book.check(&l.template) {
                    out.dead.push(dead(format!(
                        "template {} version {}: {why}",
                        request.template_id, l.version
                    )));
                    return;
                }
                &l.template
            }
            Found::Disabled { version, at } => {
                out.dead.push(dead(format!(
                    "template {}{DISABLED}{version}, from event time {})",
                    request.template_id,
                    crate::live::iso(at)
                )));
                return;
            }
            Found::Unknown => {
                out.dead
                    .push(dead(format!("{UNKNOWN_TEMPLATE}{}", request.template_id)));
                return;
            }
        };
        if request.code == Code::Recall {
            if template.channel.supports_recall() {
                out.recalls.push(crate::flow::RecallOrder {
                    template_id: template.id,
                    message_ids: request.recall_message_ids.clone(),
                    event_time,
                    source: rec.position(),
                    account: live.as_ref().map(|l| l.template.account.clone()),
                    accounts: self.book.accounts_at(event_time),
                });
            } else {
                out.dead.push(dead(format!(
                    "recall is not supported on channel {} (only ding_ding_work_notice and enterprise_we_chat): nothing was recalled",
                    template.channel.name()
                )));
            }
            return;
        }
        let accounts = self.book.accounts_at(event_time);
        let date = local_date(self.tz, event_time);
        let business_id = ids::business_id(template.template_type.code(), template.id, date);
        let empty = Variables::new();
        // The record's first dead letter keeps its payload; params after it that fail too keep
        // an empty one (a 1 MiB list of 349k empty params made 349k copies of 4 KiB).
        let mut payload = &rec.bytes[..];
        let mut dead_param = |reason: String| {
            DeadLetter::of_record(now, rec.position(), std::mem::take(&mut payload), reason)
        };
        let mut rendered_bytes = 0;
        for (index, param) in request.params.iter().enumerate() {
            let at = |reason: String| {
                if request.params.len() > 1 {
                    format!("messageParamList[{index}]: {reason}")
                } else {
                    reason
                }
            };
            if rendered_bytes > MAX_RENDERED_PER_REQUEST {
                out.dead.push(dead_param(at(format!(
                    "the request's contents rendered so far pass {} MiB: split the list into requests of fewer params",
                    MAX_RENDERED_PER_REQUEST >> 20
                ))));
                continue;
            }
            let listed = match &param.receiver {
                Some(list) => receivers_of(list, MAX_RECEIVERS),
                None => Ok(Default::default()),
            };
            let receivers = match listed {
                Ok(r) if r.is_empty() => {
                    out.dead.push(dead_param(at("no receivers".into())));
                    continue;
                }
                Ok(r) => r,
                Err(reason) => {
                    out.dead.push(dead_param(at(reason)));
                    continue;
                }
            };
            let vars = param.variables.as_ref().unwrap_or(&empty);
            let rendered = template
                .render(vars)
                .map_err(|e| e.to_string())
                .and_then(|json| {
                    // Long content only: the fields the channel limits are rendered again to
                    // be measured.
                    if !within_limits_by_size(template.channel, json.len()) {
                        check_fields(template.channel, |name| {
                            render_field(&template.content, name, vars)
                                .map(|v| v.map(Cow::Owned))
                                .map_err(|e| e.to_string())
                        })?;
                    }
                    Ok(json)
                });
            let content = match rendered {
                Ok(c) => c,
                Err(reason) => {
                    out.dead.push(dead_param(at(reason)));
                    continue;
                }
            };
            rendered_bytes += content.len();
            let index = index as u32;
            let seq = ((rec.partition as u32 as u128) << 96)
                | ((rec.offset as u64 as u128) << 32)
                | index as u128;
            out.messages.push(Message {
                meta: Arc::new(MessageMeta {
                    live: live.clone(),
                    accounts: accounts.clone(),
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

    /// The wall clock of these tests, and the read time of their records.
    const NOW: Millis = 1_763_770_200_000;

    fn record(line: &str) -> SourceRecord {
        SourceRecord {
            source: "file:r.jsonl".into(),
            partition: 0,
            offset: 3,
            bytes: line.as_bytes().to_vec(),
            read_time: NOW,
            timestamp: None,
            // As the source stamps it: the envelope's `ts`, or the read time.
            event_time: crate::event_time::line_event_time(line.as_bytes(), NOW).unwrap_or(NOW),
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
            let out = v().validate(&record(&line), NOW);
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

    /// An event time is bounded by the wall clock at the record's read, as the source bounded
    /// it: a worker of another process, whose clock is behind, judges it alike.
    #[test]
    fn the_future_bound_is_the_reads_not_the_judging_workers() {
        let day = crate::validate::DEFAULT_MAX_FUTURE_MS;
        let send = |ts: Millis| {
            json!({"ts": ts, "payload": json!({"code": "send", "messageTemplateId": 1,
                "messageParam": {"receiver": "13800138000", "variables": {"code": 1}}}).to_string()})
            .to_string()
        };
        let near = v().validate(&record(&send(NOW + day - 1)), NOW - 10_000);
        assert_eq!((near.messages.len(), near.dead.len()), (1, 0));
        let far = v().validate(&record(&send(NOW + day + 1)), NOW + 10_000);
        assert_eq!((far.messages.len(), far.dead.len()), (0, 1));
        assert!(
            far.dead[0].reason.contains("max_future_ms"),
            "{}",
            far.dead[0].reason
        );
    }

    /// A request whose params render more than [`MAX_RENDERED_PER_REQUEST`] in all (a long
    /// mail to tens of thousands): the params after that are dead letters, the first sent.
    #[test]
    fn a_request_renders_a_bounded_amount() {
        let body = "x".repeat(1 << 20);
        let text = format!(
            "[[template]]\nid = 2\nname = \"mail\"\nchannel = \"email\"\nmsg_type = \"notice\"\n\
             id_type = \"email\"\naccount = \"a\"\n[template.content]\ntitle = \"t\"\ncontent = \"{body}\"\n"
        );
        let v = Validator::new(
            Arc::new(Templates::parse("t.toml", &text).unwrap()),
            "Asia/Shanghai".parse().unwrap(),
        );
        let params: Vec<_> = (0..70)
            .map(|i| json!({"receiver": format!("u{i}@example.com")}))
            .collect();
        let line = json!({"code": "send", "messageTemplateId": 2, "messageParamList": params});
        let out = v.validate(&record(&line.to_string()), NOW);
        // Each renders a little over 1 MiB: 64 pass the bound.
        let sent = MAX_RENDERED_PER_REQUEST >> 20;
        assert_eq!((out.messages.len(), out.dead.len()), (sent, 70 - sent));
        assert!(
            out.dead[0]
                .reason
                .starts_with(&format!("messageParamList[{sent}]: "))
                && out.dead[0].reason.contains("split the list"),
            "{}",
            out.dead[0].reason
        );
    }

    #[test]
    fn a_records_payload_is_kept_once_however_many_params_fail() {
        // A list of many empty params: each is a dead letter, the record's bytes kept once.
        let params: Vec<_> = (0..10_000).map(|_| json!({})).collect();
        let line =
            json!({"code": "send", "messageTemplateId": 1, "messageParamList": params}).to_string();
        let out = v().validate(&record(&line), NOW);
        assert_eq!((out.messages.len(), out.dead.len()), (0, 10_000));
        assert!(
            out.dead[0].payload.starts_with("{\"code\""),
            "{:?}",
            out.dead[0]
        );
        let kept: usize = out.dead.iter().map(|d| d.payload.len()).sum();
        assert_eq!(kept, out.dead[0].payload.len());
        assert_eq!(
            out.dead[9_999].reason,
            "messageParamList[9999]: no receivers"
        );
        assert!(out.dead.iter().all(|d| d.source == out.dead[0].source));
    }

    #[test]
    fn siblings_go_on() {
        let line = json!({"code": "send", "messageTemplateId": 1, "messageParamList": [
            {"receiver": "13800138000", "variables": {"code": "1"}},
            {"receiver": "13800138001"},
            {"receiver": "13800138002,13800138002, ", "variables": {"code": "3"}, "bizId": "b"}
        ]})
        .to_string();
        let out = v().validate(&record(&line), NOW);
        assert_eq!(out.messages.len(), 2);
        assert_eq!(out.dead.len(), 1);
        assert!(
            out.dead[0]
                .reason
                .starts_with("messageParamList[1]: missing variable")
        );
        assert_eq!(
            out.messages[1].receivers.as_slice(),
            &["13800138002".into()]
        );
        assert_eq!(out.messages[1].meta.content, r#"{"content":"code 3"}"#);
        assert_eq!(out.messages[1].meta.biz_id.as_deref(), Some("b"));
        assert_eq!(out.messages[0].meta.business_id, 2000000120251122);
        assert_ne!(
            out.messages[0].meta.message_id,
            out.messages[1].meta.message_id
        );
    }

    fn envelope(ts: serde_json::Value, payload: &serde_json::Value) -> String {
        json!({"ts": ts, "payload": payload.to_string()}).to_string()
    }

    fn send(vars: serde_json::Value) -> serde_json::Value {
        json!({"code": "send", "messageTemplateId": 1,
               "messageParam": {"receiver": "13800138000", "variables": vars}})
    }

    /// Issue 12: a `ts` of i64::MAX (which panicked in content dedup), i64::MIN, a negative one
    /// or one in year 10000 is one dead letter naming the value and the bound, never a message.
    #[test]
    fn event_times_outside_the_sane_range_are_dead_letters() {
        let ok = send(json!({"code": "1"}));
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (
                json!(i64::MAX),
                "event time 9223372036854775807 ms (out of range) is more than 86400000 ms ahead of the wall clock",
            ),
            (
                json!(i64::MIN),
                "event time -9223372036854775808 ms (out of range) is before 2000-01-01T00:00:00Z (946684800000 ms)",
            ),
            (
                json!(-5),
                "event time -5 ms (1969-12-31T23:59:59.995Z) is before 2000-01-01",
            ),
            (json!(0), "is before 2000-01-01"),
            (json!(1_763_770_200), "event time 1763770200 ms (1970-01-21"),
            (
                json!(253_402_300_800_000i64),
                "(+10000-01-01T00:00:00.000Z) is more than 86400000 ms ahead",
            ),
            (
                json!(NOW + 86_400_001),
                "the bound is 1763856600000 ms (source.max_future_ms)",
            ),
        ];
        for (ts, want) in cases {
            let line = envelope(ts.clone(), &ok);
            let out = v().validate(&record(&line), NOW);
            assert!(out.messages.is_empty(), "{ts}");
            assert_eq!(out.dead.len(), 1, "{ts}");
            assert!(
                out.dead[0].reason.contains(want),
                "{ts}: {}",
                out.dead[0].reason
            );
        }
        // Inside the range: the past back to 2000, and up to a day ahead.
        for ts in [946_684_800_000i64, NOW - 400 * 86_400_000, NOW + 86_400_000] {
            let out = v().validate(&record(&envelope(json!(ts), &ok)), NOW);
            assert_eq!(out.messages.len(), 1, "{ts}: {:?}", out.dead);
            assert_eq!(out.messages[0].meta.event_time, ts);
        }
        // kcat's -1 (no timestamp) is the read time.
        let out = v().validate(&record(&envelope(json!(-1), &ok)), NOW);
        assert_eq!(out.messages[0].meta.event_time, NOW);
        // A Kafka record's own timestamp is judged the same way, and the bound is a setting.
        let mut rec = record(&ok.to_string());
        rec.timestamp = Some(i64::MAX);
        rec.event_time = i64::MAX;
        assert!(
            v().validate(&rec, NOW).dead[0]
                .reason
                .contains("ahead of the wall clock")
        );
        rec.timestamp = Some(NOW + 2_000);
        rec.event_time = NOW + 2_000;
        assert_eq!(v().validate(&rec, NOW).messages.len(), 1);
        let strict = v().with_max_future_ms(1_000);
        let reason = &strict.validate(&rec, NOW).dead[0].reason;
        assert!(reason.contains("more than 1000 ms ahead"), "{reason}");
    }

    /// Issue 12: 200,000 distinct receivers are refused at the 101st, in linear time.
    #[test]
    fn two_hundred_thousand_receivers_are_refused_with_the_limit() {
        let many: Vec<String> = (0..200_000).map(|i| format!("1{i:010}")).collect();
        let line = json!({"code": "send", "messageTemplateId": 1,
            "messageParam": {"receiver": many.join(","), "variables": {"code": 1}}})
        .to_string();
        // 2.4 MB: past the default record limit, so that limit is raised to reach the list.
        let out = v()
            .with_max_record_bytes(16 << 20)
            .validate(&record(&line), NOW);
        assert!(out.messages.is_empty());
        assert_eq!(out.dead.len(), 1);
        let reason = &out.dead[0].reason;
        assert!(
            reason.starts_with("200000 receivers listed, more than 100: at most 100 per message"),
            "{reason}"
        );
        // The dead letter keeps a prefix of the 2.4 MB line and says how long it was.
        assert!(
            reason.ends_with(&format!(
                "(payload cut to its first 4096 of {} bytes)",
                line.len()
            )),
            "{reason}"
        );
        assert_eq!(out.dead[0].payload, line[..4096]);
    }

    /// Issue 12: a huge record is not parsed and not stored whole.
    #[test]
    fn huge_records_are_dead_letters_with_a_prefix_and_their_size() {
        let huge = format!(
            "{{\"code\":\"send\",\"pad\":\"{}\"}}",
            "x".repeat(5 * 1024 * 1024)
        );
        let out = v().validate(&record(&huge), NOW);
        assert_eq!(out.dead.len(), 1);
        let d = &out.dead[0];
        assert_eq!(
            d.reason,
            format!(
                "record is {} bytes, more than the limit of 1048576 bytes: not parsed (payload cut to its first 4096 of {} bytes)",
                huge.len(),
                huge.len()
            )
        );
        assert_eq!(d.payload.len(), 4096);
        // Under the record limit but over the dead-letter prefix: parsed, then cut.
        let big = format!("{{oops{}", " ".repeat(10_000));
        let d = &v().validate(&record(&big), NOW).dead[0];
        assert!(d.reason.starts_with("unparsable JSON"), "{}", d.reason);
        assert!(
            d.reason
                .ends_with("(payload cut to its first 4096 of 10005 bytes)")
        );
        let small = v().with_max_record_bytes(10);
        assert!(
            small.validate(&record(&big), NOW).dead[0]
                .reason
                .starts_with("record is 10005 bytes")
        );
    }

    /// Issue 12: `null` is a missing value; numbers and booleans are their JSON text; objects
    /// and arrays are refused.
    #[test]
    fn variable_values() {
        let cases: Vec<(serde_json::Value, Result<&str, &str>)> = vec![
            (
                json!({"code": null}),
                Err("missing variable `code`: its value is null"),
            ),
            (
                json!({"code": {"a": 1}}),
                Err("variable `code` is an object"),
            ),
            (json!({"code": ["1"]}), Err("variable `code` is an array")),
            (json!({}), Err("missing variable `code`")),
            (json!({"code": 4711}), Ok(r#"{"content":"code 4711"}"#)),
            (json!({"code": 1.5}), Ok(r#"{"content":"code 1.5"}"#)),
            (json!({"code": true}), Ok(r#"{"content":"code true"}"#)),
        ];
        for (vars, want) in cases {
            let out = v().validate(&record(&send(vars.clone()).to_string()), NOW);
            match want {
                Ok(content) => {
                    assert!(out.dead.is_empty(), "{vars}: {:?}", out.dead);
                    assert_eq!(out.messages[0].meta.content, content, "{vars}");
                }
                Err(reason) => {
                    assert!(out.messages.is_empty(), "{vars}");
                    assert!(
                        out.dead[0].reason.contains(reason),
                        "{vars}: {}",
                        out.dead[0].reason
                    );
                }
            }
        }
    }

    /// Issue 12: rendered content over the channel's provider limit is a dead letter.
    #[test]
    fn content_over_the_channel_limit_is_a_dead_letter() {
        let out = v().validate(
            &record(&send(json!({"code": "9".repeat(495)})).to_string()),
            NOW,
        );
        assert_eq!(out.messages.len(), 1, "500 characters fit: {:?}", out.dead);
        let out = v().validate(
            &record(&send(json!({"code": "9".repeat(496)})).to_string()),
            NOW,
        );
        assert!(out.messages.is_empty());
        assert!(
            out.dead[0].reason.starts_with(
                "rendered `content` is 501 characters, more than the sms limit of 500 characters"
            ),
            "{}",
            out.dead[0].reason
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
