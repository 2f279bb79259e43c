//! The send stage (steps 9–10): deliveries go to their account's provider on the tokio runtime;
//! the operator keeps each epoch's capability until every send of that epoch has finished and
//! its SEND_SUCCESS / SEND_FAIL rows are emitted, so the frontier after this stage means
//! "sent".

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings_model::MessageMeta;
use tidings_model::ids::FastMap;
use tidings_model::message::Receivers;
use tidings_model::{Delivery, EventRow, State, Templates};
use tidings_operators::{Clock, Epoch, RecallOrder, Tracked};
use tidings_sinks::SendBatch;
use tidings_sinks::account::{Accounts, NOT_SENT_HALTED};
use tidings_sinks::route::Route;

use crate::backlog::Queues;
use crate::health::Health;
use crate::track::Counts;

/// A send's way back to its worker; the run's count of outstanding sends drops as it goes
/// (however the task ends).
struct Returned {
    tx: mpsc::Sender<Done>,
    health: Arc<Health>,
}

/// A send task's epoch, its rows, and whether one of its sends gave up (the run halted, or a
/// stop came while a `kafka`-queued account's send waited for its permit): no row, not sent.
type Done = (Epoch, Vec<EventRow>, bool);

impl Returned {
    fn send(&self, v: Done) -> Result<(), mpsc::SendError<Done>> {
        self.tx.send(v)
    }
}

impl Drop for Returned {
    fn drop(&mut self) {
        self.health.send_returned();
    }
}
use tidings_operators::container::{self, Trimming};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::{ProbeHandle, StreamVec};

/// What the send stage needs, shared by all workers.
pub struct SendContext {
    /// The job's accounts.
    pub accounts: Accounts,
    /// Template id → its account, or its group's accounts.
    pub route_of: FastMap<i64, Route>,
    /// Account or group name → its route (for templates changed while the job runs).
    pub route_by_name: FastMap<String, Route>,
    /// Templates (for channels).
    pub templates: Arc<Templates>,
    /// The runtime sends run on.
    pub runtime: tokio::runtime::Handle,
    /// Accounts queued in their own Kafka topic ([`crate::backlog`]).
    pub queues: Arc<Queues>,
    /// The run's health: no new send starts once a worker failed or the run is halted.
    pub health: Arc<Health>,
    /// Tracking's state: no new send starts while a tracking write is failing.
    pub counts: Arc<Mutex<Counts>>,
}

impl SendContext {
    /// The route of a message: its live template's account, else its job-file template's;
    /// `None` when the job no longer has that account (a parked or queued message judged with
    /// a version from before a restart whose job file dropped the account).
    pub fn route(&self, meta: &MessageMeta) -> Option<&Route> {
        match &meta.live {
            Some(l) => self.route_by_name.get(&l.template.account),
            None => self.route_of.get(&meta.template_id),
        }
    }

    /// Whether new sends must wait: tracking cannot take their rows, or the run is ending.
    pub fn hold(&self) -> bool {
        self.health.must_leave()
            || self
                .counts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .tracking_failing_workers
                > 0
    }
}

/// Which dataflow a send stage serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendMode {
    /// The main graph: deliveries of `kafka`-queued accounts are handed to their topic.
    Main,
    /// The account-topic graph: every delivery is sent, and its room given back.
    Accounts,
}

/// A send task's messages: consecutive receivers of one request each, laid end to end.
struct Messages {
    deliveries: Vec<Delivery>,
    /// Where each message's deliveries end in `deliveries`.
    ends: Vec<usize>,
}

impl Messages {
    fn each(&self) -> impl Iterator<Item = &[Delivery]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(a, &b)| &self.deliveries[a..b])
    }
}

/// Groups a stamp's deliveries by message (consecutive receivers of one request), in tasks
/// of at most `per_task` messages (moved, not copied into a list per message).
fn by_message<'a>(
    batches: impl IntoIterator<Item = &'a mut Vec<Delivery>>,
    per_task: usize,
) -> Vec<Messages> {
    let batches: Vec<&mut Vec<Delivery>> = batches.into_iter().collect();
    // Deliveries not yet placed: a task's lists get room for as many as it can take of them
    // (exact when each message has one receiver), not a list grown by doubling.
    let mut left: usize = batches.iter().map(|b| b.len()).sum();
    let mut tasks: Vec<Messages> = Vec::with_capacity(left.div_ceil(per_task.max(1)));
    for batch in batches {
        for d in batch.drain(..) {
            let task = match tasks.last_mut() {
                Some(t)
                    if t.deliveries
                        .last()
                        .is_some_and(|l| l.meta.message_id == d.meta.message_id) =>
                {
                    t
                }
                // `ends` holds the task's finished messages: the one about to end is the last.
                Some(t) if t.ends.len() + 1 < per_task => {
                    t.ends.push(t.deliveries.len());
                    t
                }
                _ => {
                    let room = left.min(per_task);
                    tasks.push(Messages {
                        deliveries: Vec::with_capacity(room),
                        ends: Vec::with_capacity(room),
                    });
                    tasks.last_mut().expect("pushed")
                }
            };
            task.deliveries.push(d);
            left -= 1;
        }
    }
    for t in &mut tasks {
        t.ends.push(t.deliveries.len());
    }
    tasks
}

/// A message's SEND_SUCCESS / SEND_FAIL rows: one held in place (most messages have one
/// receiver: no list allocated for it).
type SendRows = smallvec::SmallVec<[EventRow; 1]>;

/// Sends one message's deliveries through its route (or, on the main graph, hands them to
/// their account's topic); gives their SEND_SUCCESS / SEND_FAIL rows (none when handed off).
/// And whether a send gave up (in the account-topic graph it is also told to
/// [`Queues::gave_up`]: its record is read again by the next run). Returned, not set through
/// a reference: one held across the awaits would grow every send's future past 1 KiB.
async fn send_one(
    ctx: &SendContext,
    mode: SendMode,
    clock: Clock,
    ds: &[Delivery],
) -> (SendRows, bool) {
    let order = ctx
        .route(&ds[0].meta)
        .map(|r| r.order(&ds[0].meta.message_id))
        .unwrap_or_default();
    let Some(&account) = order.first() else {
        let account = ds[0]
            .meta
            .template(&ctx.templates)
            .map_or("?", |t| t.account.as_str());
        let reason = format!(
            "template {} version {} sends through account `{account}`, which the job does not have (any more): not sent",
            ds[0].meta.template_id,
            ds[0].meta.template_version()
        );
        let now = clock.now_ms();
        let rows = ds
            .iter()
            .map(|d| EventRow::of(d, State::SendFail, Some(reason.clone()), now))
            .collect();
        return (rows, false);
    };
    let rest: Vec<Delivery>;
    let ds = if mode == SendMode::Main && ctx.queues.in_kafka(account) {
        // Boxed: only messages of queued accounts carry the hand-off's future.
        match Box::pin(ctx.queues.hand_off(account, ds)).await {
            // Durable in the account's topic: the epoch may go.
            Ok(()) => return (SendRows::new(), false),
            // Never lost: those not acknowledged are sent from here instead, holding the epoch
            // (the others are in the topic and sent from there).
            Err((left, e)) => {
                tracing::warn!(
                    "account topic: {e}; sending {} of {} deliveries directly",
                    left.len(),
                    ds.len()
                );
                rest = left.into_iter().map(|i| ds[i].clone()).collect();
                &rest[..]
            }
        }
    } else {
        ds
    };
    if ds.is_empty() {
        return (SendRows::new(), false);
    }
    let (channel, msg_type) = ds[0]
        .meta
        .template(&ctx.templates)
        .map(|t| (t.channel, t.msg_type))
        .expect("validated template");
    let batch = SendBatch {
        meta: ds[0].meta.clone(),
        channel,
        msg_type,
        event_time: ds[0].event_time,
        // One receiver put in place (collecting into the SmallVec goes through its `extend`).
        receivers: match ds {
            [d] => Receivers::from_buf([d.receiver.clone()]),
            _ => ds.iter().map(|d| d.receiver.clone()).collect(),
        },
    };
    let outcomes = ctx.accounts.send_routed(&order, &batch).await;
    if mode == SendMode::Accounts {
        ctx.queues.sent(account, ds.len());
    }
    let now = clock.now_ms();
    // Pushed into a list of the rows' size (collected, the outcomes' list was tried in place
    // first and then grown: a realloc per send); one row held in place.
    let mut rows = SendRows::with_capacity(ds.len());
    let mut gave_up = false;
    for (d, o) in ds.iter().zip(outcomes) {
        rows.push(match o {
            Ok(()) => EventRow::of(d, State::SendSuccess, None, now),
            // Not sent as the run halted (or a stop came for a queued account): no row; a
            // new run sends it.
            Err(reason) if reason.ends_with(NOT_SENT_HALTED) => {
                gave_up = true;
                if mode == SendMode::Accounts {
                    ctx.queues.gave_up(account, d);
                }
                continue;
            }
            Err(reason) => EventRow::of(d, State::SendFail, Some(reason), now),
        });
    }
    (rows, gave_up)
}

/// Messages one send task carries: a stamp's messages go to the runtime in tasks of at most
/// this many, each running its sends together (a task per message cost a spawn, a channel
/// message and a wake-up of the worker each; one task per stamp would keep a burst's sends
/// on one runtime thread).
const MESSAGES_PER_TASK: usize = 256;

/// Sends a task's messages together (each waits for its account's permits and slot as
/// before); their rows, in the order the sends finished.
async fn send_some(
    ctx: &SendContext,
    mode: SendMode,
    clock: Clock,
    messages: &Messages,
) -> (Vec<EventRow>, bool) {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    use std::future::Future;
    use std::task::Poll;
    // Each send is polled once here first: one that finishes at once (a local provider, a
    // refusal, a halted run) gives its rows without joining the set of sends in progress (a
    // task of its own there, linked, woken and unlinked: a fifth of the send threads' time in
    // the 1M-request bench). The rest wait in the set, polled from then on with its wakers.
    let mut gave_up = false;
    let (mut rows, waiting) = std::future::poll_fn(|cx| {
        let (mut rows, mut waiting) = (Vec::new(), Vec::new());
        // The box of a send that finished at once, its next send written into it (no
        // allocation and free per message when sends finish at once).
        let mut spare = None;
        for ds in messages.each() {
            // Boxed: its future (1,016 bytes in a release build) stays within mimalloc's small
            // sizes (up to 1 KiB), whose allocation is the fast one (1,032 bytes cost ~70
            // instructions more a send, bench/MEASURED.md).
            let next = send_one(ctx, mode, clock, ds);
            let mut send = match spare.take() {
                Some(mut done) => {
                    std::pin::Pin::set(&mut done, next);
                    done
                }
                None => Box::pin(next),
            };
            match send.as_mut().poll(cx) {
                Poll::Ready((r, g)) => {
                    rows.extend(r);
                    gave_up |= g;
                    spare = Some(send);
                }
                Poll::Pending => waiting.push(send),
            }
        }
        Poll::Ready((rows, waiting))
    })
    .await;
    let mut sends: FuturesUnordered<_> = waiting.into_iter().collect();
    while let Some((r, g)) = sends.next().await {
        rows.extend(r);
        gave_up |= g;
    }
    (rows, gave_up)
}

/// Sends every delivery; emits its SEND_SUCCESS / SEND_FAIL row.
pub fn send<'s>(
    deliveries: StreamVec<'s, Epoch, Delivery>,
    ctx: Arc<SendContext>,
    clock: Clock,
    mode: SendMode,
) -> StreamVec<'s, Epoch, Tracked> {
    let scope = deliveries.scope();
    deliveries.unary_frontier::<Trimming<Tracked>, _, _, _>(Pipeline, "Send", move |_, info| {
        let activator = Arc::new(scope.worker().sync_activator_for(info.address.to_vec()));
        let recheck = scope.activator_for(info.address.clone());
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        // Per epoch: its capability, the number of send tasks still out, and whether a send
        // of it gave up.
        let mut inflight: BTreeMap<Epoch, (Capability<Epoch>, usize, bool)> = BTreeMap::new();
        move |(input, frontier), output| {
            // Held: deliveries stay in the input (their epochs with them, so the source's
            // backpressure stops reading) until tracking can take rows again.
            let hold = ctx.hold();
            if hold {
                recheck.activate_after(Duration::from_millis(20));
            } else {
                input.for_each_stamp(|cap, batches| {
                    let Some(&epoch) = cap.least() else { return };
                    let entry = inflight
                        .entry(epoch)
                        .or_insert_with(|| (cap.delayed(&epoch, 0), 0, false));
                    for messages in by_message(batches, MESSAGES_PER_TASK) {
                        entry.1 += 1;
                        let ctx = ctx.clone();
                        let done = Returned {
                            tx: done_tx.clone(),
                            health: ctx.health.clone(),
                        };
                        ctx.health.send_started();
                        let activator = activator.clone();
                        ctx.clone().runtime.spawn(async move {
                            let (rows, gave_up) = send_some(&ctx, mode, clock, &messages).await;
                            // The worker may have stopped only if the job is being torn down.
                            let _ = done.send((epoch, rows, gave_up));
                            let _ = activator.activate();
                        });
                    }
                });
            }
            // Completions are gathered per epoch and given in one session each: a session per
            // completion would ship one nearly empty container per provider call.
            let mut finished: BTreeMap<Epoch, Vec<EventRow>> = BTreeMap::new();
            while let Ok((epoch, rows, gave_up)) = done_rx.try_recv() {
                finished.entry(epoch).or_default().extend(rows);
                let entry = inflight
                    .get_mut(&epoch)
                    .expect("an epoch with sends out keeps its entry");
                entry.1 -= 1;
                entry.2 |= gave_up && mode == SendMode::Main;
            }
            for (epoch, rows) in finished {
                output
                    .session_with_builder(&inflight[&epoch].0)
                    .give_iterator(rows.into_iter().map(Tracked::Row));
            }
            // An epoch of the main graph with a send that gave up is held for good: the send
            // wrote no row, and were its epoch let go, the "done" frontier would pass it and a
            // cut complete without it (its offsets committed: lost). Held, the frontier stays
            // before it on every process, and a new run sends it. (The account-topic graph
            // lets its epochs go: its reader commits short of what gave up, `Queues::gave_up`.)
            inflight
                .retain(|epoch, (_, out, held)| *out > 0 || *held || frontier.less_equal(epoch));
        }
    })
}

/// One process's answer to a recall order: `known` rows are its provider calls of a message
/// (recalled or not); an unknown row says it made none. A row is keyed by its order's source.
type Answer = (String, bool, EventRow);

/// Runs `recall` requests once every send of their epoch and the ones before it has finished
/// on every worker (the `sent` probe has passed the epoch), so a recall always finds the
/// messages sent before it. Emits RECALL_SUCCESS / RECALL_FAIL rows, holding each epoch until
/// its recalls are done.
///
/// Each process keeps its own recall books (the calls its workers made), so in
/// [`SendMode::Main`] an order goes to the first worker of every process (`threads` workers
/// each), each recalls the calls its process made, and one worker per order merges the
/// answers: a message is "not recallable" only if no process knew it. The account topics'
/// graph (one reader, in process 0) runs a recall where it was read.
///
/// In the main graph a recall for a `kafka`-queued account is handed to the account's topic
/// instead (by process 0), behind the deliveries handed off before it (which may not be sent
/// yet): the account-topic dataflow runs it (`SendMode::Accounts`) once it has sent them.
pub fn recall<'s>(
    orders: StreamVec<'s, Epoch, RecallOrder>,
    ctx: Arc<SendContext>,
    clock: Clock,
    sent: ProbeHandle<Epoch>,
    mode: SendMode,
    threads: usize,
) -> StreamVec<'s, Epoch, Tracked> {
    let scope = orders.scope();
    let (index, peers) = (scope.index(), scope.peers());
    let threads = threads.clamp(1, peers);
    let first_process = index < threads;
    let targets: Vec<usize> = match mode {
        SendMode::Main => (0..peers).step_by(threads).collect(),
        SendMode::Accounts => vec![index],
    };
    let spread = orders.flat_map(move |o| {
        let targets = targets.clone();
        targets.into_iter().map(move |w| (w, o.clone()))
    });
    let answers = spread.unary_frontier::<Trimming<Answer>, _, _, _>(
        container::exchange(|(w, _): &(usize, RecallOrder)| *w as u64),
        "Recall",
        move |_, info| {
            let activator = Arc::new(scope.worker().sync_activator_for(info.address.to_vec()));
            let later = scope.activator_for(info.address.clone());
            let (done_tx, done_rx) = mpsc::channel::<(Epoch, Vec<Answer>)>();
            // Per epoch: its capability and the orders still to run.
            let mut epochs: BTreeMap<Epoch, (Capability<Epoch>, Vec<RecallOrder>)> =
                BTreeMap::new();
            // The epoch of the order out, if one is.
            let mut running: Option<Epoch> = None;
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, batches| {
                    let Some(&epoch) = cap.least() else { return };
                    let entry = epochs
                        .entry(epoch)
                        .or_insert_with(|| (cap.delayed(&epoch, 0), Vec::new()));
                    for batch in batches {
                        entry.1.extend(batch.drain(..).map(|(_, o)| o));
                    }
                });
                while let Ok((epoch, answers)) = done_rx.try_recv() {
                    running = None;
                    if let Some((cap, _)) = epochs.get(&epoch) {
                        output
                            .session_with_builder(cap)
                            .give_iterator(answers.into_iter());
                    }
                }
                // One order at a time: epoch by epoch, once all its orders are in, by event
                // time and source; so each finds the books as the orders before it left them
                // (a whole template's recall does not list what a recall before it is taking
                // back), on any number of workers.
                let mut waiting = false;
                let next = epochs
                    .iter_mut()
                    .find(|(_, (_, orders))| !orders.is_empty());
                if let (None, Some((&epoch, (_, orders)))) = (running, next)
                    && !frontier.less_equal(&epoch)
                {
                    if sent.less_equal(&epoch) {
                        waiting = true;
                    } else {
                        let first = (orders.iter().enumerate())
                            .min_by(|(_, a), (_, b)| {
                                (a.event_time, &a.source).cmp(&(b.event_time, &b.source))
                            })
                            .map(|(i, _)| i);
                        if let Some(r) = first.map(|i| orders.swap_remove(i)) {
                            running = Some(epoch);
                            let (ctx, done, activator) =
                                (ctx.clone(), done_tx.clone(), activator.clone());
                            ctx.clone().runtime.spawn(async move {
                                // After a stop the account topics' orders wait for the next
                                // run, behind the deliveries that gave up before them.
                                let rows =
                                    if mode == SendMode::Accounts && ctx.health.queued_stopped() {
                                        ctx.queues.gave_up_recall(&r);
                                        Vec::new()
                                    } else {
                                        recall_rows(&ctx, &r, clock, mode, first_process).await
                                    };
                                let answers = rows
                                    .into_iter()
                                    .map(|(known, row)| (r.source.clone(), known, row))
                                    .collect();
                                let _ = done.send((epoch, answers));
                                let _ = activator.activate();
                            });
                        }
                    }
                }
                epochs.retain(|epoch, (_, orders)| {
                    !orders.is_empty() || running == Some(*epoch) || frontier.less_equal(epoch)
                });
                if waiting {
                    // The probe moves without telling this operator: look again shortly.
                    later.activate_after(std::time::Duration::from_millis(5));
                }
            }
        },
    );
    merge_answers(answers)
}

/// Merges the processes' answers to each order (on one worker per order, once its epoch is
/// complete): every known row, and a message's unknown row (once) only if no process knew it.
fn merge_answers<'s>(answers: StreamVec<'s, Epoch, Answer>) -> StreamVec<'s, Epoch, Tracked> {
    let route = |(source, _, _): &Answer| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        source.hash(&mut h);
        h.finish()
    };
    answers.unary_frontier::<Trimming<Tracked>, _, _, _>(
        container::exchange(route),
        "RecallMerge",
        |_, _| {
            let mut epochs: BTreeMap<Epoch, (Capability<Epoch>, Vec<Answer>)> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, batches| {
                    let Some(&epoch) = cap.least() else { return };
                    let entry = epochs
                        .entry(epoch)
                        .or_insert_with(|| (cap.delayed(&epoch, 0), Vec::new()));
                    for batch in batches {
                        entry.1.append(batch);
                    }
                });
                while let Some(entry) = epochs.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (cap, answers) = entry.remove();
                    output
                        .session_with_builder(&cap)
                        .give_iterator(merged(answers).map(Tracked::Row));
                }
            }
        },
    )
}

/// The rows of one epoch's answers: the known rows, and each (order, message) unknown to
/// every process once.
fn merged(answers: Vec<Answer>) -> impl Iterator<Item = EventRow> {
    let known: std::collections::HashSet<(String, String)> = answers
        .iter()
        .filter(|(_, known, _)| *known)
        .map(|(source, _, row)| (source.clone(), row.meta.message_id.to_string()))
        .collect();
    let mut unknown = std::collections::HashSet::new();
    answers
        .into_iter()
        .filter_map(move |(source, is_known, row)| {
            let key = (source, row.meta.message_id.to_string());
            (is_known || (!known.contains(&key) && unknown.insert(key))).then_some(row)
        })
}

/// Recalls the messages of one `recall` request through the template's accounts: one
/// RECALL_SUCCESS or RECALL_FAIL row per receiver the message had reached (one row with an
/// empty receiver when no account knew the message).
async fn recall_rows(
    ctx: &SendContext,
    r: &RecallOrder,
    clock: Clock,
    mode: SendMode,
    first_process: bool,
) -> Vec<(bool, EventRow)> {
    let route = match &r.account {
        Some(a) => ctx.route_by_name.get(a),
        None => ctx.route_of.get(&r.template_id),
    };
    let Some(route) = route else {
        return Vec::new();
    };
    let order = route.order("");
    // A queued account's sends may still wait in its topic: the recall goes behind them.
    if let (&[account], SendMode::Main) = (&*order, mode)
        && ctx.queues.in_kafka(account)
    {
        if !first_process {
            return Vec::new();
        }
        match ctx.queues.hand_off_recall(account, r).await {
            Ok(()) => return Vec::new(),
            Err(e) => tracing::warn!(
                "account topic: {e}; recalling {} directly (deliveries still queued there are not reached)",
                r.source
            ),
        }
    }
    let recalled = ctx
        .accounts
        .recall_routed(
            &order,
            r.template_id,
            &r.message_ids,
            r.event_time,
            r.accounts.as_deref(),
        )
        .await;
    let now = clock.now_ms();
    let mut rows = Vec::new();
    for rec in recalled {
        let meta = Arc::new(MessageMeta {
            live: None,
            accounts: None,
            message_id: rec.message_id.into(),
            template_id: r.template_id,
            business_id: rec.business_id,
            biz_id: None,
            content: String::new(),
            event_time: r.event_time,
            seq: 0,
        });
        let (state, reason) = match rec.result {
            Ok(()) => (State::RecallSuccess, None),
            Err(why) => (State::RecallFail, Some(why)),
        };
        // A message no account of this process knew: one row with an empty receiver.
        let known = !rec.receivers.is_empty();
        let receivers = if known {
            rec.receivers
        } else {
            vec![String::new()]
        };
        rows.extend(receivers.into_iter().map(|receiver| {
            let row = EventRow {
                time: now,
                event_time: r.event_time,
                meta: meta.clone(),
                receiver: receiver.into(),
                state,
                reason: reason.clone(),
            };
            (known, row)
        }));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(seq: u128, index: u32) -> Delivery {
        let meta = MessageMeta::sample(seq, 0, "{}");
        Delivery::new(meta, format!("r{index}").as_str().into(), index, 0, (0, 0))
    }

    /// A stamp's deliveries go in tasks of at most `per_task` messages, each message whole
    /// (its consecutive receivers, across the stamp's batches), in order.
    #[test]
    fn messages_are_grouped_whole_in_tasks_of_at_most_per_task() {
        // Messages 0..7 with 1, 2, 3, 1, 2, 3, 1 receivers, over three batches that split
        // message 2 and message 5.
        let all: Vec<Delivery> = (0..7u128)
            .flat_map(|m| (0..(m % 3 + 1) as u32).map(move |i| delivery(m, i)))
            .collect();
        let mut batches = vec![all[..4].to_vec(), all[4..10].to_vec(), all[10..].to_vec()];
        for per_task in [1, 2, 3, 256] {
            let tasks = by_message(batches.clone().iter_mut(), per_task);
            let messages: Vec<Vec<(String, u32)>> = tasks
                .iter()
                .flat_map(|t| {
                    assert!(t.ends.len() <= per_task, "{} > {per_task}", t.ends.len());
                    t.each()
                        .map(|ds| {
                            ds.iter()
                                .map(|d| (d.meta.message_id.to_string(), d.index))
                                .collect()
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            let want: Vec<Vec<(String, u32)>> = (0..7u128)
                .map(|m| {
                    (0..(m % 3 + 1) as u32)
                        .map(|i| (format!("m{m}"), i))
                        .collect()
                })
                .collect();
            assert_eq!(messages, want, "per_task {per_task}");
            assert_eq!(
                tasks.len(),
                7usize.div_ceil(per_task),
                "per_task {per_task}"
            );
        }
        // Drained.
        let tasks = by_message(batches.iter_mut(), 256);
        assert_eq!(tasks.len(), 1);
        assert!(batches.iter().all(Vec::is_empty));
    }
}
