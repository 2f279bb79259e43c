//! Account groups: `[groups.NAME]` spreads a template's messages over accounts of one
//! channel by weight (`accounts = { tencent-sms = 70, aliyun-sms = 30 }`), and a receiver that
//! one member fails (after that member's own retries) is tried with the next member. The
//! pick is a function of the message id, so a replayed message goes the same way.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use tidings_model::Channel;

use crate::account::Accounts;
use crate::{Outcome, Outcomes, SendBatch};

/// One `[groups.NAME]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// The channel every member sends on.
    pub channel: Channel,
    /// Member accounts and their weights. Example: `{ tencent-sms = 70, aliyun-sms = 30 }`.
    pub accounts: BTreeMap<String, u32>,
}

/// Where a template's deliveries go: one account, or a group's members by weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The members' accounts, heaviest first (a route of one account lends this as its order).
    accounts: Vec<usize>,
    /// Their weights, in the same order.
    weights: Vec<u32>,
}

/// FNV-1a: a stable hash of the message id (the same in every run and build).
fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Route {
    /// Every delivery to one account.
    pub fn single(account: usize) -> Route {
        Route::weighted([(account, 1)])
    }

    /// A group's members (zero weights are left out).
    pub fn weighted(members: impl IntoIterator<Item = (usize, u32)>) -> Route {
        let mut members: Vec<(usize, u32)> = members.into_iter().filter(|m| m.1 > 0).collect();
        members.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let (accounts, weights) = members.into_iter().unzip();
        Route { accounts, weights }
    }

    /// The accounts a message tries, in order: the first picked by weight from the message
    /// id, then the others, heaviest first (a route of one account lends its list).
    pub fn order(&self, message_id: &str) -> Cow<'_, [usize]> {
        if self.accounts.len() <= 1 {
            return Cow::Borrowed(&self.accounts);
        }
        let total: u64 = self.weights.iter().map(|&w| w as u64).sum();
        let mut x = stable_hash(message_id) % total;
        let first = self
            .weights
            .iter()
            .position(|&w| {
                if x < w as u64 {
                    true
                } else {
                    x -= w as u64;
                    false
                }
            })
            .unwrap_or(0);
        let mut order = vec![self.accounts[first]];
        order.extend(
            self.accounts
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != first)
                .map(|(_, &a)| a),
        );
        Cow::Owned(order)
    }
}

impl Accounts {
    /// Sends `batch` through the accounts of `order`: the receivers the first fails go to the
    /// second, and so on. A receiver every account failed fails with each one's reason.
    pub async fn send_routed(&self, order: &[usize], batch: &SendBatch) -> Outcomes {
        // One account (no failover group): its outcomes as they are, without copying the
        // receivers for a second member (the same outcomes the loop below gives).
        if let [account] = *order {
            return self.send_with(account, batch).await;
        }
        let n = batch.receivers.len();
        let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
        let mut reasons: Vec<Vec<String>> = vec![Vec::new(); n];
        let mut pending: Vec<usize> = (0..n).collect();
        for &account in order {
            if pending.is_empty() {
                break;
            }
            let part = SendBatch {
                meta: batch.meta.clone(),
                channel: batch.channel,
                msg_type: batch.msg_type,
                event_time: batch.event_time,
                receivers: pending
                    .iter()
                    .map(|&i| batch.receivers[i].clone())
                    .collect(),
            };
            // Boxed: a failover group's sends do not make every send's future larger.
            let got = Box::pin(self.send_with(account, &part)).await;
            let mut still = Vec::new();
            for (&i, outcome) in pending.iter().zip(got) {
                match outcome {
                    Ok(()) => outcomes[i] = Some(Ok(())),
                    Err(why) => {
                        reasons[i].push(why);
                        still.push(i);
                    }
                }
            }
            pending = still;
        }
        for i in pending {
            outcomes[i] = Some(Err(reasons[i].join("; then ")));
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err("no account to send with".into())))
            .collect()
    }

    /// Sends `batch` with one account, at its version at the message's event time (a change
    /// record's, or the job file's); every receiver fails with the reason when that version
    /// cannot be used.
    async fn send_with(&self, account: usize, batch: &SendBatch) -> Outcomes {
        let live = batch.meta.account(&self.get(account).name);
        match self.pick(account, live) {
            Ok(a) => a.send(batch).await,
            Err(why) => batch.receivers.iter().map(|_| Err(why.clone())).collect(),
        }
    }
}

/// What a recall of one message (one provider call of it) came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recalled {
    /// The message.
    pub message_id: String,
    /// Its businessId (0 when no account knew the message).
    pub business_id: i64,
    /// The receivers it had reached (none when no account knew it).
    pub receivers: Vec<String>,
    /// The provider's answer.
    pub result: Result<(), String>,
}

impl Accounts {
    /// Recalls `message_ids` (none: every recallable message of the template) through the
    /// accounts of `order`: each message with the account that sent it, as sent at or before
    /// the recall's event time `up_to` and within the provider's window (by the wall clock).
    pub async fn recall_routed(
        &self,
        order: &[usize],
        template_id: i64,
        message_ids: &[String],
        up_to: i64,
        live: Option<&tidings_model::message::LiveAccounts>,
    ) -> Vec<Recalled> {
        let now = crate::util::kit::now_ms();
        let mut seen = std::collections::HashSet::new();
        let ids: Vec<String> = if message_ids.is_empty() {
            order
                .iter()
                .flat_map(|&a| self.get(a).recallable(template_id, now, up_to))
                .filter(|id| seen.insert(id.clone()))
                .collect()
        } else {
            message_ids
                .iter()
                .filter(|id| seen.insert(id.to_string()))
                .cloned()
                .collect()
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            // Every member: receivers failed over were sent (and are recalled) by another.
            let mut known = false;
            for &a in order {
                // The version at the recall's event time; one that cannot be built here
                // recalls with the job file's (the recall book is the account's, not the
                // version's).
                let version = live.and_then(|l| l.get(&self.get(a).name));
                let account = self
                    .pick(a, version)
                    .unwrap_or(crate::account::Picked::Base(self.get(a)));
                let calls = account.recall(&id, template_id, now, up_to).await;
                known |= !calls.is_empty();
                out.extend(calls.into_iter().map(|(entry, result)| Recalled {
                    message_id: id.clone(),
                    business_id: entry.business_id,
                    receivers: entry.receivers,
                    result,
                }));
            }
            if known {
                continue;
            }
            let names: Vec<&str> = order.iter().map(|&a| self.get(a).name.as_str()).collect();
            out.push(Recalled {
                message_id: id.clone(),
                business_id: 0,
                receivers: Vec::new(),
                result: Err(format!(
                    "message {id} is not recallable by {}: not sent by it before the recall's event time, already recalled, or sent more than 24 hours ago",
                    names.join(", ")
                )),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn picks_follow_the_weights_and_the_rest_follow_as_failover() {
        let route = Route::weighted([(0, 70), (1, 30), (2, 0)]);
        let mut first = [0usize; 3];
        for i in 0..10_000 {
            let order = route.order(&format!("m-{i}"));
            assert_eq!(order.len(), 2, "a zero weight is no member");
            assert_ne!(order[0], order[1]);
            first[order[0]] += 1;
        }
        assert!((6_600..7_400).contains(&first[0]), "{first:?}");
        assert_eq!(route.order("m-1"), route.order("m-1"), "stable per message");
        assert_eq!(*Route::single(4).order("x"), [4]);
    }

    #[tokio::test]
    async fn a_failed_over_receiver_is_recalled_through_the_member_that_sent_it() {
        let dir = tempfile::tempdir().unwrap();
        let configs: BTreeMap<String, crate::account::AccountConfig> = toml::from_str(&format!(
            "[a]\nchannel = \"enterprise_we_chat\"\nprovider = \"outbox\"\ndir = {:?}\nreject_receivers = [\"u2\"]\n\
             [b]\nchannel = \"enterprise_we_chat\"\nprovider = \"outbox\"\ndir = {:?}\n",
            dir.path().join("a"),
            dir.path().join("b")
        ))
        .unwrap();
        let accounts = Accounts::build(&configs, dir.path(), 86).unwrap();
        let order = [accounts.index("a").unwrap(), accounts.index("b").unwrap()];
        let batch = SendBatch {
            meta: std::sync::Arc::new(tidings_model::MessageMeta {
                live: None,
                accounts: None,
                message_id: "m-1".into(),
                template_id: 6,
                business_id: 1,
                biz_id: None,
                content: "{}".into(),
                event_time: 0,
                seq: 0,
            }),
            channel: Channel::EnterpriseWeChat,
            msg_type: tidings_model::MsgType::Notice,
            event_time: 0,
            receivers: vec!["u1".into(), "u2".into()].into(),
        };
        // a refuses u2; b sends it.
        assert_eq!(
            accounts.send_routed(&order, &batch).await[..],
            [Ok(()), Ok(())]
        );
        let recalled = accounts
            .recall_routed(&order, 6, &["m-1".into()], 0, None)
            .await;
        let mut reached: Vec<String> = recalled
            .iter()
            .filter(|r| r.result.is_ok())
            .flat_map(|r| r.receivers.clone())
            .collect();
        reached.sort();
        assert_eq!(reached, ["u1", "u2"], "{recalled:?}");
        // Another template's recall does not take it back.
        let other = accounts
            .recall_routed(&order, 7, &["m-2".into()], 0, None)
            .await;
        assert!(other[0].result.is_err());
    }
}
