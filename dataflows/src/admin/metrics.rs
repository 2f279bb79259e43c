//! `/metrics` in the OpenMetrics text format, with `prometheus-client`: one [`Collector`] reads
//! the job's live state at each scrape (counts of durable tracking rows, account statistics,
//! the source's positions and watermarks, checkpoints, parked deliveries, dedup state). Every
//! series carries the `job` label of the registry it is registered in.

use std::borrow::Cow;
use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use tidings_sinks::util::stats::{LATENCY_BUCKETS, StatsSnapshot};

use super::{ANSWER_TIMEOUT, AdminState};

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A registry holding the job's collector, every series labelled `job="NAME"`.
pub fn registry(state: Arc<AdminState>) -> Registry {
    let mut registry = Registry::default();
    let job = escape(&state.job.file.name);
    registry
        .sub_registry_with_label((Cow::Borrowed("job"), Cow::Owned(job)))
        .register_collector(Box::new(JobMetrics { state }));
    registry
}

/// The answer to `GET /metrics`.
pub fn answer(registry: &Registry) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "metrics could not be encoded",
        )
            .into_response(),
    }
}

/// Escapes a label value (`prometheus-client` writes values as given); the service's own
/// families (`serve::metrics`) use it too.
pub(crate) fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Label pairs of one series (values escaped).
type Labels = Vec<(&'static str, String)>;

/// A sample's value.
#[derive(Debug, Clone, Copy)]
enum V {
    /// A whole number.
    N(u64),
    /// A real number.
    F(f64),
}

/// One metric family: its name (without the `_total` a counter gets), help, unit and type.
struct Family {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    kind: MetricType,
}

const fn family(name: &'static str, kind: MetricType, help: &'static str) -> Family {
    Family {
        name,
        help,
        unit: None,
        kind,
    }
}

const fn seconds(name: &'static str, kind: MetricType, help: &'static str) -> Family {
    Family {
        name,
        help,
        unit: Some(Unit::Seconds),
        kind,
    }
}

/// Writes a family and its samples.
fn write(
    encoder: &mut DescriptorEncoder,
    f: &Family,
    samples: impl IntoIterator<Item = (Labels, V)>,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(f.name, f.help, f.unit.as_ref(), f.kind)?;
    for (labels, v) in samples {
        let e = metric.encode_family(&labels)?;
        match (f.kind, v) {
            (MetricType::Counter, V::N(n)) => ConstCounter::new(n).encode(e)?,
            (MetricType::Counter, V::F(x)) => ConstCounter::new(x).encode(e)?,
            (_, V::N(n)) => ConstGauge::new(n as i64).encode(e)?,
            (_, V::F(x)) => ConstGauge::new(x).encode(e)?,
        }
    }
    Ok(())
}

/// The job's metrics, read from its live state at each scrape.
struct JobMetrics {
    state: Arc<AdminState>,
}

impl std::fmt::Debug for JobMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobMetrics").finish_non_exhaustive()
    }
}

impl Collector for JobMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        self.tracking(&mut encoder)?;
        self.accounts(&mut encoder)?;
        self.source(&mut encoder)?;
        self.state(&mut encoder)
    }
}

/// Per-account statistics written as gauges or counters.
const ACCOUNT_STATS: [(Family, fn(&StatsSnapshot) -> u64); 8] = [
    (
        family(
            "tidings_sends_waiting",
            MetricType::Gauge,
            "Sends waiting for rate-limit permits.",
        ),
        |s| s.waiting,
    ),
    (
        family(
            "tidings_sends_in_flight",
            MetricType::Gauge,
            "Sends holding a concurrency slot.",
        ),
        |s| s.in_flight,
    ),
    (
        family(
            "tidings_sends_retrying",
            MetricType::Gauge,
            "Sends pausing before another try.",
        ),
        |s| s.retrying,
    ),
    (
        family("tidings_send_retries", MetricType::Counter, "Retries made."),
        |s| s.retries,
    ),
    (
        family(
            "tidings_receivers_sent",
            MetricType::Counter,
            "Receivers a provider accepted.",
        ),
        |s| s.sent,
    ),
    (
        family(
            "tidings_receivers_failed",
            MetricType::Counter,
            "Receivers that ended in SEND_FAIL.",
        ),
        |s| s.failed,
    ),
    (
        family(
            "tidings_shared_calls",
            MetricType::Counter,
            "Provider calls that carried several messages.",
        ),
        |s| s.shared_calls,
    ),
    (
        family(
            "tidings_shared_call_messages",
            MetricType::Counter,
            "Messages carried by provider calls shared by several messages.",
        ),
        |s| s.shared_call_messages,
    ),
];

impl JobMetrics {
    /// Durable tracking rows by state, channel and template; dead letters; tracking health.
    fn tracking(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let state = &self.state;
        let counts = state.counts.lock().unwrap_or_else(|p| p.into_inner());
        let events = counts.per_template.iter().map(|((template, st), n)| {
            let channel = state
                .job
                .templates
                .get(*template)
                .map(|t| t.channel.name())
                .unwrap_or("unknown");
            let labels = vec![
                ("state", st.name().to_string()),
                ("state_code", st.code().to_string()),
                ("channel", channel.to_string()),
                ("template", template.to_string()),
            ];
            (labels, V::N(*n))
        });
        write(
            e,
            &family(
                "tidings_events",
                MetricType::Counter,
                "Tracking rows made durable, by state, channel and template.",
            ),
            events,
        )?;
        write(
            e,
            &family(
                "tidings_dead_letters",
                MetricType::Counter,
                "Records and messages rejected as dead letters.",
            ),
            [(vec![], V::N(counts.dead_letters))],
        )?;
        write(
            e,
            &family(
                "tidings_tracking_write_failures",
                MetricType::Counter,
                "Failed attempts to write tracking rows (each retried; new sends wait meanwhile).",
            ),
            [(vec![], V::N(counts.tracking_write_failures))],
        )?;
        write(
            e,
            &family(
                "tidings_tracking_failing",
                MetricType::Gauge,
                "Workers whose tracking writes are failing now (sends are held while above 0).",
            ),
            [(vec![], V::N(counts.tracking_failing_workers as u64))],
        )
    }

    /// Provider call latency, per-account send statistics, rate limiters, account queues.
    fn accounts(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let state = &self.state;
        let accounts = &state.send.accounts;
        let all: Vec<_> = (0..accounts.len()).map(|i| accounts.get(i)).collect();
        let account = |a: &tidings_sinks::account::Account| vec![("account", escape(&a.name))];
        {
            let f = seconds(
                "tidings_send_latency",
                MetricType::Histogram,
                "Provider call latency per attempt, by account and provider.",
            );
            let mut metric = e.encode_descriptor(f.name, f.help, f.unit.as_ref(), f.kind)?;
            for a in &all {
                let labels: Labels = vec![
                    ("account", escape(&a.name)),
                    ("provider", a.provider().to_string()),
                    ("channel", a.channel.name().to_string()),
                ];
                // prometheus-client takes counts per bucket and adds them up itself.
                let (own, count, sum) = a.stats.latency.per_bucket();
                let below: u64 = own.iter().sum();
                let mut buckets: Vec<(f64, u64)> =
                    LATENCY_BUCKETS.iter().copied().zip(own).collect();
                buckets.push((f64::MAX, count.saturating_sub(below)));
                metric
                    .encode_family(&labels)?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        sum, count, &buckets, None,
                    )?;
            }
        }
        let snaps: Vec<_> = all.iter().map(|a| (*a, a.stats.snapshot())).collect();
        for (f, of) in &ACCOUNT_STATS {
            write(e, f, snaps.iter().map(|(a, s)| (account(a), V::N(of(s)))))?;
        }
        write(
            e,
            &family(
                "tidings_rate_limit_tokens",
                MetricType::Gauge,
                "Rate-limit permits available now, by account.",
            ),
            all.iter().filter_map(|a| {
                let (per, burst) = a.rate()?;
                let tokens = (a.stats.tokens(per, burst) * 10.0).floor() / 10.0;
                Some((account(a), V::F(tokens)))
            }),
        )?;
        write(
            e,
            &family(
                "tidings_account_queue_read_not_sent",
                MetricType::Gauge,
                "Deliveries read from an account topic and not yet sent.",
            ),
            all.iter().enumerate().filter_map(|(i, a)| {
                state.send.queues.topic(i)?;
                Some((account(a), V::N(state.send.queues.queued(i) as u64)))
            }),
        )
    }

    /// Kafka positions and lag; per-partition event-time watermarks and late records.
    fn source(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let state = &self.state;
        let topic = state
            .job
            .kafka
            .as_ref()
            .map(|k| escape(&k.topic))
            .unwrap_or_default();
        let at = |p: &dyn std::fmt::Display| -> Labels {
            vec![("topic", topic.clone()), ("partition", p.to_string())]
        };
        let parts = state.live.source().partitions();
        write(
            e,
            &family(
                "tidings_consumer_lag",
                MetricType::Gauge,
                "Records behind the partition's high watermark.",
            ),
            parts
                .iter()
                .filter_map(|(p, _, _, lag)| Some((at(p), V::N((*lag)? as u64)))),
        )?;
        let clocks = state.live.source().watermarks();
        write(
            e,
            &seconds(
                "tidings_source_watermark",
                MetricType::Gauge,
                "The event-time watermark of the partition (Unix seconds): records before it are late.",
            ),
            clocks
                .iter()
                .filter_map(|(p, w, _, _)| Some((at(p), V::F((*w)? as f64 / 1000.0)))),
        )?;
        let now = state.clock.now_ms();
        write(
            e,
            &seconds(
                "tidings_source_watermark_lag",
                MetricType::Gauge,
                "How far the partition's watermark is behind the wall clock.",
            ),
            clocks.iter().filter_map(|(p, w, _, _)| {
                let lag = now.saturating_sub((*w)?).max(0) as f64 / 1000.0;
                Some((at(p), V::F(lag)))
            }),
        )?;
        write(
            e,
            &family(
                "tidings_source_late_records",
                MetricType::Counter,
                "Records that came later than source.max_out_of_order_ms behind their partition's watermark (judged at the watermark).",
            ),
            clocks.iter().map(|(p, _, late, _)| (at(p), V::N(*late))),
        )?;
        write(
            e,
            &family(
                "tidings_source_unreadable_offsets",
                MetricType::Counter,
                "Offsets of record batches the source could not read (not decompressed, a failed CRC): each a dead letter.",
            ),
            clocks.iter().map(|(p, _, _, n)| (at(p), V::N(*n))),
        )?;
        write(
            e,
            &family(
                "tidings_consumer_next_offset",
                MetricType::Gauge,
                "The next offset the source reads, by partition.",
            ),
            parts
                .iter()
                .map(|(p, next, _, _)| (at(p), V::N((*next).max(0) as u64))),
        )
    }

    /// Checkpoints, parked deliveries, dedup state, uptime.
    fn state(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let state = &self.state;
        let c = state.live.checkpoint();
        write(
            e,
            &family(
                "tidings_checkpoints",
                MetricType::Counter,
                "Checkpoints completed by this run.",
            ),
            [(vec![], V::N(c.completed()))],
        )?;
        if let Some(last) = c.last() {
            write(
                e,
                &seconds(
                    "tidings_checkpoint_age",
                    MetricType::Gauge,
                    "Seconds since the last completed checkpoint.",
                ),
                [(vec![], V::F((super::now_ms() - last) as f64 / 1000.0))],
            )?;
        }
        write(
            e,
            &family(
                "tidings_parked",
                MetricType::Gauge,
                "night_delay deliveries parked.",
            ),
            [(vec![], V::N(state.live.park().count()))],
        )?;
        let summaries: Vec<_> = state
            .live
            .operators()
            .into_iter()
            .filter_map(|n| Some((n, state.live.summary(n, ANSWER_TIMEOUT).ok()?)))
            .collect();
        let operator = |n: &str| vec![("operator", n.to_string())];
        write(
            e,
            &family(
                "tidings_dedup_keys",
                MetricType::Gauge,
                "Keys held by a dedup operator.",
            ),
            summaries.iter().map(|(n, s)| (operator(n), V::N(s.keys))),
        )?;
        write(
            e,
            &family(
                "tidings_dedup_bytes",
                MetricType::Gauge,
                "Estimated bytes held by a dedup operator.",
            ),
            summaries.iter().map(|(n, s)| (operator(n), V::N(s.bytes))),
        )?;
        write(
            e,
            &seconds(
                "tidings_uptime",
                MetricType::Gauge,
                "Seconds since the run started.",
            ),
            [(vec![], V::F(state.started.elapsed().as_secs_f64()))],
        )
    }
}
