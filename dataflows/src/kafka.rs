//! The Kafka source and the producer behind `tidings send`.
//!
//! Partition `p` of the topic is read by worker `p % peers` (assigned, not subscribed: no group
//! rebalance moves a partition, so what a worker reads is a function of the worker count
//! only). A record's epoch is its event-time bucket (the Kafka timestamp), each partition keeps
//! its own watermark, and the source's capability is the least of them
//! ([`crate::source`]); a partition the broker says is at its end moves its watermark with the
//! wall clock, so a quiet topic never holds the graph (or parked messages) back.
//!
//! **At-least-once.** Offsets are never auto-committed. As the source's capability passes a
//! cut it deposits where it would resume each partition into that checkpoint
//! ([`tidings_operators::checkpoint`]); once the "done" probe (after the tracking stage) has
//! passed the cut, every receiver of its records is terminal or durably parked, its rows are on
//! disk and the dedup windows are saved with the positions; only then are the offsets
//! committed to the group. A crash replays the records after the newest checkpoint; they get
//! the same message ids (a pure function of topic, partition, offset and param index).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ops::Deref;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, DefaultConsumerContext,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::types::{RDKafkaConfRes, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use tidings_model::time::Millis;
use tidings_operators::checkpoint::{Checkpoints, Position};
use tidings_operators::event_time::EventTime;
use tidings_operators::live::Live;
use tidings_operators::{Clock, Epoch, InFlight, SourceRecord};

use crate::kafka_batch::{BatchQueue, Item};
use crate::source::{Partition, Stamped, give_stamped, oversized, too_large};
use tidings_operators::container::Trimming;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};

/// Default length of one epoch of the Kafka source (`source.epoch_ms`).
pub const TICK: Duration = Duration::from_millis(10);

/// Where to read.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Bootstrap servers.
    pub brokers: String,
    /// The send topic.
    pub topic: String,
    /// The consumer group.
    pub group: String,
    /// Where dead letters are produced too, if anywhere.
    pub dead_letter_topic: Option<String>,
    /// Wall-clock time between checkpoints.
    pub checkpoint: Duration,
    /// Length of one epoch (event time in the main graph; wall clock for the account topics).
    pub tick: Duration,
    /// The job file's `source.properties`: librdkafka properties for every client made to
    /// these brokers, applied after the job's own ([`WithProperties`]).
    pub properties: Vec<(String, String)>,
    /// Properties left out because a `${NAME}` in their value is not set (a job loaded only
    /// to read what it wrote), each as `source.properties."KEY": why`.
    pub unresolved: Vec<String>,
}

impl KafkaSettings {
    /// Whether a client can be made with every property of the job file: the first property
    /// left out otherwise (an unset `${NAME}`).
    pub fn ready(&self) -> Result<(), String> {
        self.unresolved.first().map_or(Ok(()), |u| Err(u.clone()))
    }
}

/// librdkafka properties a job file may not set, by librdkafka's own name ([`canonical`]):
/// each with what to do instead. Offsets are committed only with a checkpoint, a new group
/// reads from the start, only committed records are read, end-of-partition events move the
/// watermark of a caught-up partition, the live state's lag comes from librdkafka's
/// statistics, the send API's producer is answered only once every in-sync replica has a
/// record, written once, and no library is loaded into the job.
pub const RESERVED_PROPERTIES: &[(&str, &str)] = &[
    ("metadata.broker.list", "set source.brokers instead"),
    ("group.id", "set source.group instead"),
    (
        "enable.auto.commit",
        "tidings commits offsets only with a checkpoint, so nothing read is lost; remove it",
    ),
    (
        "auto.commit.enable",
        "tidings commits offsets only with a checkpoint, so nothing read is lost; remove it",
    ),
    (
        "enable.auto.offset.store",
        "tidings stores offsets only with a checkpoint, so nothing read is lost; remove it",
    ),
    (
        "auto.offset.reset",
        "a new group reads its topic from the start, so nothing produced before it is lost; remove it",
    ),
    (
        "isolation.level",
        "tidings reads only committed records (an aborted transaction's are never sent); remove it",
    ),
    (
        "enable.partition.eof",
        "a caught-up partition's watermark follows its end-of-partition events; remove it",
    ),
    (
        "statistics.interval.ms",
        "the live state's lag comes from librdkafka's statistics every second; remove it",
    ),
    (
        "enable.idempotence",
        "the send API's producer writes each record once; remove it",
    ),
    (
        "request.required.acks",
        "the send API answers once every in-sync replica has the record (acks=all); remove it",
    ),
    (
        "transactional.id",
        "tidings' producers are not transactional; remove it",
    ),
    (
        "plugin.library.paths",
        "tidings loads no library into the job; remove it",
    ),
];

/// librdkafka's aliases: a property two names set, by the name that is not librdkafka's own
/// (its `rdkafka_conf.c`).
const ALIASES: &[(&str, &str)] = &[
    ("bootstrap.servers", "metadata.broker.list"),
    ("max.in.flight", "max.in.flight.requests.per.connection"),
    ("sasl.mechanism", "sasl.mechanisms"),
    (
        "sasl.oauthbearer.client.credentials.client.id",
        "sasl.oauthbearer.client.id",
    ),
    (
        "sasl.oauthbearer.client.credentials.client.secret",
        "sasl.oauthbearer.client.secret",
    ),
    ("max.partition.fetch.bytes", "fetch.message.max.bytes"),
    ("linger.ms", "queue.buffering.max.ms"),
    ("retries", "message.send.max.retries"),
    ("compression.type", "compression.codec"),
    ("acks", "request.required.acks"),
    ("delivery.timeout.ms", "message.timeout.ms"),
];

/// librdkafka's own name of a property: without the `topic.` prefix it takes for a topic's
/// properties (not the global `topic.metadata.*` and `topic.blacklist`), and an alias as the
/// property it stands for. A property is set under this name, so two names of one property
/// never race in a client's config.
pub fn canonical(key: &str) -> &str {
    let key = match key.strip_prefix("topic.") {
        Some(rest) if !rest.starts_with("metadata.") && rest != "blacklist" => rest,
        _ => key,
    };
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == key)
        .map_or(key, |(_, own)| own)
}

/// Why a job file may not set `key` (one of [`RESERVED_PROPERTIES`] under any of its names),
/// whatever its value.
pub fn refused(key: &str) -> Option<String> {
    let own = canonical(key);
    RESERVED_PROPERTIES
        .iter()
        .find(|(k, _)| *k == own)
        .map(|(_, instead)| format!("is set by tidings: {instead}"))
}

/// The properties librdkafka itself keeps secret (`_RK_SENSITIVE` in its `rdkafka_conf.c`):
/// an error never shows their values.
const SECRETS: &[&str] = &[
    "ssl.key.location",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl_key",
    "ssl.ca.pem",
    "ssl.keystore.password",
    "sasl.username",
    "sasl.password",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.assertion.private.key.file",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem",
];

/// Whether the value of the property librdkafka names `own` ([`canonical`]) is a secret.
pub fn secret(own: &str) -> bool {
    SECRETS.contains(&own)
}

/// Checks that librdkafka takes `value` for the property it names `own` ([`canonical`]; not
/// one of [`RESERVED_PROPERTIES`]: [`refused`]), or says why not in its own words (a
/// misspelt name, SSL in a build without it), never quoting a secret.
pub fn check_value(own: &str, value: &str) -> Result<(), String> {
    const LIST: &str = "https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md";
    match ClientConfig::new().set(own, value).create_native_config() {
        Ok(_) => Ok(()),
        Err(KafkaError::ClientConfig(RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN, ..)) => Err(format!(
            "librdkafka has no such property (its properties: {LIST})"
        )),
        Err(KafkaError::ClientConfig(_, desc, ..))
            if secret(own) && !value.is_empty() && desc.contains(value.trim()) =>
        {
            Err(format!(
                "librdkafka refuses it (its reason would show the secret value) (its properties: {LIST})"
            ))
        }
        Err(KafkaError::ClientConfig(_, desc, ..)) => Err(format!(
            "librdkafka refuses it: {desc} (its properties: {LIST})"
        )),
        Err(e) => Err(format!("librdkafka refuses it: {e}")),
    }
}

/// The job file's `source.properties` applied to a client's config, after its own settings.
pub trait WithProperties {
    /// Sets every property of `properties` ([`KafkaSettings::properties`], by librdkafka's
    /// own names), replacing the client's own setting of it under any other name.
    fn with_properties(&mut self, properties: &[(String, String)]) -> &mut Self;
}

impl WithProperties for ClientConfig {
    fn with_properties(&mut self, properties: &[(String, String)]) -> &mut Self {
        for (key, value) in properties {
            for (alias, _) in ALIASES.iter().filter(|(_, own)| own == key) {
                self.remove(alias);
            }
            self.set(key, value);
        }
        self
    }
}

/// How long leaving the group, or a synchronous commit, may take before the job goes on.
pub const GROUP_LIMIT: Duration = Duration::from_secs(15);

/// A group member whose leaving is bounded. librdkafka's close waits, without a limit of its
/// own, for the broker to acknowledge that the member left (and `BaseConsumer`'s drop polls
/// until it has); a broker that never answers would hang the job at its very end. After
/// [`GROUP_LIMIT`] the consumer is let go unclosed: the broker expires its session.
pub struct GroupConsumer<C: ConsumerContext + 'static = DefaultConsumerContext>(
    Option<BaseConsumer<C>>,
);

impl<C: ConsumerContext + 'static> GroupConsumer<C> {
    /// Wraps a consumer created with a `group.id`.
    pub fn new(consumer: BaseConsumer<C>) -> Self {
        GroupConsumer(Some(consumer))
    }

    /// Commits `offsets`: `Async` queues the commit; `Sync` waits until the group's committed
    /// offsets reach them, at most [`GROUP_LIMIT`] (librdkafka's own synchronous commit waits
    /// forever for an unreachable coordinator).
    pub fn commit_offsets(
        &self,
        offsets: &TopicPartitionList,
        mode: CommitMode,
    ) -> Result<(), String> {
        self.commit(offsets, CommitMode::Async)
            .map_err(|e| e.to_string())?;
        if matches!(mode, CommitMode::Async) {
            return Ok(());
        }
        let start = Instant::now();
        loop {
            let left = GROUP_LIMIT.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(format!("not acknowledged within {GROUP_LIMIT:?}"));
            }
            if let Ok(got) =
                self.committed_offsets(offsets.clone(), left.min(Duration::from_secs(2)))
                && reaches(&got, offsets)
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether every partition of `want` is committed at or beyond its offset in `got`.
fn reaches(got: &TopicPartitionList, want: &TopicPartitionList) -> bool {
    want.elements().iter().all(|w| {
        got.find_partition(w.topic(), w.partition())
            .is_some_and(|g| match (g.offset(), w.offset()) {
                (Offset::Offset(g), Offset::Offset(w)) => g >= w,
                (g, w) => g == w,
            })
    })
}

impl<C: ConsumerContext + 'static> Deref for GroupConsumer<C> {
    type Target = BaseConsumer<C>;
    fn deref(&self) -> &BaseConsumer<C> {
        self.0.as_ref().expect("present until dropped")
    }
}

impl<C: ConsumerContext + 'static> Drop for GroupConsumer<C> {
    fn drop(&mut self) {
        let Some(c) = self.0.take() else { return };
        let start = Instant::now();
        if c.close_queue().is_err() {
            return;
        }
        while !c.closed() {
            if start.elapsed() >= GROUP_LIMIT {
                tracing::warn!(
                    "kafka: leaving the group was not acknowledged within {GROUP_LIMIT:?}; \
                     going on (the broker expires the session)"
                );
                // Dropping it would poll until the broker answers, which it may never do.
                std::mem::forget(c);
                return;
            }
            c.poll(Duration::from_millis(100));
        }
        // Closed: the consumer's own drop finds nothing left to wait for.
    }
}

/// A worker's consumer: the partitions it owns (`partition % peers == worker`, assigned, not
/// subscribed, so no group rebalance ever moves one) and their reading state.
pub struct KafkaReader {
    /// The queue this worker's partitions are forwarded to, read a batch at a time (released
    /// before the consumer: `Drop`).
    batch: RefCell<Option<BatchQueue>>,
    consumer: GroupConsumer<SourceContext>,
    topic: String,
    brokers: String,
    worker: usize,
    peers: usize,
    /// Where the restored checkpoint resumes each partition.
    restored: BTreeMap<i32, Position>,
    /// `--from-start`: read every partition from its beginning, whatever the group committed.
    from_start: bool,
    /// The partitions this worker reads, once assigned.
    parts: RefCell<Option<BTreeMap<i32, Partition>>>,
    /// When to try the brokers again, and how long to wait after that.
    retry: std::cell::Cell<(Instant, Duration)>,
    /// The last problem said (said again only when it changes).
    told: RefCell<String>,
    /// Where the source's status is shown (`/state/source`).
    live: Live,
}

/// Publishes the partitions' positions and high watermarks from librdkafka's statistics
/// (every second; the watermarks are the ones the fetch responses carried, no extra request).
pub struct SourceContext {
    live: Live,
    topic: String,
    /// What librdkafka last reported wrong (said with "cannot reach the brokers").
    heard: Heard,
    /// The partitions whose fetching is stopped, as of the last statistics: their broker is
    /// not up (unreachable, restarting) or their fetch is not active. A caught-up partition
    /// among them does not move its watermark with the wall clock: records produced to it
    /// meanwhile are read when it comes back, and must not find the watermark past them.
    stalled: std::sync::Mutex<std::collections::HashSet<i32>>,
}

impl SourceContext {
    /// [`SourceContext::stalled`], now (held while the turn's watermarks move; the
    /// statistics come on the same thread, in a poll).
    fn stalled(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<i32>> {
        self.stalled.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.heard.error(error, reason);
    }

    fn stats(&self, s: Statistics) {
        let Some(t) = s.topics.get(&self.topic) else {
            return;
        };
        let up: std::collections::HashSet<i32> = (s.brokers.values())
            .filter(|b| b.state == "UP")
            .map(|b| b.nodeid)
            .collect();
        let stalled = (t.partitions.iter())
            .filter(|(p, tp)| **p >= 0 && (tp.fetch_state != "active" || !up.contains(&tp.broker)))
            .map(|(p, _)| *p)
            .collect();
        *self.stalled() = stalled;
        for (&p, tp) in &t.partitions {
            // -1 is librdkafka's "unassigned" pseudo-partition; "none" is not ours (any more).
            if p < 0 || tp.fetch_state == "none" || tp.hi_offset < 0 {
                continue;
            }
            // Never past the high watermark: librdkafka's batch read moves the application's
            // position past a partition's end (the end's own offset + 1).
            let next = tp
                .app_offset
                .max(tp.committed_offset)
                .max(tp.lo_offset)
                .max(0)
                .min(tp.hi_offset);
            self.live.source().set(p, next, Some(tp.hi_offset));
        }
    }
}

impl ConsumerContext for SourceContext {}

/// How long librdkafka postpones a partition's next fetch once its prefetched messages pass the
/// queue thresholds (`fetch.queue.backoff.ms`; librdkafka's default is 1,000 ms).
pub const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// How many messages librdkafka keeps prefetched for a worker (`queued.min.messages`; its
/// default is 100,000, held until the job reads them). The threshold is checked against the
/// queue a partition's fetch queue forwards to, and a worker's partitions all forward to its
/// batch queue (`kafka_batch.rs`): so this bounds a worker's prefetch, whatever its number of
/// partitions. Since the fetch queue's backoff is 10 ms the job does not wait on a smaller
/// queue: the 1M-request run peaks 12% lower (median 457 → 404 MiB over four alternating
/// pairs) at the same rate (bench/MEASURED.md "A smaller prefetch, again").
const QUEUED_MIN_MESSAGES: &str = "10000";

impl Drop for KafkaReader {
    fn drop(&mut self) {
        // The batch queue's handles go before the consumer, whatever the fields' order.
        self.batch.get_mut().take();
    }
}

impl KafkaReader {
    /// A consumer for worker `worker` of `peers`, resuming at `restored` (a checkpoint's
    /// positions). It reaches the brokers on its first turn.
    pub fn connect(
        s: &KafkaSettings,
        worker: usize,
        peers: usize,
        restored: BTreeMap<i32, Position>,
        from_start: bool,
        live: Live,
    ) -> anyhow::Result<Rc<KafkaReader>> {
        let consumer: BaseConsumer<SourceContext> = ClientConfig::new()
            .set("bootstrap.servers", &s.brokers)
            .set("group.id", &s.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "10")
            // Once a partition's prefetched messages pass librdkafka's queue thresholds, its
            // next fetch waits this long (1 s by default): reading a backlog faster than that
            // queue refills, the job drained it and then sat idle until the fetch (a third of
            // a 1M-request run, bench/MEASURED.md "The fetch queue's backoff").
            .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
            .set("queued.min.messages", QUEUED_MIN_MESSAGES)
            .set("session.timeout.ms", "10000")
            .set("statistics.interval.ms", "1000")
            // "Caught up" comes from the broker: a partition at its end moves its watermark with
            // the wall clock.
            .set("enable.partition.eof", "true")
            // A batch damaged on its way or on disk is a dead letter, not records read from
            // whatever its bytes now say (librdkafka does not check by default).
            .set("check.crcs", "true")
            .set("topic.metadata.refresh.interval.ms", "5000")
            .with_properties(&s.properties)
            .create_with_context(SourceContext {
                live: live.clone(),
                topic: s.topic.clone(),
                heard: Heard::default(),
                stalled: Default::default(),
            })?;
        Ok(Rc::new(KafkaReader {
            batch: RefCell::new(BatchQueue::new(&consumer)),
            live,
            consumer: GroupConsumer::new(consumer),
            topic: s.topic.clone(),
            brokers: s.brokers.clone(),
            worker,
            peers: peers.max(1),
            restored,
            from_start,
            parts: RefCell::new(None),
            retry: std::cell::Cell::new((Instant::now(), Duration::from_millis(500))),
            told: RefCell::new(String::new()),
        }))
    }

    fn tell(&self, what: String) {
        if self.worker == 0 {
            self.live.source().set_status(Some(what.clone()));
        }
        if self.worker == 0 && *self.told.borrow() != what {
            tracing::info!("{what}");
            *self.told.borrow_mut() = what;
        }
    }

    /// Assigns this worker's partitions once the brokers answer and the topic exists; until
    /// then says why (once) and tries again with backoff. Returns whether it is assigned.
    fn assign(&self) -> bool {
        if self.parts.borrow().is_some() {
            return true;
        }
        let (at, wait) = self.retry.get();
        if Instant::now() < at {
            return false;
        }
        self.retry.set((
            Instant::now() + wait,
            (wait * 2).min(Duration::from_secs(10)),
        ));
        let md = match self
            .consumer
            .fetch_metadata(Some(&self.topic), Duration::from_secs(2))
        {
            Ok(md) => {
                self.consumer.context().heard.clear();
                md
            }
            Err(e) => {
                // (The worker has nothing to read until the brokers answer.)
                let why = failed(&self.consumer, |c| &c.heard, &e);
                self.tell(format!(
                    "kafka: cannot reach the brokers at {} ({why}); retrying",
                    self.brokers
                ));
                return false;
            }
        };
        let count = md
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .filter(|t| t.error().is_none())
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if count == 0 {
            self.tell(format!(
                "kafka: topic {} does not exist yet; reading it as soon as it does",
                self.topic
            ));
            return false;
        }
        let owned: Vec<i32> = (0..count as i32)
            .filter(|p| *p as usize % self.peers == self.worker)
            .collect();
        // Without a checkpoint, start at the group's committed offsets (or the beginning);
        // `--from-start` reads from the beginning (it restored no parked messages either).
        let fresh: Vec<i32> = owned
            .iter()
            .copied()
            .filter(|p| !self.restored.contains_key(p) && !self.from_start)
            .collect();
        let committed = match self.committed(&fresh) {
            Ok(c) => c,
            Err(why) => {
                // Not "nothing committed": that would read the whole topic again.
                self.tell(format!(
                    "kafka: cannot read the group's committed offsets of {} ({why}); retrying",
                    self.topic
                ));
                return false;
            }
        };
        let mut tpl = TopicPartitionList::new();
        let mut parts = BTreeMap::new();
        for p in owned {
            let part = match self.restored.get(&p) {
                Some(pos) => Partition::new(p, Some(pos.clone()), pos.offset),
                None => Partition::new(p, None, committed.get(&p).copied().unwrap_or(0)),
            };
            let start = if self.restored.contains_key(&p) || committed.contains_key(&p) {
                Offset::Offset(part.next)
            } else {
                Offset::Beginning
            };
            if tpl.add_partition_offset(&self.topic, p, start).is_err() {
                continue;
            }
            // Before the assignment: all of the partition's messages then go to the batch
            // queue (one that cannot be forwarded is read from the consumer's queue instead).
            // A reader assigns its partitions once: librdkafka clears the forwarding when a
            // partition's fetch stops, and would not forward it again on a later assignment.
            if let Some(q) = self.batch.borrow_mut().as_mut() {
                q.forward(&self.consumer, &self.topic, p);
            }
            parts.insert(p, part);
        }
        if let Err(e) = self.consumer.assign(&tpl) {
            self.tell(format!(
                "kafka: cannot assign partitions of {}: {e}; retrying",
                self.topic
            ));
            return false;
        }
        if !self.told.borrow().is_empty() {
            self.tell(format!(
                "kafka: reading {} ({count} partitions)",
                self.topic
            ));
        }
        *self.parts.borrow_mut() = Some(parts);
        true
    }

    /// The group's committed offsets of `partitions` (one without a commit is missing).
    fn committed(&self, partitions: &[i32]) -> Result<HashMap<i32, i64>, String> {
        let mut committed = HashMap::new();
        if partitions.is_empty() {
            return Ok(committed);
        }
        let mut ask = TopicPartitionList::new();
        for &p in partitions {
            ask.add_partition(&self.topic, p);
        }
        let got = self
            .consumer
            .committed_offsets(ask, Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        for e in got.elements() {
            if let Err(why) = e.error() {
                return Err(format!("partition {}: {why}", e.partition()));
            }
            if let Offset::Offset(o) = e.offset() {
                committed.insert(e.partition(), o);
            }
        }
        Ok(committed)
    }

    /// This worker's positions as of cut `cut`.
    fn positions(&self, cut: Epoch) -> BTreeMap<i32, Position> {
        self.parts
            .borrow()
            .iter()
            .flatten()
            .map(|(&p, part)| (p, part.position(cut)))
            .collect()
    }

    /// Commits the offsets of a complete checkpoint for the partitions this worker reads.
    pub fn commit(&self, next: &BTreeMap<i32, i64>, mode: CommitMode) {
        let mut tpl = TopicPartitionList::new();
        for (&p, &o) in next {
            if p as usize % self.peers != self.worker || o < 0 {
                continue;
            }
            if tpl
                .add_partition_offset(&self.topic, p, Offset::Offset(o))
                .is_err()
            {
                continue;
            }
        }
        if tpl.count() == 0 {
            return;
        }
        // The checkpoint is what the job resumes from; a failed commit only means another
        // group reading the topic starts further back.
        if let Err(e) = self.consumer.commit_offsets(&tpl, mode) {
            tracing::warn!("offset commit failed (the checkpoint has them): {e}");
        }
    }
}

/// Reads this worker's partitions until `stop`, or until no record has come for `idle_exit`.
pub fn kafka_source<'s>(
    scope: Scope<'s, Epoch>,
    reader: Rc<KafkaReader>,
    checkpoints: Checkpoints,
    in_flight: usize,
    event: EventTime,
    progress: ProbeHandle<Epoch>,
    clock: Clock,
    stop: Arc<AtomicBool>,
    idle_exit: Option<Duration>,
    live: Live,
) -> StreamVec<'s, Epoch, SourceRecord> {
    let name: Arc<str> = reader.topic.clone().into();
    checkpoints.register_source();
    source::<_, Trimming<SourceRecord>, _, _>(scope, "KafkaSource", move |cap, info| {
        let activator = scope.activator_for(info.address);
        let mut cap = Some(cap);
        let mut last_record = Instant::now();
        let mut flight = InFlight::default();
        // The largest epoch a record was given at.
        let mut given_max: Epoch = 0;
        // A poll's records, kept between turns with its room.
        let mut batch: Vec<(Epoch, SourceRecord)> = Vec::new();
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            // Idle: every partition at its end (or none reachable) and nothing read for
            // `idle_exit`; time spent waiting on backpressure does not count.
            let drained = reader
                .parts
                .borrow()
                .as_ref()
                .is_none_or(|p| p.values().all(|x| x.caught_up));
            let idle = drained && idle_exit.is_some_and(|d| last_record.elapsed() >= d);
            let stopping = stop.load(Ordering::Relaxed);
            // Never assigned (the brokers unreachable): a stop has nothing to wait for.
            let unassigned = reader.parts.borrow().is_none();
            if stopping && unassigned {
                checkpoints.source_finished(reader.worker, given_max, |cut| reader.positions(cut));
                cap = None;
                return;
            }
            if stopping {
                // Stop at the next cut (see `Checkpoints::request_stop`).
                checkpoints.request_stop();
            }
            let reads = reader.parts.borrow().as_ref().is_none_or(|p| !p.is_empty());
            let hold = checkpoints.source_turn(reader.worker, *c.time(), reads);
            if let Some(b) = checkpoints.stop_bound()
                && *c.time() >= b
            {
                // Stopped at the cut: the capability stays until the run leaves (a source
                // without partitions may be past it: it deposits for the cut).
                for cut in checkpoints.cuts_to_deposit(reader.worker, *c.time()) {
                    checkpoints.deposit(cut, reader.worker, reader.positions(cut));
                }
                activator.activate_after(Duration::from_millis(100));
                return;
            }
            if idle {
                checkpoints.source_finished(reader.worker, given_max, |cut| reader.positions(cut));
                cap = None;
                return;
            }
            let stop_bound = checkpoints.stop_bound();
            if !reader.assign() {
                activator.activate_after(Duration::from_millis(100));
                return;
            }
            let now = clock.now_ms();
            let mut parts_ref = reader.parts.borrow_mut();
            let parts = parts_ref.as_mut().expect("assigned");
            // Only a turn that read moves caught-up partitions with the wall clock: what was
            // produced while the source was held back is still to be read.
            let polled = !flight.full(&progress, *c.time(), in_flight);
            if !polled {
                last_record = Instant::now();
            } else {
                poll_batch(
                    &reader,
                    parts,
                    &mut batch,
                    now,
                    &event,
                    *c.time(),
                    &live,
                    &name,
                );
            }
            let got = !batch.is_empty();
            for (e, _) in &batch {
                flight.add(*e, 1);
                given_max = given_max.max(*e);
            }
            give_stamped(output, c, &mut batch);
            let stalled = reader.consumer.context().stalled();
            let raise = Raise {
                now: polled.then_some(now),
                stalled: &stalled,
            };
            let mut target = least_watermark(parts, raise, &event, &live).unwrap_or(*c.time());
            if let Some(h) = hold {
                target = target.min(h);
            }
            if let Some(b) = stop_bound {
                target = target.min(b);
            }
            drop(parts_ref);
            if target > *c.time() {
                reader.advance(&checkpoints, c, target);
            }
            if got {
                last_record = Instant::now();
                activator.activate();
            } else {
                activator.activate_after(Duration::from_millis(5));
            }
        }
    })
}

impl KafkaReader {
    /// Moves the source's capability to `target`: deposits the positions of the cuts it
    /// passes, then forgets what the partitions kept for epochs before it.
    fn advance(&self, checkpoints: &Checkpoints, c: &mut Capability<Epoch>, target: Epoch) {
        for cut in checkpoints.cuts_to_deposit(self.worker, target) {
            checkpoints.deposit(cut, self.worker, self.positions(cut));
        }
        c.downgrade(&target);
        if let Some(parts) = self.parts.borrow_mut().as_mut() {
            for part in parts.values_mut() {
                part.prune(target);
            }
        }
    }
}

/// How a turn moves caught-up partitions with the wall clock.
struct Raise<'a> {
    /// The wall clock, on a turn that read (`None`: held back, nothing moves).
    now: Option<Millis>,
    /// Partitions whose fetching is stopped: they do not move.
    stalled: &'a std::collections::HashSet<i32>,
}

/// The least watermark epoch of the worker's partitions (none assigned: the wall clock's),
/// once the caught-up ones moved with the wall clock (a caught-up partition never holds the
/// frontier), unless the turn did not read or the partition's fetching is stopped; `None`
/// while a partition has no watermark yet.
fn least_watermark(
    parts: &mut BTreeMap<i32, Partition>,
    raise: Raise<'_>,
    event: &EventTime,
    live: &Live,
) -> Option<Epoch> {
    let floor = raise
        .now
        .map(|now| now.saturating_sub(event.max_out_of_order_ms));
    for part in parts.values_mut() {
        if let Some(floor) = floor
            && part.caught_up
            && !raise.stalled.contains(&part.id)
        {
            part.clock.raise(floor);
        }
        live.source().set_watermark(part.id, part.clock.watermark);
    }
    if parts.is_empty() {
        return floor.map(|f| event.epoch_of(f));
    }
    parts
        .values()
        .map(|p| p.watermark_epoch(event))
        .collect::<Option<Vec<Epoch>>>()
        .and_then(|w| w.into_iter().min())
}

/// Reads up to 4,096 records of the worker's partitions into `batch`, each stamped by its
/// partition's clock (none before `floor`, the source's capability); marks partitions at their
/// end as caught up. The batch queue first (the partitions' messages), then the consumer's
/// queue through rdkafka (its events and errors, and any partition not forwarded).
#[allow(clippy::too_many_arguments)]
fn poll_batch(
    reader: &KafkaReader,
    parts: &mut BTreeMap<i32, Partition>,
    batch: &mut Vec<(Epoch, SourceRecord)>,
    now: i64,
    event: &EventTime,
    floor: Epoch,
    live: &Live,
    name: &Arc<str>,
) {
    let at = Stamping {
        now,
        event,
        floor,
        live,
        name,
    };
    if let Some(q) = reader.batch.borrow_mut().as_mut() {
        let mut skips: Vec<i32> = Vec::new();
        let mut seek = |p, next| reader.skip_to(p, next);
        // In the queue's order: a partition's end, then a record that came after it, leaves
        // the partition reading (not caught up).
        q.read(4096usize.saturating_sub(batch.len()), |item| {
            if let Some(e) = at.route(parts, batch, &mut skips, &mut seek, item) {
                reader.error(parts, e);
            }
        });
    }
    // The consumer's queue every turn, however full the batch: a backlog fills it from the
    // batch queue turn after turn, and the statistics and errors would wait for its end.
    let mut polls = 0;
    while batch.len() < 4096 || polls < EVENTS_PER_TURN {
        polls += 1;
        match reader.consumer.poll(Duration::ZERO) {
            None => break,
            Some(Err(e)) => {
                if !reader.error(parts, e) {
                    break;
                }
            }
            Some(Ok(m)) => {
                let ts = m.timestamp().to_millis();
                let payload = m.payload().unwrap_or_default();
                at.take(parts, batch, m.partition(), m.offset(), payload, ts);
            }
        }
    }
}

/// Polls of the consumer's queue a turn makes even when the batch queue filled the batch (its
/// events: librdkafka's statistics every second, errors).
const EVENTS_PER_TURN: usize = 16;

/// How a poll's records are stamped: at `now`, by `event`'s rules, none before `floor`.
struct Stamping<'a> {
    now: Millis,
    event: &'a EventTime,
    floor: Epoch,
    live: &'a Live,
    name: &'a Arc<str>,
}

impl Stamping<'_> {
    /// Stamps record `o` of partition `p` (its Kafka timestamp `ts`, if any) by its
    /// partition's clock and adds it to `batch`; a partition not the worker's is skipped.
    fn take(
        &self,
        parts: &mut BTreeMap<i32, Partition>,
        batch: &mut Vec<(Epoch, SourceRecord)>,
        p: i32,
        o: i64,
        payload: &[u8],
        ts: Option<i64>,
    ) {
        let Some(part) = parts.get_mut(&p) else {
            return;
        };
        if o < part.next {
            // Offsets go back only when librdkafka reset a position out of range to the
            // beginning (the topic was made again, its log cut): these records were never
            // read, so none is skipped as inside the restored cut. (Their message ids are
            // those of the old records at the same offsets.)
            tracing::warn!(
                "kafka: partition {p} went back from offset {} to {o} (its position was out of range: the topic made again, or its log cut); reading on from {o}",
                part.next
            );
            part.rewound(o);
        }
        let now = self.now;
        // No timestamp (librdkafka's -1, a v0 record): the read time, as a file line without
        // `ts`; any other is the record's own, so 0 is a dead letter (before 2000) as a
        // line's `"ts": 0` is.
        let ts = ts.unwrap_or(now);
        let big = too_large(payload.len());
        let time = match &big {
            Some(why) => Err(why.clone()),
            None => Ok(ts),
        };
        let Some(s) = part.stamp(o, 0, time, now, self.event, self.floor) else {
            return;
        };
        if s.late_by > 0 {
            self.live.source().add_late(p, 1);
        }
        let bytes = match big {
            Some(_) => oversized(payload, payload.len()),
            None => payload.to_vec(),
        };
        batch.push((s.epoch, self.record(p, o, bytes, Some(ts), s)));
    }

    /// Takes one item of a read of the batch queue: a record into `batch`, an unreadable
    /// batch's report as a dead letter, its partition sought one past it with `seek`; an
    /// error to say is given back.
    ///
    /// Once a partition is sought, the rest of the read's items of it are dropped (it is put
    /// in `skips`): the seek has librdkafka fetch them again. So each fetch of a damaged
    /// batch is one dead letter however the broker cut its responses: librdkafka reads on
    /// past a batch that fails its CRC when more batches came in the same response (its
    /// records never given), and stops at one it cannot decompress. A seek that fails drops
    /// nothing: what librdkafka gives after the report is read on.
    fn route(
        &self,
        parts: &mut BTreeMap<i32, Partition>,
        batch: &mut Vec<(Epoch, SourceRecord)>,
        skips: &mut Vec<i32>,
        seek: &mut impl FnMut(i32, i64) -> bool,
        item: Item<'_>,
    ) -> Option<KafkaError> {
        if item.partition().is_some_and(|p| skips.contains(&p)) {
            return None;
        }
        match item {
            Item::Record {
                partition,
                offset,
                payload,
                timestamp,
            } => self.take(parts, batch, partition, offset, payload, timestamp),
            Item::Unreadable {
                partition,
                offset,
                reason,
            } => {
                if let Some(next) = self.unreadable(parts, batch, partition, offset, &reason)
                    && seek(partition, next)
                {
                    skips.push(partition);
                }
            }
            Item::Error(e) => return Some(e),
        }
        None
    }

    /// Takes in librdkafka's report that partition `p`'s batch at `first` cannot be read: the
    /// offset it stands for (`first`, or the partition's next when that is further in the
    /// batch) becomes a dead letter with `reason`, judged as a record without a time is.
    /// The offset to read the partition from next, or `None` if it is not the worker's.
    ///
    /// librdkafka fetches such a batch again and again, and its records cannot be counted,
    /// so the source steps over it one offset a fetch: each of its offsets is one dead letter,
    /// at the same offsets however the topic is read (a restart, another worker count).
    fn unreadable(
        &self,
        parts: &mut BTreeMap<i32, Partition>,
        batch: &mut Vec<(Epoch, SourceRecord)>,
        p: i32,
        first: i64,
        reason: &str,
    ) -> Option<i64> {
        let part = parts.get_mut(&p)?;
        let o = first.max(part.next);
        let why = format!(
            "Kafka record batch from offset {first} cannot be read ({reason}); offset {o} skipped"
        );
        if let Some(s) = part.stamp(o, 0, Err(why), self.now, self.event, self.floor) {
            self.live.source().add_unreadable(p, 1);
            batch.push((s.epoch, self.record(p, o, Vec::new(), None, s)));
        }
        Some(o + 1)
    }

    fn record(
        &self,
        p: i32,
        o: i64,
        bytes: Vec<u8>,
        timestamp: Option<Millis>,
        s: Stamped,
    ) -> SourceRecord {
        SourceRecord {
            source: self.name.clone(),
            partition: p,
            offset: o,
            bytes,
            read_time: self.now,
            timestamp,
            event_time: s.event_time,
            late_by: s.late_by,
            bad_time: s.bad_time,
        }
    }
}

impl KafkaReader {
    /// Reads partition `p` from `offset` on, past a batch librdkafka cannot read. Without
    /// waiting: the messages of the partition already fetched are dropped by librdkafka (the
    /// seek outdates them). A seek librdkafka refuses at once (it has no state for the
    /// partition) is said. Whether it was queued.
    fn skip_to(&self, p: i32, offset: i64) -> bool {
        match self
            .consumer
            .seek(&self.topic, p, Offset::Offset(offset), Duration::ZERO)
        {
            Ok(()) => true,
            Err(e) => {
                self.tell(format!(
                    "warning: kafka: partition {p}: cannot skip to offset {offset}: {e}"
                ));
                false
            }
        }
    }

    /// Takes in an error of a poll: a partition at its end is caught up; anything else is
    /// said. Whether to read on.
    fn error(&self, parts: &mut BTreeMap<i32, Partition>, e: KafkaError) -> bool {
        match e {
            KafkaError::PartitionEOF(p) => {
                if let Some(part) = parts.get_mut(&p) {
                    part.caught_up = true;
                }
                true
            }
            e if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {
                self.tell(format!(
                    "kafka: topic {} does not exist yet; reading it as soon as it does",
                    self.topic
                ));
                false
            }
            e => {
                self.tell(format!("warning: kafka: {e}"));
                false
            }
        }
    }
}

/// Reaches the brokers and reads the topic's metadata (for `tidings check`).
pub fn reach(k: &KafkaSettings) -> Result<String, String> {
    let topic = &k.topic;
    let consumer: BaseConsumer<Heard> = ClientConfig::new()
        .set("bootstrap.servers", &k.brokers)
        .with_properties(&k.properties)
        .create_with_context(Heard::default())
        .map_err(|e| e.to_string())?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .map_err(|e| failed(&consumer, |c| c, &e))?;
    // The topic's own error is in the answer, not the request's: a topic that does not exist
    // (or that the credentials may not describe) was reported "0 partition(s)", and passed.
    let fix = "create it, or fix source.topic (the job waits for it)";
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Err(format!("topic {topic}: not in the brokers' answer; {fix}"));
    };
    if let Some(e) = t.error() {
        return Err(format!(
            "topic {topic}: {}; {fix}",
            RDKafkaErrorCode::from(e)
        ));
    }
    let partitions = t.partitions().len();
    if partitions == 0 {
        return Err(format!("topic {topic}: no partitions; {fix}"));
    }
    Ok(format!(
        "{} broker(s); topic {topic}: {partitions} partition(s)",
        md.brokers().len()
    ))
}

/// `e`, a request of `consumer`'s that failed, with why: the request's own error says only
/// "transport failure", and why is in librdkafka's error events (a failed TLS handshake, a
/// refused connection), served by a poll (at most 100 ms).
/// `heard` finds the consumer's [`Heard`] in its context.
fn failed<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    heard: fn(&C) -> &Heard,
    e: &KafkaError,
) -> String {
    let _ = consumer.poll(Duration::from_millis(100));
    match heard(consumer.context()).last() {
        Some(why) => format!("{e}: {why}"),
        None => e.to_string(),
    }
}

/// A client's context that keeps the last error librdkafka reported (until the brokers
/// answer: librdkafka reports an identical broker error once in 30 s, so a retry in between
/// hears nothing new).
#[derive(Default)]
pub(crate) struct Heard(std::sync::Mutex<Option<String>>);

impl Heard {
    fn last(&self) -> Option<String> {
        self.0.lock().ok()?.clone()
    }

    fn clear(&self) {
        if let Ok(mut last) = self.0.lock() {
            *last = None;
        }
    }

    /// Keeps `reason` unless it only counts the brokers down (the reason why they are is
    /// the one to keep).
    fn hear(&self, error: &KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            return;
        }
        if let Ok(mut last) = self.0.lock() {
            *last = Some(reason.to_string());
        }
    }
}

impl ClientContext for Heard {
    /// Kept; logged only when librdkafka logs no line of its own for it (the brokers all
    /// down, a fatal error): a broker's failure is in the log as librdkafka's `FAIL` line.
    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::Fatal) => {
                tracing::warn!("kafka: {error}: {reason}")
            }
            _ => tracing::debug!("kafka: {error}: {reason}"),
        }
        self.hear(&error, reason);
    }
}

impl ConsumerContext for Heard {}

/// One record to produce.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The record key.
    pub key: Option<String>,
    /// The request JSON.
    pub payload: String,
    /// The record timestamp (ms); `None` lets the producer stamp it.
    pub timestamp: Option<i64>,
}

impl Outgoing {
    /// A file line as a record, read as the file source reads it (`read_line`): a kcat `-J`
    /// envelope gives key, timestamp and payload; any other line is the payload itself. `Err`:
    /// why the job would refuse the line's time (a `ts` that is not a number of milliseconds,
    /// or before 2000: the producer would stamp a `ts` of 0 with the wall clock, and the job
    /// accept what its file source refuses).
    pub fn of_line(line: &str) -> Result<Outgoing, String> {
        let bytes = tidings_model::request::strip_bom(line.as_bytes());
        let read = tidings_operators::event_time::read_line(bytes, 0);
        read.time?;
        let whole = || String::from_utf8_lossy(bytes).into_owned();
        let Some(payload) = read.payload else {
            // Not an envelope, or one whose payload the job refuses (as it is, whole).
            return Ok(Outgoing {
                key: None,
                payload: whole(),
                timestamp: None,
            });
        };
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let timestamp = match v.get("ts").and_then(|t| t.as_i64()) {
            None | Some(-1) => None,
            // The bounds of any event time (the future's is the job's, checked as it reads).
            Some(t) => {
                tidings_model::time::check_event_time(t, t, 0)?;
                Some(t)
            }
        };
        Ok(Outgoing {
            key: v.get("key").and_then(|k| k.as_str()).map(str::to_string),
            payload: String::from_utf8(payload).unwrap_or_else(|_| whole()),
            timestamp,
        })
    }
}

/// Produces records to a topic, waiting when the local queue is full; `progress` is called
/// after each record is queued. Returns once every record is acknowledged.
pub fn produce(
    brokers: &str,
    topic: &str,
    records: impl IntoIterator<Item = Outgoing>,
    progress: impl FnMut(),
) -> anyhow::Result<u64> {
    produce_with(brokers, &[], topic, records, progress)
}

/// [`produce`] with a job's client properties ([`KafkaSettings::properties`]).
pub fn produce_with(
    brokers: &str,
    properties: &[(String, String)],
    topic: &str,
    records: impl IntoIterator<Item = Outgoing>,
    progress: impl FnMut(),
) -> anyhow::Result<u64> {
    let never = AtomicBool::new(false);
    produce_acked(brokers, properties, topic, records, progress, &never).0
}

/// [`produce_with`] that gives up as soon as `stop` is set (a Ctrl-C), failing: records
/// produced by then may or may not have been delivered. Also returns the places (in
/// `records`) of the records the broker acknowledged, whatever the outcome: a caller that
/// tries again produces only the others.
/// The producer is not idempotent: such a producer first asks the broker for its id, and its
/// first records, stamped as produced, waited for it past a caught-up source's out-of-order
/// bound (four of five records late in `admin.rs`).
pub fn produce_acked(
    brokers: &str,
    properties: &[(String, String)],
    topic: &str,
    records: impl IntoIterator<Item = Outgoing>,
    progress: impl FnMut(),
    stop: &std::sync::atomic::AtomicBool,
) -> (anyhow::Result<u64>, Vec<usize>) {
    let producer = match ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000")
        .with_properties(properties)
        .create_with_context(Undelivered {
            acked: Some(Default::default()),
            ..Undelivered::default()
        }) {
        Ok(p) => p,
        Err(e) => return (Err(e.into()), Vec::new()),
    };
    let produced = produce_on(&producer, topic, records, progress, stop);
    // The reports already in (a failure returns before the last flush).
    producer.poll(Duration::ZERO);
    let acked = producer.context().take_acked();
    (produced, acked)
}

fn produce_on(
    producer: &BaseProducer<Undelivered>,
    topic: &str,
    records: impl IntoIterator<Item = Outgoing>,
    mut progress: impl FnMut(),
    stop: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<u64> {
    let stopped = || anyhow::anyhow!("stopped before the broker acknowledged every record");
    let mut n = 0;
    // A record refused before it was queued (larger than `message.max.bytes`) ends the
    // producing; what was queued is still flushed, so its acknowledgements are known.
    let mut refused: Option<KafkaError> = None;
    for r in records {
        let mut rec =
            BaseRecord::<String, String, usize>::with_opaque_to(topic, n).payload(&r.payload);
        if let Some(k) = &r.key {
            rec = rec.key(k);
        }
        if let Some(ts) = r.timestamp {
            rec = rec.timestamp(ts);
        }
        match send_when_room(producer, rec, stop) {
            Ok(()) => {}
            Err(None) => return Err(stopped()),
            Err(Some(e)) => {
                refused = Some(e);
                break;
            }
        }
        n += 1;
        progress();
        producer.poll(Duration::ZERO);
    }
    // Flushed a slice at a time, so a stop is seen within 200 ms.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while let Err(e) = producer.flush(Duration::from_millis(200)) {
        if stop.load(Ordering::Relaxed) {
            return Err(stopped());
        }
        if std::time::Instant::now() >= deadline {
            return Err(e.into());
        }
    }
    if let Some(e) = refused {
        // Counted from 1, as a file's lines are: the record after the `n` queued.
        return Err(anyhow::anyhow!("record {} refused: {e}", n + 1));
    }
    match producer.context().take()[..] {
        [] => Ok(n as u64),
        ref failed => anyhow::bail!(
            "{} of {n} record(s) not delivered: {}",
            failed.len(),
            failed[0].1
        ),
    }
}

/// Sends `record`, polling while the producer's queue is full: `Err(None)` once `stop` is set
/// first, `Err(Some(e))` for a record refused otherwise (larger than `message.max.bytes`).
fn send_when_room<K: rdkafka::message::ToBytes + ?Sized, P: rdkafka::message::ToBytes + ?Sized>(
    producer: &BaseProducer<Undelivered>,
    mut record: BaseRecord<'_, K, P, usize>,
    stop: &AtomicBool,
) -> Result<(), Option<KafkaError>> {
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(None);
        }
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((e, back)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                producer.poll(Duration::from_millis(50));
                record = back;
            }
            Err((e, _)) => return Err(Some(e)),
        }
    }
}

/// The records the broker did not take, by the place each was produced with, and why
/// (librdkafka reports each once, after its retries): [`produce_acked`] fails instead of
/// saying they were sent, and [`DeadLetterTopic::flush`] keeps them.
#[derive(Default)]
struct Undelivered {
    refused: std::sync::Mutex<Vec<(usize, String)>>,
    /// When kept: the places of the records acknowledged ([`produce_acked`]).
    acked: Option<std::sync::Mutex<Vec<usize>>>,
}

impl Undelivered {
    /// The records refused since the last call.
    fn take(&self) -> Vec<(usize, String)> {
        std::mem::take(&mut *self.refused.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The records acknowledged, when kept.
    fn take_acked(&self) -> Vec<usize> {
        self.acked.as_ref().map_or_else(Vec::new, |a| {
            std::mem::take(&mut *a.lock().unwrap_or_else(|p| p.into_inner()))
        })
    }
}

impl ClientContext for Undelivered {}

impl rdkafka::producer::ProducerContext for Undelivered {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, place: usize) {
        match (result, &self.acked) {
            (Err((e, _)), _) => (self.refused.lock().unwrap_or_else(|p| p.into_inner()))
                .push((place, e.to_string())),
            (Ok(_), Some(acked)) => acked.lock().unwrap_or_else(|p| p.into_inner()).push(place),
            (Ok(_), None) => {}
        }
    }
}

/// Produces dead letters to a topic; [`DeadLetterTopic::flush`] produces what was queued and
/// waits for every acknowledgement, and the tracking stage calls it before letting an epoch
/// go. A letter the topic refused (it does not exist, the brokers are away) is kept and
/// produced again by the next flush: the flush fails, and tracking retries it with backoff,
/// holding the epoch, as it does a tracking write that fails. Nothing panics, nothing is lost.
pub struct DeadLetterTopic {
    producer: BaseProducer<Undelivered>,
    topic: String,
    /// Letters not yet acknowledged: (key, body).
    pending: std::sync::Mutex<Vec<(String, String)>>,
}

impl DeadLetterTopic {
    /// A producer for `topic` on the job's brokers.
    pub fn connect(k: &KafkaSettings, topic: &str) -> anyhow::Result<DeadLetterTopic> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &k.brokers)
            .set("linger.ms", "5")
            // A letter the brokers cannot take is reported within this, and kept for the
            // next flush (librdkafka's default is 5 minutes).
            .set("message.timeout.ms", "30000")
            .with_properties(&k.properties)
            .create_with_context(Undelivered::default())?;
        Ok(DeadLetterTopic {
            producer,
            topic: topic.to_string(),
            pending: Default::default(),
        })
    }

    /// Queues one dead letter (keyed by its source position); the next flush produces it.
    pub fn send(&self, d: &tidings_model::DeadLetter) {
        let body = serde_json::json!({"time": d.time, "source": d.source, "payload": d.payload, "reason": d.reason})
            .to_string();
        self.lock().push((d.source.clone(), body));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, String)>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Produces the queued letters and waits until each is acknowledged; those refused stay
    /// queued, and the error says how many and why.
    pub fn flush(&self) -> anyhow::Result<()> {
        let letters = std::mem::take(&mut *self.lock());
        if letters.is_empty() {
            return Ok(());
        }
        let mut refused: Vec<(usize, String)> = Vec::new();
        for (place, (key, body)) in letters.iter().enumerate() {
            let record = BaseRecord::with_opaque_to(&self.topic, place)
                .key(key.as_str())
                .payload(body.as_str());
            if let Err(Some(e)) = send_when_room(&self.producer, record, &AtomicBool::new(false)) {
                refused.push((place, e.to_string()));
            }
        }
        let flushed = self.producer.flush(Duration::from_secs(60));
        refused.extend(self.producer.context().take());
        if let Err(e) = flushed {
            // Not all acknowledged: every letter is produced again (a letter twice on the
            // topic rather than none).
            let mut pending = self.lock();
            let later = std::mem::replace(&mut *pending, letters);
            pending.extend(later);
            anyhow::bail!("dead-letter topic {}: {e}", self.topic);
        }
        if refused.is_empty() {
            return Ok(());
        }
        let why = refused[0].1.clone();
        let places: std::collections::HashSet<usize> = refused.iter().map(|(p, _)| *p).collect();
        let count = places.len();
        let mut again: Vec<(String, String)> = (letters.into_iter().enumerate())
            .filter(|(place, _)| places.contains(place))
            .map(|(_, letter)| letter)
            .collect();
        let mut pending = self.lock();
        again.append(&mut pending);
        *pending = again;
        anyhow::bail!(
            "dead-letter topic {}: {count} letter(s) refused ({why}); they are produced again",
            self.topic
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wall clock of the stamping tests.
    const NOW: Millis = 1_763_740_800_000;

    /// `tidings send -f` reads a line as the file source does: an envelope's `ts` the job
    /// would refuse is refused before anything is sent (a `ts` of 0 was given to the producer,
    /// which stamps 0 with the wall clock: the job then accepted what its file source refuses).
    #[test]
    fn a_file_line_is_read_as_the_file_source_reads_it() {
        let request = r#"{"code":"send","messageTemplateId":1}"#;
        let bare = Outgoing::of_line(request).unwrap();
        assert_eq!(
            (bare.key, bare.payload.as_str(), bare.timestamp),
            (None, request, None)
        );
        let envelope = |ts: &str| {
            format!(
                r#"{{"ts": {ts}, "key": "k1", "payload": {}}}"#,
                serde_json::json!(request)
            )
        };
        let e = Outgoing::of_line(&format!("\u{feff}{}", envelope("1763770200000"))).unwrap();
        assert_eq!(
            (e.key.as_deref(), e.payload.as_str(), e.timestamp),
            (Some("k1"), request, Some(1_763_770_200_000))
        );
        assert_eq!(Outgoing::of_line(&envelope("-1")).unwrap().timestamp, None);
        assert_eq!(
            Outgoing::of_line(&envelope("null")).unwrap().timestamp,
            None
        );
        let zero = Outgoing::of_line(&envelope("0")).unwrap_err();
        assert!(zero.contains("before 2000-01-01"), "{zero}");
        let text = Outgoing::of_line(&envelope("\"1763770200000\"")).unwrap_err();
        assert!(text.contains("is not a number of milliseconds"), "{text}");
        let float = Outgoing::of_line(&envelope("1.5")).unwrap_err();
        assert!(float.contains("not a whole number"), "{float}");
        // An envelope whose payload is not a string goes whole, for the job to refuse.
        let odd = r#"{"ts": 1763770200000, "payload": 7}"#;
        assert_eq!(Outgoing::of_line(odd).unwrap().payload, odd);
    }

    /// What a test's [`Stamping`] borrows: 10 ms epochs, 200 ms out of order, a day ahead.
    struct Fixture {
        event: EventTime,
        live: Live,
        name: Arc<str>,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                event: EventTime {
                    epoch_ms: 10,
                    max_out_of_order_ms: 200,
                    max_future_ms: 86_400_000,
                    backlog: tidings_operators::event_time::Backlog::NONE,
                },
                live: Live::default(),
                name: "t".into(),
            }
        }

        fn at(&self) -> Stamping<'_> {
            Stamping {
                now: NOW,
                event: &self.event,
                floor: 0,
                live: &self.live,
                name: &self.name,
            }
        }
    }

    /// A partition whose offsets go back (librdkafka reset a position out of range to the
    /// beginning) has its records read, none skipped as inside the restored cut.
    #[test]
    fn records_after_a_reset_to_the_beginning_are_read_not_skipped() {
        let fixture = Fixture::new();
        let at = fixture.at();
        // Restored at offset 500 (everything before it read); the topic was made again, and
        // librdkafka reset the out-of-range position to the beginning.
        let restored = Position {
            offset: 500,
            byte: 0,
            clock: Default::default(),
            read_to: 520,
            after: vec![510],
            fingerprint: None,
            tail: None,
        };
        let mut parts: BTreeMap<i32, Partition> =
            [(0, Partition::new(0, Some(restored), 500))].into();
        let mut batch = Vec::new();
        for o in 0..3 {
            at.take(&mut parts, &mut batch, 0, o, b"{}", Some(NOW));
        }
        let offsets: Vec<i64> = batch.iter().map(|(_, r)| r.offset).collect();
        assert_eq!(offsets, [0, 1, 2], "none skipped as inside the cut");
        assert_eq!(parts[&0].next, 3);
    }

    /// A read's items as the batch queue gives them when a fetch response held a batch that
    /// failed its CRC and more after it (librdkafka then reads on past it): the report is a
    /// dead letter, the partition's later items in that read are dropped and it is sought one
    /// past; another partition's items are taken. The report again from the fetch after the
    /// seek stands for the next offset. A refused seek drops nothing.
    #[test]
    fn a_report_makes_one_dead_letter_and_drops_the_rest_of_its_partition() {
        let fixture = Fixture::new();
        let (at, now, live) = (fixture.at(), NOW, &fixture.live);
        let mut parts: BTreeMap<i32, Partition> =
            (0..2).map(|p| (p, Partition::new(p, None, 0))).collect();
        let mut batch = Vec::new();
        let mut skips = Vec::new();
        let record = |partition, offset| Item::Record {
            partition,
            offset,
            payload: b"{}",
            timestamp: Some(now),
        };
        let report = || Item::Unreadable {
            partition: 0,
            offset: 1,
            reason: "failed CRC32C check".into(),
        };
        let read = [
            record(0, 0),
            report(),
            record(0, 3),
            record(1, 0),
            Item::Error(KafkaError::PartitionEOF(0)),
            report(),
            Item::Error(KafkaError::PartitionEOF(1)),
        ];
        let mut said = Vec::new();
        let mut sought = Vec::new();
        let mut seek = |p, next| {
            sought.push((p, next));
            true
        };
        for item in read {
            said.extend(at.route(&mut parts, &mut batch, &mut skips, &mut seek, item));
        }
        let given: Vec<(i32, i64, Option<String>)> = batch
            .drain(..)
            .map(|(_, r)| (r.partition, r.offset, r.bad_time))
            .collect();
        let why = "Kafka record batch from offset 1 cannot be read (failed CRC32C check)";
        assert_eq!(
            given,
            [
                (0, 0, None),
                (0, 1, Some(format!("{why}; offset 1 skipped"))),
                (1, 0, None),
            ]
        );
        assert_eq!((&sought[..], &skips[..]), (&[(0, 2)][..], &[0][..]));
        assert!(
            matches!(said[..], [KafkaError::PartitionEOF(1)]),
            "{said:?}"
        );
        // Partition 0's end was dropped with the rest (it comes again after the seek).
        assert!(!parts[&0].caught_up);
        assert_eq!(parts[&0].next, 2);

        // The fetch from offset 2 brings the same batch, reported at its first offset again.
        skips.clear();
        sought.clear();
        let mut seek = |p, next| {
            sought.push((p, next));
            true
        };
        assert!(
            at.route(&mut parts, &mut batch, &mut skips, &mut seek, report())
                .is_none()
        );
        assert_eq!(
            batch.pop().unwrap().1.bad_time,
            Some(format!("{why}; offset 2 skipped"))
        );
        assert_eq!(sought, [(0, 3)]);

        // A seek librdkafka refuses drops nothing: the records it gave after the report
        // (it read on past the batch) are taken.
        skips.clear();
        let mut refused = |_, _| false;
        for item in [report(), record(0, 5)] {
            at.route(&mut parts, &mut batch, &mut skips, &mut refused, item);
        }
        let given: Vec<i64> = batch.drain(..).map(|(_, r)| r.offset).collect();
        assert_eq!((given, skips.len()), (vec![3, 5], 0));
        // Counted for /state/source and /metrics.
        let counted: Vec<(i32, u64)> = live
            .source()
            .watermarks()
            .iter()
            .map(|w| (w.0, w.3))
            .collect();
        assert_eq!(counted, [(0, 3)]);
    }

    /// A record's timestamp is its event time as a file line's `ts` is: none (librdkafka's
    /// -1) is the read time, and 0 is a dead letter (before 2000), as `"ts": 0` is in a file.
    #[test]
    fn a_records_timestamp_is_read_as_a_lines_ts() {
        let fixture = Fixture::new();
        let (at, now) = (fixture.at(), NOW);
        let mut parts: BTreeMap<i32, Partition> = [(0, Partition::new(0, None, 0))].into();
        let (mut batch, mut skips) = (Vec::new(), Vec::new());
        let mut seek = |_, _| true;
        for (offset, timestamp) in [(0, None), (1, Some(0))] {
            let item = Item::Record {
                partition: 0,
                offset,
                payload: b"{}",
                timestamp,
            };
            let said = at.route(&mut parts, &mut batch, &mut skips, &mut seek, item);
            assert!(said.is_none());
        }
        let [(_, none), (_, zero)] = &batch[..] else {
            panic!("two records: {}", batch.len());
        };
        assert_eq!((none.event_time, &none.bad_time), (now, &None));
        let line = tidings_model::time::check_event_time(0, now, 86_400_000).unwrap_err();
        assert_eq!(zero.bad_time.as_deref(), Some(line.as_str()));
    }

    /// librdkafka is built with TLS and SCRAM (rdkafka's `ssl` feature): clients for a
    /// `SASL_SSL` broker with each mechanism the docs name are made (no broker is needed to
    /// make one); Kerberos is not built, and is refused when a client is made.
    #[test]
    fn clients_for_tls_and_scram_are_made_and_kerberos_is_refused() {
        let make = |mechanism: &str| {
            ClientConfig::new()
                .set("bootstrap.servers", "127.0.0.1:1")
                .set("security.protocol", "SASL_SSL")
                .set("sasl.mechanism", mechanism)
                .set("sasl.username", "tidings")
                .set("sasl.password", "secret")
                .create::<BaseProducer>()
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        for m in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] {
            make(m).unwrap_or_else(|e| panic!("{m}: {e}"));
        }
        let refused = make("GSSAPI").unwrap_err();
        assert!(refused.contains("GSSAPI"), "{refused}");
    }
}
