//! Several messages in one provider call, where the provider's API takes that
//! (`Provider::MESSAGES_PER_CALL`: Aliyun's `SendBatchSms`, 100 numbers each with its own
//! template parameters).
//!
//! Each message still goes through its account as before (reject list, rate-limit permits,
//! retry policy, recall book); only its calls are handed to the account's coalescer, one task
//! that takes what is waiting when a concurrency slot frees (never waiting for more: a message
//! alone is sent at once, by the provider's one-message call) and makes one call of it. While
//! every slot is busy the waiting messages pile up, so calls grow with the load.
//!
//! A message's outcome never depends on the messages it shared a call with: when a shared call
//! is refused as permanent (one bad number or parameter refuses the whole call), it is made
//! again in halves down to the bad message alone, so each gets the answer it would have had by
//! itself. A transient
//! or credentials error is the provider's or the account's, the same for each message: each
//! gets it, and its own retry policy decides. Verification codes are never held to share a
//! call (Aliyun asks for them to go by `SendSms`, as batch calls may be delayed).

use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;

use tidings_model::{MsgType, Receiver};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::Halt;
use crate::SendBatch;
use crate::provider::Remote;
use crate::util::kit::Delivered;
use crate::util::retry::SendError;

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
    answer: oneshot::Sender<Reply>,
}

/// An account's coalescer: started on the first call that uses it, on that call's runtime.
pub(super) struct Coalescer {
    remote: Arc<Remote>,
    /// The most receivers one call takes.
    limit: usize,
    queue: OnceLock<mpsc::UnboundedSender<Waiting>>,
}

impl Coalescer {
    /// A coalescer for `remote` when its provider takes several messages per call.
    pub(super) fn new(remote: &Arc<Remote>, limit: Option<usize>) -> Option<Self> {
        Some(Coalescer {
            remote: remote.clone(),
            limit: limit.filter(|&l| l > 1)?,
            queue: OnceLock::new(),
        })
    }

    /// Whether a call of `msg_type` to `receivers` receivers goes through it (the account
    /// then takes no slot for the message: the coalescer takes one per call).
    pub(super) fn takes(&self, msg_type: MsgType, receivers: usize) -> bool {
        msg_type != MsgType::AuthCode && receivers < self.limit
    }

    /// One message's call, made alone or with others waiting beside it, each call holding
    /// one of the account's concurrency `slots`. `None`: the run halted while it waited for a
    /// slot, and it was not sent.
    pub(super) async fn call(
        &self,
        slots: &Arc<Semaphore>,
        halt: &Arc<Halt>,
        batch: &SendBatch,
        receivers: &[Receiver],
    ) -> Option<Answer> {
        let (answer, answered) = oneshot::channel();
        let waiting = Waiting {
            batch: SendBatch {
                meta: batch.meta.clone(),
                channel: batch.channel,
                msg_type: batch.msg_type,
                receivers: receivers.to_vec(),
            },
            answer,
        };
        if self.queue(slots, halt).send(waiting).is_ok() {
            match answered.await {
                Ok(Reply::Answer(a)) => return Some(a),
                Ok(Reply::Halted) => return None,
                Err(_) => {}
            }
        }
        // The coalescer's runtime is gone (accounts outlived the runtime that started it):
        // the call is made here, alone.
        Some(self.remote.send(batch, receivers).await)
    }

    fn queue(&self, slots: &Arc<Semaphore>, halt: &Arc<Halt>) -> &mpsc::UnboundedSender<Waiting> {
        self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run(
                self.remote.clone(),
                self.limit,
                slots.clone(),
                halt.clone(),
                rx,
            ));
            tx
        })
    }
}

/// The coalescer's task: a slot, then everything waiting that fits one call. Once the run
/// halts, what still waits for a slot is answered [`Reply::Halted`] (as a message waiting for
/// its slot in the account gives up).
async fn run(
    remote: Arc<Remote>,
    limit: usize,
    slots: Arc<Semaphore>,
    halt: Arc<Halt>,
    mut rx: mpsc::UnboundedReceiver<Waiting>,
) {
    let mut next: Option<Waiting> = None;
    loop {
        let first = match next.take() {
            Some(w) => w,
            None => match rx.recv().await {
                Some(w) => w,
                None => return,
            },
        };
        if halt.is_raised() {
            let _ = first.answer.send(Reply::Halted);
            continue;
        }
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => return,
            },
            () = halt.raised() => {
                let _ = first.answer.send(Reply::Halted);
                continue;
            }
        };
        let mut receivers = first.batch.receivers.len();
        let mut group = vec![first];
        while let Ok(w) = rx.try_recv() {
            if receivers + w.batch.receivers.len() > limit {
                next = Some(w);
                break;
            }
            receivers += w.batch.receivers.len();
            group.push(w);
        }
        let remote = remote.clone();
        tokio::spawn(async move {
            let _slot = slot;
            answer(&remote, group).await;
        });
    }
}

/// Makes one call for `group` and answers each of its messages.
fn answer(remote: &Remote, mut group: Vec<Waiting>) -> BoxFuture<'_, ()> {
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
        let shared = remote.send_many(&calls).await;
        drop(calls);
        match shared {
            // One bad message refuses the whole call: the call is made again in halves, down
            // to the bad message alone (a bad one among n costs about 2·log2(n) calls more,
            // and each message ends with the answer it would have had by itself).
            Err(SendError::Permanent(_)) => {
                let second = group.split_off(group.len() / 2);
                futures_util::future::join(answer(remote, group), answer(remote, second)).await;
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
            .map(|&n| {
                (0..n)
                    .map(|_| {
                        each.next().unwrap_or_else(|| {
                            Err(SendError::Transient(
                                "the provider answered for fewer receivers than it was sent".into(),
                            ))
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    match d {
        Delivered::All => counts.iter().map(|_| Delivered::All).collect(),
        Delivered::Each(each) => per_receiver(each)
            .into_iter()
            .map(Delivered::Each)
            .collect(),
        Delivered::Tracked { reference, each } => match each {
            None => counts
                .iter()
                .map(|_| Delivered::Tracked {
                    reference: reference.clone(),
                    each: None,
                })
                .collect(),
            Some(each) => per_receiver(each)
                .into_iter()
                .map(|e| Delivered::Tracked {
                    reference: reference.clone(),
                    each: Some(e),
                })
                .collect(),
        },
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
