//! Steps 2–6 of the pipeline, per receiver: RECEIVE, then the first of RECEIVER_INVALID,
//! DISCARD, WHITE_LIST, NIGHT_SHIELD / NIGHT_SHIELD_NEXT_SEND that applies, else on to dedup.
//!
//! A valid receiver goes on in its normalised form ([`ReceiverValidator::normalise`]: phones
//! as digits, national for the job's region, E.164 otherwise), which every row, dedup key and
//! provider sees; an invalid one is recorded as written. The whitelist matches either form.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use tidings_model::receiver::ReceiverValidator;
use tidings_model::time::{Millis, to_utc};
use tidings_model::{Delivery, EventRow, IdType, Message, Receiver, State, Templates, ids};

use crate::park::Parked;
use crate::shield::{Decision, NightShield};

/// What the gate says of a receiver, in order: its RECEIVE row, then a terminal row, a pass or
/// a park ([`crate::admit`] sends each kind to its own stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A tracking row: RECEIVE, or the terminal state of steps 2–6.
    Row(EventRow),
    /// The receiver goes on to dedup.
    Pass(Delivery),
    /// The receiver is parked until its release time (`night_delay`).
    Park(Parked),
}

/// The stateless per-receiver filters of a job.
#[derive(Debug, Clone)]
pub struct Gate {
    /// Templates, for id_type, channel and shield.
    pub templates: Arc<Templates>,
    /// Receiver validation by id type.
    pub receivers: ReceiverValidator,
    /// Template ids whose messages are discarded.
    pub discard: HashSet<i64>,
    /// When non-empty, the only receivers sent to.
    pub whitelist: HashSet<String>,
    /// The night rule.
    pub shield: NightShield,
}

impl Gate {
    /// Judges every receiver of a message; pushes rows, passes and parks to `out`.
    pub fn judge(&self, msg: Message, now: Millis, out: &mut Vec<Verdict>) {
        self.judge_with(msg, now, out, &self.discard, &self.whitelist)
    }

    /// [`Gate::judge`] with the discard list and whitelist in force at the message's event
    /// time (docs/templates.md "Live changes").
    pub fn judge_with(
        &self,
        msg: Message,
        now: Millis,
        out: &mut Vec<Verdict>,
        discard: &HashSet<i64>,
        whitelist: &HashSet<String>,
    ) {
        let meta = msg.meta;
        let Some(template) = meta.template(&self.templates) else {
            // The validator only lets known templates through.
            unreachable!(
                "template {} vanished after validation; this is a bug",
                meta.template_id
            )
        };
        let decision = self.shield.decide(template.shield, meta.event_time);
        let channel = template.channel.name();
        // Phones are normalised, so two spellings of one number may meet here: the second is
        // collapsed like a repeat in the list (no row).
        let mut seen: Option<HashSet<Receiver>> =
            (template.id_type == IdType::Phone && msg.receivers.len() > 1).then(HashSet::new);
        for (index, raw) in msg.receivers.into_iter().enumerate() {
            // Shared, not copied: the delivery and its rows point at the request's text
            // unless normalising changed it.
            let (receiver, invalid): (Receiver, _) =
                match self.receivers.normalise(template.id_type, &raw) {
                    Ok(Cow::Owned(n)) => (n.into(), None),
                    Ok(Cow::Borrowed(_)) => (raw.clone(), None),
                    Err(why) => (raw.clone(), Some(why)),
                };
            if invalid.is_none()
                && let Some(seen) = seen.as_mut()
                && !seen.insert(receiver.clone())
            {
                continue;
            }
            let keys = (
                ids::content_key(meta.template_id, &receiver, &meta.content),
                ids::frequency_key(&receiver, channel),
            );
            let mut d = Delivery::new(meta.clone(), receiver, index as u32, meta.event_time, keys);
            d.dedup = Some(template.dedup);
            out.push(Verdict::Row(EventRow::of(&d, State::Receive, None, now)));
            let stop = |state: State, reason: String| {
                Verdict::Row(EventRow::of(&d, state, Some(reason), now))
            };
            if let Some(why) = invalid {
                out.push(stop(State::ReceiverInvalid, why));
            } else if discard.contains(&template.id) {
                out.push(stop(
                    State::Discard,
                    format!("template {} is on the discard list", template.id),
                ));
            } else if !whitelist.is_empty()
                && !whitelist.contains(&*d.receiver)
                && !whitelist.contains(&*raw)
            {
                out.push(stop(
                    State::WhiteList,
                    "receiver is not on the whitelist".into(),
                ));
            } else {
                match decision {
                    Decision::Send => out.push(Verdict::Pass(d)),
                    Decision::Drop => {
                        out.push(stop(State::NightShield, "night_drop: sent at night".into()))
                    }
                    Decision::DeferUntil(release_at) => {
                        let reason = format!(
                            "night_delay: parked until {}",
                            to_utc(release_at).to_rfc3339()
                        );
                        out.push(stop(State::NightShieldNextSend, reason));
                        out.push(Verdict::Park(Parked {
                            release_at,
                            delivery: d,
                        }));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveTime;
    use tidings_model::MessageMeta;
    use tidings_model::time::NightWindow;

    fn gate(discard: &[i64], whitelist: &[&str]) -> Gate {
        let templates = Templates::parse(
            "t.toml",
            r#"
[[template]]
id = 1
name = "a"
channel = "sms"
msg_type = "notice"
id_type = "phone"
account = "a"
[[template]]
id = 2
name = "b"
channel = "email"
msg_type = "marketing"
id_type = "email"
shield = "night_delay"
account = "a"
dedup = false
[[template]]
id = 3
name = "c"
channel = "push"
msg_type = "marketing"
id_type = "cid"
shield = "night_drop"
account = "a"
dedup = false
"#,
        )
        .unwrap();
        Gate {
            templates: Arc::new(templates),
            receivers: ReceiverValidator::new("CN").unwrap(),
            discard: discard.iter().copied().collect(),
            whitelist: whitelist.iter().map(|s| s.to_string()).collect(),
            shield: NightShield {
                window: NightWindow::parse("00:00-08:00").unwrap(),
                release_at: NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
                tz: chrono_tz::Asia::Shanghai,
            },
        }
    }

    fn msg(template_id: i64, event_time: Millis, receivers: &[&str]) -> Message {
        Message {
            meta: Arc::new(MessageMeta {
                live: None,
                accounts: None,
                message_id: "m".into(),
                template_id,
                business_id: 0,
                biz_id: None,
                content: "{}".into(),
                event_time,
                seq: 0,
            }),
            receivers: receivers.iter().map(|s| Receiver::from(*s)).collect(),
        }
    }

    fn states(out: &[Verdict]) -> Vec<String> {
        out.iter()
            .map(|f| match f {
                Verdict::Row(r) => r.state.name().to_string(),
                Verdict::Pass(_) => "pass".into(),
                Verdict::Park(_) => "park".into(),
            })
            .collect()
    }

    // 2025-11-22 12:00 and 03:00 in Shanghai.
    const NOON: Millis = 1_763_784_000_000;
    const NIGHT: Millis = 1_763_751_600_000;

    #[test]
    fn table() {
        let cases: Vec<(Gate, Message, Vec<&str>)> = vec![
            (
                gate(&[], &[]),
                msg(1, NOON, &["13800138000"]),
                vec!["RECEIVE", "pass"],
            ),
            (
                gate(&[], &[]),
                msg(1, NOON, &["123"]),
                vec!["RECEIVE", "RECEIVER_INVALID"],
            ),
            (
                gate(&[1], &[]),
                msg(1, NOON, &["123"]),
                vec!["RECEIVE", "RECEIVER_INVALID"],
            ),
            (
                gate(&[1], &[]),
                msg(1, NOON, &["13800138000"]),
                vec!["RECEIVE", "DISCARD"],
            ),
            (
                gate(&[], &["x@y.cn"]),
                msg(2, NOON, &["a@y.cn"]),
                vec!["RECEIVE", "WHITE_LIST"],
            ),
            (
                gate(&[], &["x@y.cn"]),
                msg(2, NOON, &["x@y.cn"]),
                vec!["RECEIVE", "pass"],
            ),
            (
                gate(&[], &[]),
                msg(2, NIGHT, &["x@y.cn"]),
                vec!["RECEIVE", "NIGHT_SHIELD_NEXT_SEND", "park"],
            ),
            (
                gate(&[], &[]),
                msg(3, NIGHT, &["cid1", "cid2"]),
                vec!["RECEIVE", "NIGHT_SHIELD", "RECEIVE", "NIGHT_SHIELD"],
            ),
            (
                gate(&[], &[]),
                msg(3, NOON, &["cid1"]),
                vec!["RECEIVE", "pass"],
            ),
        ];
        for (i, (g, m, want)) in cases.into_iter().enumerate() {
            let mut out = Vec::new();
            g.judge(m, 0, &mut out);
            assert_eq!(states(&out), want, "case {i}");
        }
    }

    /// What passes or parks says whether the dedup rules judge it, as its template does.
    #[test]
    fn a_delivery_passes_with_its_templates_dedup() {
        for (template, receiver, dedup) in [(1, "13800138000", true), (3, "cid1", false)] {
            let mut out = Vec::new();
            gate(&[], &[]).judge(msg(template, NOON, &[receiver]), 0, &mut out);
            let Some(Verdict::Pass(d)) = out.last() else {
                panic!("{template}")
            };
            assert_eq!(d.dedup, Some(dedup), "template {template}");
        }
        // A parked one keeps it too (written with it to the park store).
        let mut out = Vec::new();
        gate(&[], &[]).judge(msg(2, NIGHT, &["x@y.cn"]), 0, &mut out);
        let Some(Verdict::Park(p)) = out.last() else {
            panic!("parked")
        };
        assert_eq!(p.delivery.dedup, Some(false));
    }

    fn rows(out: &[Verdict]) -> Vec<(String, String, Option<String>)> {
        out.iter()
            .map(|f| match f {
                Verdict::Row(r) => (
                    r.state.name().to_string(),
                    r.receiver.to_string(),
                    r.reason.clone(),
                ),
                Verdict::Pass(d) => ("pass".into(), d.receiver.to_string(), None),
                Verdict::Park(p) => ("park".into(), p.delivery.receiver.to_string(), None),
            })
            .collect()
    }

    /// Issue 11 item 4: phone receivers are digits, mobile, and go on normalised.
    #[test]
    fn phones_are_judged_and_normalised() {
        let mut out = Vec::new();
        gate(&[], &[]).judge(
            msg(
                1,
                NOON,
                &[
                    "1380013800a",
                    "+86 138 0013 8000",
                    "010-12345678",
                    "+44 7911 123456",
                ],
            ),
            0,
            &mut out,
        );
        let got = rows(&out);
        let want: Vec<(&str, &str, Option<&str>)> = vec![
            ("RECEIVE", "1380013800a", None),
            (
                "RECEIVER_INVALID",
                "1380013800a",
                Some("`a` at position 11"),
            ),
            ("RECEIVE", "13800138000", None),
            ("pass", "13800138000", None),
            ("RECEIVE", "010-12345678", None),
            (
                "RECEIVER_INVALID",
                "010-12345678",
                Some("not a mobile number"),
            ),
            ("RECEIVE", "+447911123456", None),
            ("pass", "+447911123456", None),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for ((state, receiver, reason), (ws, wr, wreason)) in got.iter().zip(&want) {
            assert_eq!((state.as_str(), receiver.as_str()), (*ws, *wr));
            match wreason {
                None => assert!(state != "RECEIVER_INVALID"),
                Some(w) => assert!(reason.as_deref().unwrap_or("").contains(w), "{reason:?}"),
            }
        }
        // The dedup keys are those of the normalised number.
        let Verdict::Pass(d) = &out[3] else { panic!() };
        assert_eq!(d.frequency_key, ids::frequency_key("13800138000", "sms"));
        // It says whether the dedup rules judge it: its template's `dedup`.
        assert_eq!(d.dedup, Some(true));
    }

    #[test]
    fn two_spellings_of_one_number_are_one_receiver() {
        let mut out = Vec::new();
        gate(&[], &[]).judge(
            msg(
                1,
                NOON,
                &["13800138000", "+86 138-0013-8000", "86 13800138000"],
            ),
            0,
            &mut out,
        );
        assert_eq!(states(&out), vec!["RECEIVE", "pass"]);
    }

    #[test]
    fn the_whitelist_matches_the_normalised_or_the_written_form() {
        for (listed, written) in [
            ("13800138000", "+86 138 0013 8000"),
            ("+86 138 0013 8000", "+86 138 0013 8000"),
        ] {
            let mut out = Vec::new();
            gate(&[], &[listed]).judge(msg(1, NOON, &[written]), 0, &mut out);
            assert_eq!(
                states(&out),
                vec!["RECEIVE", "pass"],
                "{listed} / {written}"
            );
        }
    }

    #[test]
    fn parked_release_is_next_morning() {
        let mut out = Vec::new();
        gate(&[], &[]).judge(msg(2, NIGHT, &["x@y.cn"]), 0, &mut out);
        let Verdict::Park(p) = &out[2] else { panic!() };
        assert_eq!(p.release_at, NIGHT + 6 * 3_600_000);
    }
}
