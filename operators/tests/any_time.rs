//! Issue 12: any event time, wall clock or admin `at` goes through validate, gate and both
//! dedup rules without a panic; an event time that reaches the rules is in the sane range.

use std::sync::Arc;

use chrono::NaiveTime;
use proptest::prelude::*;
use tidings_model::Templates;
use tidings_model::receiver::ReceiverValidator;
use tidings_model::time::{MAX_EVENT_TIME, MIN_EVENT_TIME, NightWindow};
use tidings_operators::SourceRecord;
use tidings_operators::dedup::{ContentDedup, FrequencyDedup, KeyedRule};
use tidings_operators::gate::{Gate, Verdict};
use tidings_operators::shield::NightShield;
use tidings_operators::validate::Validator;

const TEMPLATES: &str = r#"
[[template]]
id = 1
name = "code"
channel = "sms"
msg_type = "auth_code"
id_type = "phone"
shield = "night_delay"
account = "a"
[template.content]
content = "code {$code}"
"#;

fn any_time() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(-1i64),
        Just(0i64),
        any::<i64>(),
        // Around now, where real records are.
        1_700_000_000_000i64..1_900_000_000_000,
    ]
}

proptest! {
    #[test]
    fn any_time_never_panics(ts in any_time(), now in any_time(), at in any_time(), kafka in any::<bool>()) {
        let templates = Arc::new(Templates::parse("t.toml", TEMPLATES).unwrap());
        let tz = chrono_tz::Asia::Shanghai;
        let validator = Validator::new(templates.clone(), tz);
        let gate = Gate {
            templates: templates.clone(),
            receivers: ReceiverValidator::new("CN").unwrap(),
            discard: Default::default(),
            whitelist: Default::default(),
            shield: NightShield {
                window: NightWindow::parse("00:00-08:00").unwrap(),
                release_at: NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
                tz,
            },
        };
        let payload = r#"{"code":"send","messageTemplateId":1,"messageParam":{"receiver":"13800138000,+86 139 0013 9000","variables":{"code":7}}}"#;
        let bytes = if kafka {
            payload.to_string()
        } else {
            serde_json::json!({"ts": ts, "payload": payload}).to_string()
        };
        let rec = SourceRecord {
            source: "file:x".into(),
            partition: 0,
            offset: 1,
            bytes: bytes.into_bytes(),
            read_time: now,
            timestamp: kafka.then_some(ts),
            // The source hands its time on; the validator still refuses any it cannot judge.
            event_time: ts,
            late_by: 0,
            bad_time: None,
        };
        let out = validator.validate(&rec, now);
        prop_assert_eq!(out.messages.len() + out.dead.len(), 1);
        let mut content = ContentDedup::new(1, 300_000, 3_600_000, templates.clone());
        let mut frequency = FrequencyDedup::new(5, tz, 3_600_000, templates.clone());
        for m in out.messages {
            let t = m.meta.event_time;
            prop_assert!(t >= MIN_EVENT_TIME && t <= now.saturating_add(86_400_000) && t <= MAX_EVENT_TIME);
            let mut flows = Vec::new();
            gate.judge(m, now, &mut flows);
            for f in flows {
                let d = match f {
                    Verdict::Pass(d) => d,
                    Verdict::Park(p) => {
                        prop_assert!(p.release_at > p.delivery.event_time);
                        p.delivery
                    }
                    Verdict::Row(_) => continue,
                };
                let _ = content.judge(ContentDedup::key(&d), &d);
                let _ = frequency.judge(FrequencyDedup::key(&d), &d);
                let _ = content.inspect(d.content_key, Some(at));
                let _ = frequency.inspect(d.frequency_key, Some(at));
            }
        }
        content.evict(at);
        frequency.evict(at);
        let _ = content.summary();
        let _ = frequency.summary();
    }
}
