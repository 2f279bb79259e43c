//! A worker's partitions read a batch at a time: the only `unsafe` code of the project.
//!
//! rdkafka's safe API reads one message per `poll`: librdkafka wraps each message in an event,
//! rdkafka allocates an `Arc` for it, and both read the clock (a deadline, a poll histogram):
//! ~1,200 instructions a message, a twentieth of what the job spends on a request
//! (bench/MEASURED.md "The Kafka source reads a batch at a time"). librdkafka's own
//! `rd_kafka_consume_batch_queue` takes up to a batch of messages off a queue in one call;
//! rdkafka does not bind it, so this module does, and nothing else.
//!
//! Each partition the worker reads is forwarded to a queue of the worker's own *before* it is
//! assigned (librdkafka keeps an application's forwarding when the fetch starts), so all of a
//! partition's messages arrive there, in offset order, and none on the consumer's queue. The
//! consumer's queue is still polled through rdkafka for its events (statistics, errors), and
//! any partition that could not be forwarded is read there as before: a partition is read from
//! one queue only, so its order holds.
//!
//! The queue handles are released before the consumer: the reader that holds both drops its
//! [`BatchQueue`] first. A partition's error that librdkafka does not return as a message (a
//! topic deleted while it is read) goes to librdkafka's log instead of the source's status.

#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::ptr::{self, NonNull};

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// What one read gives per message: a record, or an error librdkafka put in the partition's
/// queue (such as its end).
pub enum Item<'a> {
    /// A record; `payload` lives as long as the call it is given to.
    Record {
        partition: i32,
        offset: i64,
        payload: &'a [u8],
        /// Its Kafka timestamp, when it has one.
        timestamp: Option<i64>,
    },
    /// A batch of records at `offset` (its first) librdkafka cannot read: it could not
    /// decompress it (or its codec is not built in), or it failed its CRC check. librdkafka
    /// fetches one it cannot decompress again and again, and one that failed its CRC too when
    /// it was the last of a fetch's response (otherwise it reads on past it, its records
    /// neither given nor counted).
    Unreadable {
        partition: i32,
        offset: i64,
        /// librdkafka's words for it.
        reason: String,
    },
    /// An error of a partition (`PartitionEOF` at its end), as rdkafka's poll gives it.
    Error(KafkaError),
}

impl Item<'_> {
    /// The partition the item is of (an error other than a partition's end is of none).
    pub fn partition(&self) -> Option<i32> {
        match self {
            Item::Record { partition, .. } | Item::Unreadable { partition, .. } => Some(*partition),
            Item::Error(KafkaError::PartitionEOF(p)) => Some(*p),
            Item::Error(_) => None,
        }
    }
}

/// A queue of the worker's own that its partitions are forwarded to.
pub struct BatchQueue {
    queue: NonNull<rd::rd_kafka_queue_t>,
    /// Each forwarded partition's queue handle, released (and unforwarded) on drop.
    parts: BTreeMap<i32, NonNull<rd::rd_kafka_queue_t>>,
    /// One read's messages (released when cleared or dropped).
    got: Vec<Message>,
}

impl BatchQueue {
    /// A new queue of `consumer`'s client, or `None` if librdkafka gives none.
    pub fn new<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Option<BatchQueue> {
        // SAFETY: the client pointer is valid while `consumer` is; the queue is released in
        // `drop`, which runs before the consumer's (see the module's note).
        let queue =
            NonNull::new(unsafe { rd::rd_kafka_queue_new(consumer.client().native_ptr()) })?;
        Some(BatchQueue {
            queue,
            parts: BTreeMap::new(),
            got: Vec::new(),
        })
    }

    /// Forwards partition `p` of `topic` to this queue (once); call it before the partition is
    /// assigned. Whether it is forwarded.
    pub fn forward<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        topic: &str,
        p: i32,
    ) -> bool {
        if self.parts.contains_key(&p) {
            return true;
        }
        let Ok(name) = CString::new(topic) else {
            return false;
        };
        // SAFETY: valid client and C string; librdkafka creates the partition's state if it
        // does not know it yet and returns a handle of its fetch queue (or null).
        let part = unsafe {
            rd::rd_kafka_queue_get_partition(consumer.client().native_ptr(), name.as_ptr(), p)
        };
        let Some(part) = NonNull::new(part) else {
            return false;
        };
        // SAFETY: both handles are valid; forwarding moves anything already queued along.
        unsafe { rd::rd_kafka_queue_forward(part.as_ptr(), self.queue.as_ptr()) };
        self.parts.insert(p, part);
        true
    }

    /// Takes at most `max` messages off the queue without waiting, in the order they came,
    /// giving each to `each`; every message is released after its call.
    pub fn read(&mut self, max: usize, mut each: impl FnMut(Item<'_>)) {
        if max == 0 {
            return;
        }
        self.got.clear();
        self.got.reserve(max);
        // SAFETY: `got` has room for `max` messages, each a pointer (`Message` is transparent);
        // librdkafka writes `n` of them, each a message we own until it is released.
        let n = unsafe {
            rd::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                0,
                self.got.as_mut_ptr().cast::<*mut rd::rd_kafka_message_t>(),
                max,
            )
        };
        let n = usize::try_from(n).unwrap_or(0).min(max);
        // SAFETY: librdkafka wrote the first `n`; from here `got` owns them (released as it is
        // cleared, or dropped if `each` panics).
        unsafe { self.got.set_len(n) };
        for m in &self.got {
            each(m.item());
        }
        self.got.clear();
    }
}

/// One message taken off the queue, released on drop.
#[repr(transparent)]
struct Message(*mut rd::rd_kafka_message_t);

impl Message {
    fn item(&self) -> Item<'_> {
        // SAFETY: a message from `rd_kafka_consume_batch_queue`, not yet released; its
        // payload (`len` bytes, or null) lives until then, which `&self` bounds.
        unsafe {
            let m = &*self.0;
            if m.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return match RDKafkaErrorCode::from(m.err) {
                    RDKafkaErrorCode::PartitionEOF => {
                        Item::Error(KafkaError::PartitionEOF(m.partition))
                    }
                    // A bad codec's data, a failed CRC (`check.crcs`), a codec this build
                    // lacks: the same bytes fail the same way however often they are fetched.
                    // Only a batch's report has its offset (others, such as a failed offset
                    // lookup, have none).
                    code @ (RDKafkaErrorCode::BadCompression
                    | RDKafkaErrorCode::BadMessage
                    | RDKafkaErrorCode::NotImplemented)
                        if m.offset >= 0 =>
                    {
                        // The report's own words (its payload), or the code's name.
                        let text = rd::rd_kafka_message_errstr(self.0);
                        Item::Unreadable {
                            partition: m.partition,
                            offset: m.offset,
                            reason: if text.is_null() {
                                code.to_string()
                            } else {
                                std::ffi::CStr::from_ptr(text)
                                    .to_string_lossy()
                                    .into_owned()
                            },
                        }
                    }
                    code => Item::Error(KafkaError::MessageConsumption(code)),
                };
            }
            let payload = if m.payload.is_null() {
                &[][..]
            } else {
                std::slice::from_raw_parts(m.payload as *const u8, m.len)
            };
            let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
            let ts = rd::rd_kafka_message_timestamp(self.0, &mut kind);
            let timestamp = (kind
                != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
                && ts != -1)
                .then_some(ts);
            Item::Record {
                partition: m.partition,
                offset: m.offset,
                payload,
                timestamp,
            }
        }
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        // SAFETY: released once, here.
        unsafe { rd::rd_kafka_message_destroy(self.0) };
    }
}

impl Drop for BatchQueue {
    fn drop(&mut self) {
        self.got.clear();
        for part in self.parts.values() {
            // SAFETY: handles from `forward`, released once; unforwarded first so that the
            // partition no longer points at the queue released below.
            unsafe {
                rd::rd_kafka_queue_forward(part.as_ptr(), ptr::null_mut());
                rd::rd_kafka_queue_destroy(part.as_ptr());
            }
        }
        // SAFETY: the handle from `new`, released once (any message still in it with it).
        unsafe { rd::rd_kafka_queue_destroy(self.queue.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    //! Against the real broker (`scripts/services.sh start`; `KAFKA_BROKERS`).

    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::error::KafkaError;
    use rdkafka::{Offset, TopicPartitionList};

    use super::{BatchQueue, Item};
    use crate::kafka::{Outgoing, produce};

    /// Every record of every partition comes through the batch queue once, in offset order,
    /// with its payload and timestamp, each partition's end comes as `PartitionEOF`, and the
    /// consumer's own queue gives no message.
    #[test]
    fn forwarded_partitions_are_read_whole_in_order_from_the_batch_queue() {
        let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let topic = format!("batch-queue-{nanos}");
        let sent: Vec<(String, i64)> = (0..500)
            .map(|i| (format!("record {i}"), 1_700_000_000_000 + i))
            .collect();
        let records = sent.iter().enumerate().map(|(i, (p, ts))| Outgoing {
            key: Some(format!("k{}", i % 7)),
            payload: p.clone(),
            timestamp: Some(*ts),
        });
        produce(&brokers, &topic, records, || {}).unwrap();

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", format!("g-{topic}"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()
            .unwrap();
        let md = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .unwrap();
        let count = md.topics()[0].partitions().len() as i32;
        assert!(
            count > 1,
            "the tests' broker makes 4 partitions on first use: {count}"
        );
        let mut queue = BatchQueue::new(&consumer).expect("a queue");
        let mut tpl = TopicPartitionList::new();
        for p in 0..count {
            assert!(queue.forward(&consumer, &topic, p));
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();

        let mut read: BTreeMap<i32, Vec<(i64, String, Option<i64>)>> = BTreeMap::new();
        let mut ended = std::collections::BTreeSet::new();
        let start = Instant::now();
        while ended.len() < count as usize {
            assert!(start.elapsed() < Duration::from_secs(60), "read {read:?}");
            queue.read(64, |item| match item {
                Item::Record {
                    partition,
                    offset,
                    payload,
                    timestamp,
                } => read.entry(partition).or_default().push((
                    offset,
                    String::from_utf8(payload.to_vec()).unwrap(),
                    timestamp,
                )),
                Item::Error(KafkaError::PartitionEOF(partition)) => {
                    ended.insert(partition);
                }
                Item::Error(e) => panic!("not a partition's end: {e}"),
                Item::Unreadable { reason, .. } => panic!("an unreadable batch: {reason}"),
            });
            // The consumer's queue: events only.
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(10)) {
                panic!("a message on the consumer's queue: {m:?}");
            }
        }
        let mut all = Vec::new();
        for (p, records) in &read {
            let offsets: Vec<i64> = records.iter().map(|r| r.0).collect();
            let want: Vec<i64> = (0..records.len() as i64).collect();
            assert_eq!(offsets, want, "partition {p} out of order or with gaps");
            all.extend(records.iter().map(|r| (r.1.clone(), r.2)));
        }
        all.sort();
        let mut want: Vec<(String, Option<i64>)> =
            sent.iter().map(|(p, ts)| (p.clone(), Some(*ts))).collect();
        want.sort();
        assert_eq!(all, want);
        // Released before the consumer.
        drop(queue);
        drop(consumer);
    }
}
