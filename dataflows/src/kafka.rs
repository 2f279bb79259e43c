//! The Kafka source and the producer behind `tidings send`.
//!
//! Every worker is one member of the job's consumer group, so the broker spreads the topic's
//! partitions over the workers. Epochs are 100 ms ticks of the wall clock since the job
//! started: every worker advances its capability with the clock, so an idle worker never
//! holds the others back. Decisions follow the records' event time (the Kafka timestamp),
//! not the epoch.
//!
//! **At-least-once.** Offsets are never auto-committed. When the source's epoch passes a
//! checkpoint epoch it deposits the next offset of each partition it reads into that
//! checkpoint ([`tidings_operators::checkpoint`]); once the "done" probe (after the tracking
//! stage) has passed the checkpoint, every receiver of its records is terminal or durably
//! parked, its rows are on disk and the dedup windows are saved with the offsets; only then
//! are the offsets committed. A crash replays the records after the newest checkpoint; they
//! get the same message ids (a pure function of topic, partition, offset and param index).

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
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tidings_operators::checkpoint::{Checkpoints, FINAL};
use tidings_operators::live::Live;
use tidings_operators::{Clock, Epoch, SourceRecord};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};

/// Default length of one epoch of the Kafka source (`source.epoch_ms`).
pub const TICK: Duration = Duration::from_millis(100);

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
    /// Epochs between checkpoints.
    pub checkpoint_every: u64,
    /// Length of one epoch (wall clock).
    pub tick: Duration,
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
                eprintln!(
                    "warning: kafka: leaving the group was not acknowledged within {GROUP_LIMIT:?}; \
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

/// A worker's consumer and its uncommitted offsets.
pub struct KafkaReader {
    consumer: GroupConsumer<SourceContext>,
    topic: String,
    tick: Duration,
    worker: usize,
    /// The next offset to read per partition, as far as this worker has read.
    next: RefCell<HashMap<i32, i64>>,
    /// Records below these offsets are already in the restored checkpoint's state.
    skip_below: BTreeMap<i32, i64>,
    /// Whether "the topic does not exist yet" has been said.
    told_missing: std::cell::Cell<bool>,
}

/// Publishes the partitions' positions and high watermarks from librdkafka's statistics
/// (every second; the watermarks are the ones the fetch responses carried, no extra request).
pub struct SourceContext {
    live: Live,
    topic: String,
}

impl ClientContext for SourceContext {
    fn stats(&self, s: Statistics) {
        let Some(t) = s.topics.get(&self.topic) else {
            return;
        };
        for (&p, tp) in &t.partitions {
            // -1 is librdkafka's "unassigned" pseudo-partition; "none" is not ours (any more).
            if p < 0 || tp.fetch_state == "none" || tp.hi_offset < 0 {
                continue;
            }
            let next = tp
                .app_offset
                .max(tp.committed_offset)
                .max(tp.lo_offset)
                .max(0);
            self.live.source().set(p, next, Some(tp.hi_offset));
        }
    }
}

impl ConsumerContext for SourceContext {}

impl KafkaReader {
    /// Joins the group and subscribes.
    pub fn connect(
        s: &KafkaSettings,
        worker: usize,
        skip_below: BTreeMap<i32, i64>,
        live: Live,
    ) -> anyhow::Result<Rc<KafkaReader>> {
        let consumer: BaseConsumer<SourceContext> = ClientConfig::new()
            .set("bootstrap.servers", &s.brokers)
            .set("group.id", &s.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "10")
            .set("session.timeout.ms", "10000")
            .set("statistics.interval.ms", "1000")
            // A job started before its topic exists finds it within seconds, not minutes.
            .set("topic.metadata.refresh.interval.ms", "5000")
            .create_with_context(SourceContext {
                live,
                topic: s.topic.clone(),
            })?;
        consumer.subscribe(&[&s.topic])?;
        Ok(Rc::new(KafkaReader {
            consumer: GroupConsumer::new(consumer),
            topic: s.topic.clone(),
            tick: s.tick,
            worker,
            next: RefCell::new(HashMap::new()),
            skip_below,
            told_missing: std::cell::Cell::new(false),
        }))
    }

    /// Commits next offsets (those of a complete checkpoint) to the group.
    pub fn commit(&self, next: &HashMap<i32, i64>, mode: CommitMode) {
        if next.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (&p, &o) in next {
            if tpl
                .add_partition_offset(&self.topic, p, Offset::Offset(o))
                .is_err()
            {
                continue;
            }
        }
        // A failed commit (e.g. the partition moved in a rebalance) only means a replay of
        // records already done: duplicates, never losses.
        if let Err(e) = self.consumer.commit_offsets(&tpl, mode) {
            eprintln!("warning: offset commit failed (records may be replayed): {e}");
        }
    }

    /// Deposits this worker's offsets for every checkpoint epoch in `[from, to)`.
    fn deposit(&self, checkpoints: &Checkpoints, from: Epoch, to: Epoch) {
        let next = self.next.borrow();
        let mut c = checkpoints.next_at_or_after(from);
        while c < to {
            checkpoints.deposit_offsets(c, self.worker, &next);
            c = checkpoints.next_at_or_after(c + 1);
        }
    }
}

/// Reads the topic until `stop`, or until no record has come for `idle_exit`.
pub fn kafka_source<'s>(
    scope: Scope<'s, Epoch>,
    reader: Rc<KafkaReader>,
    checkpoints: Checkpoints,
    in_flight: u64,
    progress: ProbeHandle<Epoch>,
    clock: Clock,
    stop: Arc<AtomicBool>,
    idle_exit: Option<Duration>,
) -> StreamVec<'s, Epoch, SourceRecord> {
    let name: Arc<str> = reader.topic.clone().into();
    source::<_, CapacityContainerBuilder<Vec<SourceRecord>>, _, _>(
        scope,
        "KafkaSource",
        move |cap, info| {
            let activator = scope.activator_for(info.address);
            let mut cap = Some(cap);
            let start = Instant::now();
            let mut last_record = Instant::now();
            let mut seen_any = false;
            move |output| {
                let Some(c) = cap.as_mut() else { return };
                // Before the first record the group may still be (re)balancing (after a crash, the
                // dead members' session must time out first): wait four times as long then.
                let idle = idle_exit.is_some_and(|d| {
                    let limit = if seen_any { d } else { d * 4 };
                    last_record.elapsed() >= limit
                });
                if stop.load(Ordering::Relaxed) || idle {
                    checkpoints.deposit_offsets(FINAL, reader.worker, &reader.next.borrow());
                    cap = None;
                    return;
                }
                let epoch = (start.elapsed().as_millis() / reader.tick.as_millis().max(1)) as Epoch;
                if epoch > *c.time() {
                    // Everything of the epochs left behind has been read: their offsets are
                    // this worker's share of any checkpoint among them.
                    reader.deposit(&checkpoints, *c.time(), epoch);
                    c.downgrade(&epoch);
                }
                let epoch = *c.time();
                // Backpressure: the backlog waits in Kafka, not in memory.
                if epoch >= in_flight && progress.less_than(&(epoch - in_flight)) {
                    activator.activate_after(Duration::from_millis(5));
                    return;
                }
                let read_time = clock.now_ms();
                let mut batch = Vec::new();
                while batch.len() < 4096 {
                    match reader.consumer.poll(Duration::ZERO) {
                        None => break,
                        Some(Err(e))
                            if e.rdkafka_error_code()
                                == Some(RDKafkaErrorCode::UnknownTopicOrPartition) =>
                        {
                            if reader.worker == 0 && !reader.told_missing.replace(true) {
                                eprintln!(
                                    "kafka: topic {} does not exist yet; reading it as soon as it does",
                                    reader.topic
                                );
                            }
                            break;
                        }
                        Some(Err(e)) => {
                            eprintln!("warning: kafka: {e}");
                            break;
                        }
                        Some(Ok(m)) => {
                            let (p, o) = (m.partition(), m.offset());
                            reader.next.borrow_mut().insert(p, o + 1);
                            if reader.skip_below.get(&p).is_some_and(|&s| o < s) {
                                continue;
                            }
                            batch.push(SourceRecord {
                                source: name.clone(),
                                partition: m.partition(),
                                offset: m.offset(),
                                bytes: m.payload().unwrap_or_default().to_vec(),
                                read_time,
                                timestamp: Some(
                                    m.timestamp()
                                        .to_millis()
                                        .filter(|t| *t > 0)
                                        .unwrap_or(read_time),
                                ),
                            });
                        }
                    }
                }
                if batch.is_empty() {
                    activator.activate_after(Duration::from_millis(5));
                } else {
                    last_record = Instant::now();
                    seen_any = true;
                    output.session(&*c).give_iterator(batch.into_iter());
                    activator.activate();
                }
            }
        },
    )
}

/// Reaches the brokers and reads the topic's metadata (for `tidings check`).
pub fn reach(brokers: &str, topic: &str) -> Result<String, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| e.to_string())?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let partitions = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    Ok(format!(
        "{} broker(s); topic {topic}: {partitions} partition(s)",
        md.brokers().len()
    ))
}

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
    /// A file line as a record: a kcat `-J` envelope gives key, timestamp and payload; any
    /// other line is the payload itself.
    pub fn of_line(line: &str) -> Outgoing {
        let v: Option<serde_json::Value> = serde_json::from_str(line).ok();
        if let Some(obj) = v.as_ref().and_then(|v| v.as_object())
            && !obj.contains_key("code")
            && let Some(payload) = obj.get("payload").and_then(|p| p.as_str())
        {
            return Outgoing {
                key: obj.get("key").and_then(|k| k.as_str()).map(str::to_string),
                payload: payload.to_string(),
                timestamp: obj.get("ts").and_then(|t| t.as_i64()),
            };
        }
        Outgoing {
            key: None,
            payload: line.to_string(),
            timestamp: None,
        }
    }
}

/// Produces records to a topic, waiting when the local queue is full; `progress` is called
/// after each record is queued. Returns once every record is acknowledged.
pub fn produce(
    brokers: &str,
    topic: &str,
    records: impl IntoIterator<Item = Outgoing>,
    mut progress: impl FnMut(),
) -> anyhow::Result<u64> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000")
        .create()?;
    let mut n = 0;
    for r in records {
        loop {
            let mut rec = BaseRecord::<String, String>::to(topic).payload(&r.payload);
            if let Some(k) = &r.key {
                rec = rec.key(k);
            }
            if let Some(ts) = r.timestamp {
                rec = rec.timestamp(ts);
            }
            match producer.send(rec) {
                Ok(()) => break,
                Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        n += 1;
        progress();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(n)
}

/// Produces dead letters to a topic; [`DeadLetterTopic::flush`] waits for every
/// acknowledgement, and the tracking stage calls it before letting an epoch go.
pub struct DeadLetterTopic {
    producer: BaseProducer,
    topic: String,
}

impl DeadLetterTopic {
    /// A producer for `topic` on `brokers`.
    pub fn connect(brokers: &str, topic: &str) -> anyhow::Result<DeadLetterTopic> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "5")
            .create()?;
        Ok(DeadLetterTopic {
            producer,
            topic: topic.to_string(),
        })
    }

    /// Queues one dead letter (keyed by its source position).
    pub fn send(&self, d: &tidings_model::DeadLetter) {
        let body = serde_json::json!({"time": d.time, "source": d.source, "payload": d.payload, "reason": d.reason})
            .to_string();
        loop {
            match self
                .producer
                .send(BaseRecord::to(&self.topic).key(&d.source).payload(&body))
            {
                Ok(()) => return,
                Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => panic!("dead-letter topic {}: {e}", self.topic),
            }
        }
    }

    /// Waits until every queued dead letter is acknowledged.
    pub fn flush(&self) -> anyhow::Result<()> {
        Ok(self.producer.flush(Duration::from_secs(60))?)
    }
}
