//! Several messages in one provider call, where the provider's API takes that
//! (`Provider::MESSAGES_PER_CALL`: Aliyun's `SendBatchSms`, 100 numbers each with its own
//! template parameters; Tencent's `SendSms` for messages of one content).
//!
//! Each message still goes through its account as before (reject list, rate-limit permits,
//! retry policy, recall book); only its calls are handed to the account's coalescer, one task
//! that takes what is waiting when a concurrency slot frees (never waiting for more: a message
//! alone is sent at once, by the provider's one-message call) and makes one call of it. While
//! every slot is busy the waiting messages pile up, so calls grow with the load. Slots count
//! calls here, not messages.
//!
//! A message's outcome never depends on the messages it shared a call with:
//! - a refusal the provider says may be one message's (`Provider::refuses_one`: an illegal
//!   number, a bad parameter, a number's own rate limit) is answered by making the call again
//!   in halves, one after the other, down to the message at fault alone (about 2·log2(n) calls
//!   more for one among n, made in the call's slot and without rate-limit permits), and a
//!   message alone down to its number at fault ([`Remote::send`]);
//! - any other error is the account's or the content's, the same for each message alone: each
//!   gets it, and its own retry policy decides;
//! - per-number answers go back to their messages, and a number is never twice in one call.
//!
//! Verification codes never wait to share a call (Aliyun asks for them to go by `SendSms`, as
//! batch calls may be delayed).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;

use tidings_model::{MsgType, Receiver};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{Account, Halt};
use crate::SendBatch;
use crate::provider::{Remote, each_of};
use crate::util::kit::Delivered;
use crate::util::retry::SendError;
use crate::util::stats::SendStats;

type Answer = Result<Delivered, SendError>;

/// What the coalescer answers a waiting message.
enum Reply {
    /// The provider's answer to the call it was in.
    Answer(Answer),
    /// The run halted while it waited for a slot: it was not sent.
    Halted,
}

/// A message's call waiting for the coalescer.
struct Waiting {
    batch: SendBatch,
    /// Given back unsent if the run halts first (its first attempt: a retry goes on, as a
    /// retry holding its slot in the account does).
    give_back: bool,
    answer: oneshot::Sender<Reply>,
}

/// An account's coalescer: its task runs on the runtime of the call that started it, and a
/// new one starts when that runtime is gone.
pub(super) struct Coalescer {
    remote: Arc<Remote>,
    /// The most receivers one call takes.
    limit: usize,
    queue: Mutex<Option<mpsc::UnboundedSender<Waiting>>>,
}

impl Coalescer {
    /// A coalescer for `remote` when its provider takes several messages per call.
    pub(super) fn new(remote: &Arc<Remote>, limit: Option<usize>) -> Option<Self> {
        Some(Coalescer {
            remote: remote.clone(),
            limit: limit.filter(|&l| l > 1)?,
            queue: Mutex::new(None),
        })
    }

    /// Whether a call of `msg_type` to `receivers` receivers goes through it (the account
    /// then takes no slot for the message: the coalescer takes one per call).
    pub(super) fn takes(&self, msg_type: MsgType, receivers: usize) -> bool {
        msg_type != MsgType::AuthCode && receivers < self.limit
    }

    /// One message's call for `account` (its attempt `first` or a retry), made alone or with
    /// others waiting beside it, each call holding one of the account's concurrency slots.
    /// `None`: the run halted while its first attempt waited for a slot, and it was not sent.
    pub(super) async fn call(
        &self,
        account: &Account,
        batch: &SendBatch,
        receivers: &[Receiver],
        first: bool,
    ) -> Option<Answer> {
        let (answer, answered) = oneshot::channel();
        let waiting = Waiting {
            batch: SendBatch {
                meta: batch.meta.clone(),
                channel: batch.channel,
                msg_type: batch.msg_type,
                event_time: batch.event_time,
                receivers: receivers.into(),
            },
            give_back: first,
            answer,
        };
        self.enqueue(account, waiting);
        match answered.await {
            Ok(Reply::Answer(a)) => Some(a),
            Ok(Reply::Halted) => None,
            // Its task ended with the message taken (its runtime shut down): it may have been
            // sent, as after a timeout; the retry policy decides.
            Err(_) => Some(Err(SendError::Transient(
                "the call was cut off (its runtime stopped)".into(),
            ))),
        }
    }

    /// Hands `w` to the task, starting one on this runtime (with `account`'s slots, halt and
    /// counters) if there is none or its runtime is gone.
    fn enqueue(&self, account: &Account, w: Waiting) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let w = match queue.as_ref() {
            Some(tx) => match tx.send(w) {
                Ok(()) => return,
                Err(mpsc::error::SendError(w)) => w,
            },
            None => w,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(
            self.remote.clone(),
            self.limit,
            account.slots.clone(),
            account.halt.clone(),
            account.stats.clone(),
            rx,
        ));
        // Just made, its receiver alive: the send cannot fail (if it did, the message's
        // answer is dropped and it is retried as cut off).
        let _ = tx.send(w);
        *queue = Some(tx);
    }
}

/// The coalescer's task: a slot, then the oldest waiting message and every other waiting one
/// that may share its call (the provider's `shares_call`, no number twice) and fits it; the
/// rest keep their order for the next slot. Once the run halts, first attempts still waiting
/// for a slot are answered [`Reply::Halted`] (as a message waiting for its slot in the account
/// gives up); retries go on.
async fn run(
    remote: Arc<Remote>,
    limit: usize,
    slots: Arc<Semaphore>,
    halt: Arc<Halt>,
    stats: Arc<SendStats>,
    mut rx: mpsc::UnboundedReceiver<Waiting>,
) {
    let mut waiting: VecDeque<Waiting> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match rx.recv().await {
                Some(w) => waiting.push_back(w),
                None => return,
            }
        }
        let slot = if halt.is_raised() {
            None
        } else {
            tokio::select! {
                s = slots.clone().acquire_owned() => match s {
                    Ok(s) => Some(s),
                    Err(_) => return,
                },
                () = halt.raised() => None,
            }
        };
        while let Ok(w) = rx.try_recv() {
            waiting.push_back(w);
        }
        if halt.is_raised() {
            give_back(&mut waiting);
            if waiting.is_empty() {
                continue;
            }
        }
        let slot = match slot {
            Some(s) => s,
            // Halted: the retries left wait for a slot as the account's own sends do.
            None => match slots.clone().acquire_owned().await {
                Ok(s) => s,
                Err(_) => return,
            },
        };
        let group = take_group(&remote, limit, &mut waiting);
        let (remote, stats) = (remote.clone(), stats.clone());
        tokio::spawn(async move {
            let _slot = slot;
            answer(&remote, &stats, group).await;
        });
    }
}

/// Answers [`Reply::Halted`] to the first attempts waiting; keeps the retries.
fn give_back(waiting: &mut VecDeque<Waiting>) {
    let mut keep = VecDeque::with_capacity(waiting.len());
    for w in waiting.drain(..) {
        if w.give_back {
            let _ = w.answer.send(Reply::Halted);
        } else {
            keep.push_back(w);
        }
    }
    *waiting = keep;
}

/// The next call's messages: the oldest waiting one, then, in order, every waiting one that
/// may share its call, has no number already in it (as the provider writes numbers), and fits
/// `limit` receivers. The scan stops when the call is full or after [`SCAN`] messages, so a
/// long queue costs each call a bounded look; those passed over keep their places.
fn take_group(remote: &Remote, limit: usize, waiting: &mut VecDeque<Waiting>) -> Vec<Waiting> {
    let first = waiting.pop_front().expect("a message waits");
    let mut numbers: HashSet<String> = first
        .batch
        .receivers
        .iter()
        .map(|r| remote.number(r))
        .collect();
    let mut group = vec![first];
    let mut passed = Vec::new();
    let mut looked = 0;
    while numbers.len() < limit && looked < SCAN {
        let Some(w) = waiting.pop_front() else { break };
        looked += 1;
        let keys: Option<Vec<String>> = (numbers.len() + w.batch.receivers.len() <= limit
            && remote.shares_call(&group[0].batch, &w.batch))
        .then(|| w.batch.receivers.iter().map(|r| remote.number(r)).collect());
        match keys {
            Some(keys) if !keys.iter().any(|k| numbers.contains(k)) => {
                numbers.extend(keys);
                group.push(w);
            }
            _ => passed.push(w),
        }
    }
    for w in passed.into_iter().rev() {
        waiting.push_front(w);
    }
    group
}

/// The most waiting messages one call looks at.
const SCAN: usize = 1024;

/// Makes one call for `group` and answers each of its messages.
fn answer<'a>(
    remote: &'a Remote,
    stats: &'a SendStats,
    mut group: Vec<Waiting>,
) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        if group.len() == 1 {
            let w = group.pop().expect("one");
            let a = remote.send(&w.batch, &w.batch.receivers).await;
            let _ = w.answer.send(Reply::Answer(a));
            return;
        }
        let calls: Vec<(&SendBatch, &[Receiver])> = group
            .iter()
            .map(|w| (&w.batch, &w.batch.receivers[..]))
            .collect();
        stats.shared_calls.fetch_add(1, Ordering::Relaxed);
        stats
            .shared_call_messages
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        let shared = remote.send_many(&calls).await;
        drop(calls);
        match shared {
            // Perhaps one message's fault: the call again in halves, one after the other (in
            // this call's slot), down to the message at fault alone.
            Err(e) if remote.refuses_one(&e) => {
                let second = group.split_off(group.len() / 2);
                answer(remote, stats, group).await;
                answer(remote, stats, second).await;
            }
            Err(e) => {
                for w in group {
                    let _ = w.answer.send(Reply::Answer(Err(e.clone())));
                }
            }
            Ok(d) => {
                let counts: Vec<usize> = group.iter().map(|w| w.batch.receivers.len()).collect();
                for (w, a) in group.into_iter().zip(split(d, &counts)) {
                    let _ = w.answer.send(Reply::Answer(Ok(a)));
                }
            }
        }
    })
}

/// A shared call's answer, per message (`counts`: each message's receivers, in call order).
fn split(d: Delivered, counts: &[usize]) -> Vec<Delivered> {
    let per_receiver = |each: Vec<Result<(), SendError>>| {
        let mut each = each.into_iter();
        counts
            .iter()
            .map(|&n| each_of(Ok(Delivered::Each(each.by_ref().take(n).collect())), n))
            .collect::<Vec<_>>()
    };
    match d {
        Delivered::All => counts.iter().map(|_| Delivered::All).collect(),
        Delivered::Each(each) => per_receiver(each)
            .into_iter()
            .map(Delivered::Each)
            .collect(),
        Delivered::Tracked { reference, each } => {
            let each = match each {
                Some(each) => per_receiver(each).into_iter().map(Some).collect(),
                None => vec![None; counts.len()],
            };
            each.into_iter()
                .map(|each| Delivered::Tracked {
                    reference: reference.clone(),
                    each,
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_answer_is_split_by_message() {
        let each = vec![Ok(()), Err(SendError::Permanent("bad".into())), Ok(())];
        let parts = split(Delivered::Each(each), &[1, 2]);
        assert_eq!(parts.len(), 2);
        assert!(matches!(&parts[0], Delivered::Each(v) if v == &[Ok(())]));
        assert!(
            matches!(&parts[1], Delivered::Each(v) if v == &[Err(SendError::Permanent("bad".into())), Ok(())])
        );
        let short = split(Delivered::Each(vec![Ok(())]), &[1, 1]);
        assert!(matches!(&short[1], Delivered::Each(v) if v[0].is_err()));
        let all = split(Delivered::All, &[3, 1, 2]);
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(|d| matches!(d, Delivered::All)));
    }
}
