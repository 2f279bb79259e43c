//! Channel isolation: a backlog on one account never delays another.
//!
//! In a timely graph every epoch waits for its slowest delivery, so a send stage that held
//! 1,000,000 deliveries for an account limited to 100/s would hold every later epoch, of
//! every channel, for hours (austin answers this with one consumer group per channel). Here
//! each `kafka`-queued account (by default: every rate-limited account of a Kafka job) has its
//! own topic, `<send topic>.account.<name>`:
//!
//! - In the main dataflow the send stage *hands off* such an account's deliveries: it produces
//!   them to the account's topic and lets the epoch go once the broker has acknowledged them.
//!   The main graph never waits on a rate limit, and its checkpoint (and source offsets) can
//!   move on: the deliveries are durable in Kafka.
//! - A second dataflow reads the account topics ([`backlog_source`], worker 0) and sends. It
//!   reads an account only while that account has room (`max_queued` deliveries in memory,
//!   default two seconds of its rate) and leaves its consumer unpolled otherwise, so the
//!   backlog waits in Kafka, not in RAM, and one slow account never stops another from being
//!   read. Its
//!   offsets are committed behind its own "done" frontier (after SEND_SUCCESS/SEND_FAIL rows
//!   are durable): at-least-once, like the main source.
//! - A recall for such an account goes through its topic too ([`Queues::hand_off_recall`]),
//!   behind the deliveries handed off before it, and runs once the second dataflow has sent
//!   them: in the main graph it would find nothing of what still waits in the topic.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tidings_model::{DeadLetter, Delivery};
use tidings_operators::checkpoint::write_durably;
use tidings_operators::container::Trimming;
use tidings_operators::{Clock, Epoch, RecallOrder, Tracked};
use tidings_sinks::account::AccountConfig;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, StreamVec};

use crate::kafka::{GroupConsumer, KafkaSettings, WithProperties};

/// The hand-off producer's queue, in KiB (librdkafka's default is 1 GiB).
const HAND_OFF_QUEUE_KIB: &str = "32768";

/// Deliveries out to the hand-off producer at once (all sends of all workers), handed in
/// chunks of at most [`HAND_OFF_CHUNK`]: each waits for its acknowledgement (a oneshot per
/// record) before its room is given back. A burst of 1M receivers had them all out at once.
const HAND_OFF_WINDOW: usize = 20_000;
const HAND_OFF_CHUNK: usize = 256;

/// The topic of a `kafka`-queued account.
pub fn topic_of(send_topic: &str, account: &str) -> String {
    format!("{send_topic}.account.{account}")
}

/// Per account (by index): whether it queues in Kafka, its topic, its in-memory room and how
/// many of its deliveries are in memory now. Shared by both dataflows of every worker.
pub struct Queues {
    topics: Vec<Option<String>>,
    /// Accounts on a recall channel: their deliveries and recall orders all go to partition 0
    /// of their topic, so a recall is read after every delivery handed off before it.
    in_order: Vec<bool>,
    capacity: Vec<usize>,
    queued: Vec<AtomicUsize>,
    producer: Option<FutureProducer>,
    /// Room for deliveries handed to the producer and not yet acknowledged.
    hand_off_room: tokio::sync::Semaphore,
    /// Deliveries handed to account topics, and read back from them, in this run.
    handed: AtomicUsize,
    read: AtomicUsize,
    /// What the account-topic graph gave up at a stop or a halt (its sends waiting for a
    /// permit, its recall orders not run): the reader commits short of their records.
    given_up: Mutex<HashSet<ReadKey>>,
}

/// Which record of an account topic a delivery or recall order was.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ReadKey {
    /// (account, message id, receiver index): the id is kept inline, so a record read costs
    /// no allocation for its key.
    Delivery(usize, tidings_model::ids::MessageId, u32),
    /// A recall order, by its source.
    Recall(String),
}

fn delivery_key(account: usize, d: &Delivery) -> ReadKey {
    ReadKey::Delivery(account, d.meta.message_id.clone(), d.index)
}

fn recall_key(order: &RecallOrder) -> ReadKey {
    ReadKey::Recall(order.source.clone())
}

impl Queues {
    /// Queues for accounts in index order (a `BTreeMap` by name, as [`tidings_sinks::account::Accounts`]
    /// builds them). With a Kafka source, creates the account topics and a producer.
    pub fn build(
        accounts: &BTreeMap<String, AccountConfig>,
        kafka: Option<&KafkaSettings>,
        runtime: &tokio::runtime::Runtime,
    ) -> anyhow::Result<Queues> {
        let topics: Vec<Option<String>> = accounts
            .iter()
            .map(|(name, c)| {
                let k = kafka.filter(|_| c.queues_in_kafka(true))?;
                Some(topic_of(&k.topic, name))
            })
            .collect();
        let in_order = accounts
            .values()
            .map(|c| c.channel.supports_recall())
            .collect();
        let capacity = accounts.values().map(|c| c.queue_capacity()).collect();
        let queued = accounts.values().map(|_| AtomicUsize::new(0)).collect();
        let producer = match kafka {
            Some(k) if topics.iter().any(Option::is_some) => {
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", &k.brokers)
                    .with_properties(&k.properties)
                    .create()?;
                let wanted: Vec<NewTopic> = topics
                    .iter()
                    .flatten()
                    .map(|t| NewTopic::new(t, 1, TopicReplication::Fixed(1)))
                    .collect();
                let results =
                    runtime.block_on(admin.create_topics(&wanted, &AdminOptions::new()))?;
                for r in results {
                    if let Err((topic, e)) = r
                        && e != RDKafkaErrorCode::TopicAlreadyExists
                    {
                        anyhow::bail!("cannot create the account topic {topic}: {e}");
                    }
                }
                // The producer's queue is bounded in bytes, not only in messages: a burst handed
                // off at once (1M receivers of one epoch) otherwise sat in librdkafka's queue
                // as ~450 B copies (peak RSS 924 MiB). A full queue makes `hand_off` wait.
                let producer: FutureProducer = ClientConfig::new()
                    .set("bootstrap.servers", &k.brokers)
                    .set("linger.ms", "5")
                    .set("queue.buffering.max.messages", "100000")
                    .set("queue.buffering.max.kbytes", HAND_OFF_QUEUE_KIB)
                    .with_properties(&k.properties)
                    .create()?;
                Some(producer)
            }
            _ => None,
        };
        Ok(Queues {
            topics,
            in_order,
            capacity,
            queued,
            producer,
            hand_off_room: tokio::sync::Semaphore::new(HAND_OFF_WINDOW),
            handed: AtomicUsize::new(0),
            read: AtomicUsize::new(0),
            given_up: Mutex::default(),
        })
    }

    /// Whether `account`'s deliveries are handed to its topic.
    pub fn in_kafka(&self, account: usize) -> bool {
        self.topics[account].is_some()
    }

    /// Whether any account queues in Kafka.
    pub fn any(&self) -> bool {
        self.topics.iter().any(Option::is_some)
    }

    /// The topic of every `kafka`-queued account, with its index.
    fn topics(&self) -> impl Iterator<Item = (usize, &str)> {
        self.topics
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((i, t.as_deref()?)))
    }

    /// Room left in memory for `account`.
    fn room(&self, account: usize) -> usize {
        self.capacity[account].saturating_sub(self.queued[account].load(Ordering::Relaxed))
    }

    /// Deliveries of `account` read from its topic and not yet sent.
    pub fn queued(&self, account: usize) -> usize {
        self.queued[account].load(Ordering::Relaxed)
    }

    /// `account`'s topic, when it queues in Kafka.
    pub fn topic(&self, account: usize) -> Option<&str> {
        self.topics[account].as_deref()
    }

    /// Deliveries handed to account topics and read back from them, in this run.
    pub fn handed_and_read(&self) -> (usize, usize) {
        (
            self.handed.load(Ordering::Relaxed),
            self.read.load(Ordering::Relaxed),
        )
    }

    /// A delivery of `account` read from its topic was not sent: a stop or a halt came while
    /// it waited for its permit. Its record is not committed: the next run sends it.
    pub fn gave_up(&self, account: usize, d: &Delivery) {
        self.give_up(delivery_key(account, d));
    }

    /// A recall order read from an account topic was not run (a stop or a halt came first).
    pub fn gave_up_recall(&self, order: &RecallOrder) {
        self.give_up(recall_key(order));
    }

    fn give_up(&self, key: ReadKey) {
        (self.given_up.lock().unwrap_or_else(|p| p.into_inner())).insert(key);
    }

    /// `n` deliveries of `account` have been sent (or failed).
    pub fn sent(&self, account: usize, n: usize) {
        self.queued[account].fetch_sub(n, Ordering::Relaxed);
    }

    /// Produces deliveries to `account`'s topic; returns once the broker acknowledged each.
    /// On a failure, the positions of the deliveries not acknowledged (the caller sends those
    /// itself: the ones already in the topic are sent from there, not twice).
    pub async fn hand_off(
        &self,
        account: usize,
        deliveries: &[Delivery],
    ) -> Result<(), (Vec<usize>, String)> {
        let (Some(topic), Some(producer)) = (&self.topics[account], &self.producer) else {
            return Err((
                (0..deliveries.len()).collect(),
                "account is not queued in Kafka".into(),
            ));
        };
        let mut left: Vec<usize> = Vec::new();
        let mut reason: Option<String> = None;
        for (c, chunk) in deliveries.chunks(HAND_OFF_CHUNK).enumerate() {
            let first = c * HAND_OFF_CHUNK;
            if reason.is_some() {
                left.extend(first..first + chunk.len());
                continue;
            }
            let _room = match self.hand_off_room.acquire_many(chunk.len() as u32).await {
                Ok(room) => room,
                Err(e) => {
                    reason = Some(e.to_string());
                    left.extend(first..first + chunk.len());
                    continue;
                }
            };
            let mut acks = Vec::with_capacity(chunk.len());
            for (i, d) in chunk.iter().enumerate() {
                if reason.is_some() {
                    left.push(first + i);
                    continue;
                }
                let body = match serde_json::to_vec(d) {
                    Ok(b) => b,
                    Err(e) => {
                        reason = Some(e.to_string());
                        left.push(first + i);
                        continue;
                    }
                };
                let mut record = FutureRecord::<str, [u8]>::to(topic)
                    .key(&d.receiver)
                    .payload(&body);
                if self.in_order[account] {
                    record = record.partition(0);
                }
                match enqueue(producer, record).await {
                    Ok(ack) => acks.push((first + i, ack)),
                    Err(e) => {
                        reason = Some(e.to_string());
                        left.push(first + i);
                    }
                }
            }
            for (i, ack) in acks {
                if let Err(failed) = acked(ack).await {
                    reason.get_or_insert(failed);
                    left.push(i);
                }
            }
        }
        self.handed
            .fetch_add(deliveries.len() - left.len(), Ordering::Relaxed);
        match reason {
            None => Ok(()),
            Some(r) => {
                left.sort_unstable();
                Err((left, r))
            }
        }
    }

    /// Produces a recall order to `account`'s topic, behind the deliveries handed off before
    /// it (partition 0, as theirs: [`Queues::in_order`]); returns once the broker acknowledged
    /// it. The account-topic dataflow runs it once it has sent what it read before it.
    pub async fn hand_off_recall(&self, account: usize, order: &RecallOrder) -> Result<(), String> {
        let (Some(topic), Some(producer)) = (&self.topics[account], &self.producer) else {
            return Err("account is not queued in Kafka".into());
        };
        let body = serde_json::to_vec(order).map_err(|e| e.to_string())?;
        let record = FutureRecord::<str, [u8]>::to(topic)
            .key(RECALL_KEY)
            .partition(0)
            .payload(&body);
        let ack = enqueue(producer, record).await.map_err(|e| e.to_string())?;
        acked(ack).await?;
        // Counted as a delivery: the reader runs until it has read it back.
        self.handed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Queues `record` on `producer`, waiting while the producer's queue is full.
async fn enqueue(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, str, [u8]>,
) -> Result<DeliveryFuture, KafkaError> {
    loop {
        match producer.send_result(record) {
            Ok(ack) => return Ok(ack),
            Err((e, back)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Waits for a queued record's acknowledgement.
async fn acked(ack: DeliveryFuture) -> Result<(), String> {
    match ack.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e.to_string()),
        Err(_) => Err("the producer went away".to_string()),
    }
}

/// The key of a recall order in an account topic (deliveries are keyed by their receiver; a
/// record of this key that is not a recall order is read as a delivery).
const RECALL_KEY: &str = "\u{0}tidings-recall";

/// One account topic's consumer and its offsets read per epoch, not yet committed.
struct AccountConsumer {
    account: usize,
    topic: String,
    /// Its errors said as the source's are (librdkafka's default context logged a
    /// partition's end, seen as a "Global error", at error level).
    consumer: GroupConsumer<crate::kafka::Heard>,
    pending: RefCell<BTreeMap<Epoch, HashMap<i32, i64>>>,
    /// Records below these offsets were sent by an earlier run (`account-offsets.json`).
    skip_below: BTreeMap<i32, i64>,
    /// Records at or above the committed offset that an earlier run sent (or ran) before a
    /// stop left the ones it had not sent in the topic (`account-sent.json`).
    sent_above: RefCell<BTreeMap<i32, BTreeSet<i64>>>,
    /// Every record read and not yet committed, by (partition, offset): the delivery or recall
    /// order it was (`None`: a dead letter), to find those that gave up.
    read: RefCell<BTreeMap<(i32, i64), Option<ReadKey>>>,
    /// Per partition: whether the broker said it is at its end since the last record.
    at_end: RefCell<HashMap<i32, bool>>,
}

impl AccountConsumer {
    /// Lowers `next` (per partition, the offset to commit) to the first record that gave up,
    /// keeping the offsets read above it that did not (sent, or run) in `sent_above`, and
    /// forgets what is committed. Returns whether `sent_above` changed.
    fn short_of(&self, next: &mut HashMap<i32, i64>, given_up: &HashSet<ReadKey>) -> bool {
        let mut read = self.read.borrow_mut();
        let mut sent_above = self.sent_above.borrow_mut();
        let gave_up = |k: &Option<ReadKey>| k.as_ref().is_some_and(|k| given_up.contains(k));
        let mut changed = false;
        for (&p, n) in next.iter_mut() {
            let first = if given_up.is_empty() {
                None
            } else {
                read.range((p, i64::MIN)..(p, *n))
                    .find(|(_, k)| gave_up(k))
                    .map(|(&(_, o), _)| o)
            };
            if let Some(first) = first {
                let sent = sent_above.entry(p).or_default();
                for (&(_, o), k) in read.range((p, first)..(p, *n)) {
                    if !gave_up(k) {
                        sent.insert(o);
                    }
                }
                *n = first;
                changed = true;
            }
            let n = *n;
            if let Some(sent) = sent_above.get_mut(&p)
                && sent.first().is_some_and(|&o| o < n)
            {
                *sent = sent.split_off(&n);
                changed = true;
                if sent.is_empty() {
                    sent_above.remove(&p);
                }
            }
        }
        // What is committed is forgotten, every partition in one pass.
        read.retain(|&(q, o), _| next.get(&q).is_none_or(|&n| o >= n));
        changed
    }

    /// Whether every partition it was given is read to its end.
    fn drained(&self) -> bool {
        let at_end = self.at_end.borrow();
        self.consumer.assignment().is_ok_and(|a| {
            a.count() > 0
                && a.elements()
                    .iter()
                    .all(|e| at_end.get(&e.partition()).copied().unwrap_or(false))
        })
    }
}

/// Worker 0's consumers of the account topics: one per account, each in its own group, so an
/// account is paced by simply not polling its consumer while it has no room (librdkafka then
/// holds at most its small fetch queue). Pausing partitions of one shared consumer would do
/// too, but librdkafka's destroy then hangs against tansu.
pub struct BacklogReader {
    consumers: Vec<AccountConsumer>,
    tick: Duration,
    /// `state_dir/account-offsets.json`: the next offset per account topic and partition whose
    /// earlier records are all sent and tracked. Written before each group commit, so a new
    /// group (or a group that lost its commits) does not send them again.
    positions_path: PathBuf,
    positions: RefCell<BTreeMap<String, BTreeMap<i32, i64>>>,
    /// `state_dir/account-sent.json`: per account topic and partition, the records above its
    /// position that were sent before a stop (written before the positions).
    sent_path: PathBuf,
    /// When to try assigning the topics' partitions again.
    retry_at: Cell<Instant>,
}

impl BacklogReader {
    /// What `state_dir/account-offsets.json` says is done, per account topic and partition
    /// (checked before the workers start, so a bad file is one line, not a worker's panic).
    pub fn done_positions(
        state_dir: &Path,
    ) -> anyhow::Result<BTreeMap<String, BTreeMap<i32, i64>>> {
        crate::read_json_or_default(&state_dir.join("account-offsets.json"), "")
    }

    /// What `state_dir/account-sent.json` says was sent above those positions (checked before
    /// the workers start too).
    pub fn sent_above(state_dir: &Path) -> anyhow::Result<SentAbove> {
        crate::read_json_or_default(&state_dir.join("account-sent.json"), "")
    }

    /// Reads every account topic (assigned, see [`BacklogReader::assign`]), each from its group's committed offsets, skipping
    /// what `state_dir/account-offsets.json` says is done.
    pub fn connect(
        k: &KafkaSettings,
        queues: &Queues,
        state_dir: &Path,
    ) -> anyhow::Result<Rc<BacklogReader>> {
        let positions_path = state_dir.join("account-offsets.json");
        let positions = Self::done_positions(state_dir)?;
        let sent = Self::sent_above(state_dir)?;
        let mut consumers = Vec::new();
        for (account, topic) in queues.topics() {
            let consumer: BaseConsumer<crate::kafka::Heard> = ClientConfig::new()
                .set("bootstrap.servers", &k.brokers)
                .set("group.id", format!("{}.{topic}", k.group))
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest")
                .set("fetch.wait.max.ms", "10")
                // What librdkafka fetches ahead is memory too: the backlog belongs in Kafka.
                .set("queued.min.messages", "1000")
                .set("queued.max.messages.kbytes", "2048")
                // With thresholds this low the default 1 s backoff would pace an account to a
                // thousand messages a second; an account without room is not polled, and a
                // fetch is then only looked at again every 10 ms.
                .set(
                    "fetch.queue.backoff.ms",
                    crate::kafka::FETCH_QUEUE_BACKOFF_MS,
                )
                .set("session.timeout.ms", "10000")
                // An account without room is not polled; that is not a dead member.
                .set("max.poll.interval.ms", "86400000")
                // The run ends only once every partition is read to its end.
                .set("enable.partition.eof", "true")
                .with_properties(&k.properties)
                .create_with_context(crate::kafka::Heard::default())?;
            consumers.push(AccountConsumer {
                account,
                topic: topic.to_string(),
                consumer: GroupConsumer::new(consumer),
                pending: RefCell::new(BTreeMap::new()),
                skip_below: positions.get(topic).cloned().unwrap_or_default(),
                sent_above: RefCell::new(sent.get(topic).cloned().unwrap_or_default()),
                read: RefCell::default(),
                at_end: RefCell::new(HashMap::new()),
            });
        }
        Ok(Rc::new(BacklogReader {
            consumers,
            tick: k.tick,
            positions_path,
            positions: RefCell::new(positions),
            sent_path: state_dir.join("account-sent.json"),
            retry_at: Cell::new(Instant::now()),
        }))
    }

    /// Assigns every partition of each account topic (worker 0 reads them all: no group
    /// rebalance to wait for, which a broker may not give a group that left gracefully), each
    /// from the group's committed offset, else the beginning. Returns whether all are assigned.
    fn assign(&self) -> bool {
        let mut all = true;
        for c in &self.consumers {
            if c.consumer.assignment().is_ok_and(|a| a.count() > 0) {
                continue;
            }
            all = false;
            if Instant::now() < self.retry_at.get() {
                continue;
            }
            self.retry_at
                .set(Instant::now() + Duration::from_millis(500));
            let Ok(md) = c
                .consumer
                .fetch_metadata(Some(&c.topic), Duration::from_secs(2))
            else {
                continue;
            };
            let count = md
                .topics()
                .iter()
                .find(|t| t.name() == c.topic)
                .filter(|t| t.error().is_none())
                .map(|t| t.partitions().len() as i32)
                .unwrap_or(0);
            if count == 0 {
                continue;
            }
            let mut ask = TopicPartitionList::new();
            for p in 0..count {
                ask.add_partition(&c.topic, p);
            }
            let mut committed = HashMap::new();
            if let Ok(got) = c.consumer.committed_offsets(ask, Duration::from_secs(5)) {
                for e in got.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        committed.insert(e.partition(), o);
                    }
                }
            }
            let mut tpl = TopicPartitionList::new();
            for p in 0..count {
                let at = committed
                    .get(&p)
                    .map_or(Offset::Beginning, |&o| Offset::Offset(o));
                let _ = tpl.add_partition_offset(&c.topic, p, at);
            }
            if let Err(e) = c.consumer.assign(&tpl) {
                tracing::warn!("kafka ({}): cannot assign: {e}", c.topic);
            }
        }
        all
    }

    /// Commits what the backlog dataflow has finished: epochs before `frontier`, or all; but
    /// never a record that gave up (`Queues::gave_up`) nor any after it: those it sent are
    /// written to `account-sent.json`, and the next run skips them.
    pub fn commit_done(&self, frontier: Option<Epoch>, mode: CommitMode, queues: &Queues) {
        let mut commits = Vec::new();
        let mut sent_changed = false;
        let given_up = queues.given_up.lock().unwrap_or_else(|p| p.into_inner());
        for c in &self.consumers {
            let done = {
                let mut pending = c.pending.borrow_mut();
                let keep = match frontier {
                    Some(f) => pending.split_off(&f),
                    None => BTreeMap::new(),
                };
                std::mem::replace(&mut *pending, keep)
            };
            let mut next: HashMap<i32, i64> = HashMap::new();
            for offsets in done.into_values() {
                for (p, o) in offsets {
                    let e = next.entry(p).or_insert(o + 1);
                    *e = (*e).max(o + 1);
                }
            }
            if next.is_empty() {
                continue;
            }
            sent_changed |= c.short_of(&mut next, &given_up);
            let mut positions = self.positions.borrow_mut();
            let known = positions.entry(c.topic.clone()).or_default();
            let mut tpl = TopicPartitionList::new();
            for (p, o) in next {
                let e = known.entry(p).or_insert(o);
                *e = (*e).max(o);
                let _ = tpl.add_partition_offset(&c.topic, p, Offset::Offset(o));
            }
            commits.push((c, tpl));
        }
        drop(given_up);
        if commits.is_empty() {
            return;
        }
        // The files first: the group may lag behind them, never run ahead of them; what was
        // sent above a position before it (a crash in between skips only what was sent).
        if sent_changed {
            let sent: SentAbove = self
                .consumers
                .iter()
                .map(|c| (c.topic.clone(), c.sent_above.borrow().clone()))
                .filter(|(_, s)| !s.is_empty())
                .collect();
            let body = serde_json::to_vec(&sent).unwrap_or_default();
            if let Err(e) = write_durably(&self.sent_path, &body) {
                tracing::warn!("{}: {e}", self.sent_path.display());
                return;
            }
        }
        let body = serde_json::to_vec(&*self.positions.borrow()).unwrap_or_default();
        if let Err(e) = write_durably(&self.positions_path, &body) {
            tracing::warn!("{}: {e}", self.positions_path.display());
            return;
        }
        for (c, tpl) in commits {
            if let Err(e) = c.consumer.commit_offsets(&tpl, mode) {
                tracing::warn!(
                    "{} commit failed (deliveries may be sent again): {e}",
                    c.topic
                );
            }
        }
    }
}

/// What the account topics yield: deliveries to send, recall orders to run after the sends
/// read before them, and dead letters for what is neither.
pub struct Backlog<'s> {
    /// Deliveries read back from the account topics.
    pub pass: StreamVec<'s, Epoch, Delivery>,
    /// Recall orders handed off behind an account's deliveries ([`Queues::hand_off_recall`]).
    pub recalls: StreamVec<'s, Epoch, RecallOrder>,
    /// Dead letters of records that are neither.
    pub rows: StreamVec<'s, Epoch, Tracked>,
}

/// Per account topic and partition: offsets at or above its committed one already sent.
pub type SentAbove = BTreeMap<String, BTreeMap<i32, BTreeSet<i64>>>;

/// One record of an account topic, read.
type Read = Result<Delivery, Result<RecallOrder, DeadLetter>>;

/// Reads one record of an account topic: a recall order (by its key) or a delivery.
fn read_record(key: Option<&[u8]>, payload: &[u8]) -> Result<Read, serde_json::Error> {
    if key == Some(RECALL_KEY.as_bytes())
        && let Ok(order) = serde_json::from_slice::<RecallOrder>(payload)
    {
        return Ok(Err(Ok(order)));
    }
    serde_json::from_slice::<Delivery>(payload).map(Ok)
}

/// Reads the account topics at each account's pace (worker 0; other workers pass `None`).
/// Ends on `stop`, or on a stop the cluster agreed (asked of any process: `checkpoints`
/// knows its cut), or once the main dataflow is done, everything it handed off this run has
/// been read back and sent, and nothing more (e.g. left by an earlier run) has come for two
/// seconds since the reader got its partitions.
pub fn backlog_source<'s>(
    scope: Scope<'s, Epoch>,
    reader: Option<Rc<BacklogReader>>,
    queues: Arc<Queues>,
    clock: Clock,
    stop: Arc<AtomicBool>,
    checkpoints: tidings_operators::checkpoint::Checkpoints,
    main_done: Arc<AtomicBool>,
) -> Backlog<'s> {
    let read = source::<_, Trimming<Read>, _, _>(scope, "AccountTopics", move |cap, info| {
        let activator = scope.activator_for(info.address);
        let mut cap = reader.as_ref().map(|_| cap);
        let start = Instant::now();
        let mut quiet_since = Instant::now();
        let mut assigned = false;
        let mut main_done_at: Option<Instant> = None;
        move |output| {
            let (Some(c), Some(reader)) = (cap.as_mut(), reader.as_ref()) else {
                cap = None;
                return;
            };
            let idle = queues
                .topics()
                .all(|(a, _)| queues.queued[a].load(Ordering::Relaxed) == 0);
            if !idle {
                quiet_since = Instant::now();
            }
            if !assigned && reader.assign() {
                assigned = true;
                quiet_since = Instant::now();
            }
            let main_over = main_done.load(Ordering::Relaxed);
            if main_over && main_done_at.is_none() {
                main_done_at = Some(Instant::now());
            }
            // A group that is never given its partitions (seen with tansu after a graceful
            // leave) must not keep the run alive: what the topics hold waits for the next run.
            if !assigned && main_done_at.is_some_and(|t| t.elapsed() >= Duration::from_secs(30)) {
                tracing::warn!(
                    "the account topics' consumers got no partitions; their deliveries wait in Kafka for the next run"
                );
                cap = None;
                return;
            }
            // Done: the main graph is, every partition of every account topic is read to its
            // end (what earlier runs handed off included), and all of it was sent.
            let drained = main_over
                && assigned
                && reader.consumers.iter().all(AccountConsumer::drained)
                && idle
                && queues.read.load(Ordering::Relaxed) >= queues.handed.load(Ordering::Relaxed)
                && quiet_since.elapsed() >= Duration::from_secs(2);
            let stopping = stop.load(Ordering::Relaxed) || checkpoints.stop_cut().is_some();
            if stopping || drained {
                cap = None;
                return;
            }
            let epoch = (start.elapsed().as_millis() / reader.tick.as_millis().max(1)) as Epoch;
            if epoch > *c.time() {
                c.downgrade(&epoch);
            }
            let epoch = *c.time();
            let mut batch = Vec::new();
            for c in &reader.consumers {
                // Only as many as the account has room for: the rest waits in Kafka.
                let mut room = queues.room(c.account).min(4096);
                while room > 0 {
                    let m = match c.consumer.poll(Duration::ZERO) {
                        None => break,
                        Some(Err(KafkaError::PartitionEOF(p))) => {
                            c.at_end.borrow_mut().insert(p, true);
                            continue;
                        }
                        Some(Err(e)) => {
                            tracing::warn!("kafka ({}): {e}", c.topic);
                            break;
                        }
                        Some(Ok(m)) => m,
                    };
                    let (p, o) = (m.partition(), m.offset());
                    c.at_end.borrow_mut().insert(p, false);
                    c.pending
                        .borrow_mut()
                        .entry(epoch)
                        .or_default()
                        .insert(p, o);
                    if c.skip_below.get(&p).is_some_and(|&s| o < s)
                        || c.sent_above
                            .borrow()
                            .get(&p)
                            .is_some_and(|s| s.contains(&o))
                    {
                        continue;
                    }
                    let payload = m.payload().unwrap_or_default();
                    let record = read_record(m.key(), payload);
                    c.read.borrow_mut().insert(
                        (p, o),
                        match &record {
                            Ok(Ok(d)) => Some(delivery_key(c.account, d)),
                            Ok(Err(Ok(order))) => Some(recall_key(order)),
                            _ => None,
                        },
                    );
                    match record {
                        Ok(Ok(d)) => {
                            queues.queued[c.account].fetch_add(1, Ordering::Relaxed);
                            queues.read.fetch_add(1, Ordering::Relaxed);
                            batch.push(Ok(d));
                            room -= 1;
                        }
                        Ok(recall) => {
                            queues.read.fetch_add(1, Ordering::Relaxed);
                            batch.push(recall);
                        }
                        Err(e) => batch.push(Err(Err(DeadLetter::of_record(
                            clock.now_ms(),
                            format!("{}/{p}/{o}", c.topic),
                            payload,
                            format!("not a delivery of an account topic: {e}"),
                        )))),
                    }
                }
            }
            if batch.is_empty() {
                activator.activate_after(Duration::from_millis(5));
            } else {
                quiet_since = Instant::now();
                output
                    .session_with_builder(&*c)
                    .give_iterator(batch.into_iter());
                activator.activate();
            }
        }
    });
    let (pass, rest): (_, StreamVec<'s, Epoch, Result<RecallOrder, DeadLetter>>) =
        read.ok_err(|r| r);
    let (recalls, rows) = rest.ok_err(|r| r.map_err(|d| Tracked::Dead(Box::new(d))));
    Backlog {
        pass,
        recalls,
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_model::MessageMeta;

    /// A recall order is read by its key; a delivery to a receiver spelled like that key is
    /// still a delivery, and a record that is neither is an error (a dead letter).
    #[test]
    fn recall_orders_and_deliveries_are_told_apart() {
        let order = RecallOrder {
            template_id: 7,
            message_ids: vec!["m-1".into()],
            event_time: 1_000,
            source: "t/0/3".into(),
            account: None,
            accounts: None,
        };
        let body = serde_json::to_vec(&order).unwrap();
        let key = Some(RECALL_KEY.as_bytes());
        assert!(matches!(read_record(key, &body), Ok(Err(Ok(o))) if o == order));
        let delivery = Delivery::new(
            MessageMeta::sample(1, 0, "{}"),
            RECALL_KEY.into(),
            0,
            0,
            (0, 0),
        );
        let body = serde_json::to_vec(&delivery).unwrap();
        for key in [key, None] {
            assert!(matches!(read_record(key, &body), Ok(Ok(d)) if d == delivery));
        }
        assert!(read_record(None, &serde_json::to_vec(&order).unwrap()).is_err());
        assert!(read_record(key, b"{").is_err());
    }
}
