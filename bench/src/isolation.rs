//! `tidings-bench isolation`: a backlog on one account must not delay another channel.
//!
//! Produces `backlog` receivers (requests of 100 receivers) for an SMS account limited to
//! `rate`/s, starts the job, and once it has had `warmup` seconds to read that backlog, produces
//! email notices (another account, no limit) at `notices` per second for `seconds`. Reports the
//! notices' produce → SEND_SUCCESS latency (the Kafka timestamp to the row's `time`, read back
//! from the Parquet tracking) and this process's RSS, sampled every 100 ms. `--baseline` runs
//! the same with the SMS account queued in memory (`queue = "memory"`), the way a single send
//! stage would hold it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tidings_dataflows::kafka::{Outgoing, produce};
use tidings_dataflows::{Job, RunOptions, run};

/// What to run.
pub struct Isolation {
    pub brokers: String,
    pub backlog: u64,
    pub rate: u32,
    pub notices: u32,
    pub seconds: u64,
    pub warmup: u64,
    pub baseline: bool,
    pub epoch_ms: Option<u64>,
    pub in_flight_receivers: Option<usize>,
}

const TEMPLATES: &str = r#"
[[template]]
id = 1
name = "bulk"
channel = "sms"
msg_type = "marketing"
id_type = "phone"
account = "slow"
dedup = false
[template.content]
content = "Sale ends {$day}."

[[template]]
id = 2
name = "notice"
channel = "email"
msg_type = "notice"
id_type = "email"
account = "fast"
dedup = false
[template.content]
title = "Notice"
content = "Your order {$order} has shipped."
"#;

/// The peak RSS of the run: the kernel's own peak (`VmHWM`, reset at the start), so a spike
/// between samples counts; sampled every 100 ms on a thread of its own where the reset is not
/// available.
enum PeakRss {
    /// `VmHWM` was reset at the start: it is this run's peak.
    Kernel,
    /// Sampled until stopped.
    Sampled {
        peak: Arc<AtomicU64>,
        sampling: Arc<AtomicBool>,
        thread: std::thread::JoinHandle<()>,
    },
}

impl PeakRss {
    fn start() -> PeakRss {
        if crate::reset_peak_rss().is_some() {
            return PeakRss::Kernel;
        }
        let peak = Arc::new(AtomicU64::new(0));
        let sampling = Arc::new(AtomicBool::new(true));
        let thread = {
            let (peak, sampling) = (peak.clone(), sampling.clone());
            std::thread::spawn(move || {
                while sampling.load(Ordering::Relaxed) {
                    let rss = crate::rss_bytes().unwrap_or(0);
                    peak.fetch_max(rss, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        PeakRss::Sampled {
            peak,
            sampling,
            thread,
        }
    }

    /// Stops sampling; the peak of the run.
    fn stop(self) -> u64 {
        match self {
            PeakRss::Kernel => crate::peak_rss_bytes()
                .or_else(crate::rss_bytes)
                .unwrap_or(0),
            PeakRss::Sampled {
                peak,
                sampling,
                thread,
            } => {
                sampling.store(false, Ordering::Relaxed);
                let _ = thread.join();
                peak.load(Ordering::Relaxed)
            }
        }
    }
}

impl Isolation {
    /// Writes the job (a rate-limited slow account, a fast one) on a fresh topic; the job
    /// and its topic.
    fn write_job(&self, dir: &std::path::Path) -> anyhow::Result<(Job, String)> {
        let unique = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis()
        );
        let topic = format!("isolation-{unique}");
        std::fs::write(dir.join("templates.toml"), TEMPLATES)?;
        let queue = if self.baseline {
            "queue = \"memory\"\n"
        } else {
            ""
        };
        let mut source = String::new();
        if let Some(ms) = self.epoch_ms {
            source.push_str(&format!("epoch_ms = {ms}\n"));
        }
        if let Some(n) = self.in_flight_receivers {
            source.push_str(&format!("in_flight_receivers = {n}\n"));
        }
        std::fs::write(
            dir.join("job.toml"),
            format!(
                "name = \"isolation\"\ntemplates = \"templates.toml\"\nworkers = 2\n\
             [source]\nkind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{topic}\"\ngroup = \"g-{unique}\"\n{source}\
             [tracking]\ndir = \"var/tracking\"\n\
             [accounts.slow]\nchannel = \"sms\"\nprovider = \"blackhole\"\nrate_limit = {{ per_second = {} }}\n{queue}\
             [accounts.fast]\nchannel = \"email\"\nprovider = \"blackhole\"\n",
                self.brokers, self.rate
            ),
        )?;
        let job = Job::load(&dir.join("job.toml")).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok((job, topic))
    }

    pub fn run(&self) -> anyhow::Result<serde_json::Value> {
        let dir = std::env::temp_dir().join(format!("tidings-isolation-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let (job, topic) = self.write_job(&dir)?;

        // The backlog: requests of 100 receivers each.
        let requests = self.backlog.div_ceil(100);
        let backlog = (0..requests).map(|i| {
            let receivers: Vec<String> = (0..100).map(|j| format!("13{:09}", i * 100 + j)).collect();
            Outgoing {
                key: Some(i.to_string()),
                payload: serde_json::json!({"code": "send", "messageTemplateId": 1,
                    "messageParam": {"receiver": receivers.join(","), "variables": {"day": "Sunday"}}})
                .to_string(),
                timestamp: None,
            }
        });
        let t = Instant::now();
        produce(&self.brokers, &topic, backlog, || {})?;
        eprintln!(
            "produced {requests} requests ({} receivers) in {:.1?}",
            requests * 100,
            t.elapsed()
        );

        let stop = Arc::new(AtomicBool::new(false));
        let mut opts = RunOptions::for_job(&job);
        opts.stop = Some(stop.clone());
        // The backlog drains at the account's pace, far longer than the default bound.
        opts.drain_timeout = None;
        let runner = {
            let job = job.clone();
            std::thread::spawn(move || run(&job, &opts))
        };
        let sampler = PeakRss::start();
        #[cfg(feature = "heap-count")]
        crate::heap_count::sample_from_env();
        std::thread::sleep(Duration::from_secs(self.warmup));
        let rss_after_warmup = crate::rss_bytes().unwrap_or(0);

        // The notices, paced.
        let total = self.notices as u64 * self.seconds;
        let start = Instant::now();
        let notices = (0..total).map(|i| {
            let due = start + Duration::from_secs_f64(i as f64 / self.notices as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            Outgoing {
                key: Some(format!("n{i}")),
                payload: serde_json::json!({"code": "send", "messageTemplateId": 2,
                    "messageParam": {"receiver": format!("user{i}@example.com"), "variables": {"order": i}}})
                .to_string(),
                timestamp: None,
            }
        });
        produce(&self.brokers, &topic, notices, || {})?;
        // Time for the last notices, then a graceful stop.
        std::thread::sleep(Duration::from_secs(5));
        let rss_end = crate::rss_bytes().unwrap_or(0);
        stop.store(true, Ordering::Relaxed);
        let finished = if self.baseline {
            // A memory-queued backlog drains at the rate limit (hours): do not wait for it.
            std::thread::sleep(Duration::from_secs(3));
            None
        } else {
            Some(
                runner
                    .join()
                    .map_err(|_| anyhow::anyhow!("run panicked"))??,
            )
        };
        let peak = sampler.stop();

        let mut latencies: Vec<i64> = crate::e2e::read_events(&dir.join("var/tracking/events"))?
            .into_iter()
            .filter(|r| r.template_id == 2 && r.state == "SEND_SUCCESS")
            .map(|r| r.latency())
            .collect();
        latencies.sort_unstable();
        let pct = |p: f64| -> Option<i64> {
            (!latencies.is_empty())
                .then(|| latencies[((latencies.len() - 1) as f64 * p).round() as usize])
        };
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let slow_sent = finished.as_ref().map(|s| {
            s.counts
                .states
                .get(&tidings_model::State::SendSuccess)
                .copied()
                .unwrap_or(0)
        });
        let report = serde_json::json!({
            "mode": if self.baseline { "baseline: slow account queued in memory" } else { "isolated: slow account queued in its Kafka topic" },
            "backlog_receivers": requests * 100,
            "slow_rate_per_s": self.rate,
            "epoch_ms": self.epoch_ms,
            "in_flight_receivers": self.in_flight_receivers,
            "notices_offered": total,
            "notices_per_s": self.notices,
            "notices_sent": latencies.len(),
            "latency_ms_p50": pct(0.5),
            "latency_ms_p99": pct(0.99),
            "latency_ms_max": latencies.last(),
            "rss_mib_after_warmup": mib(rss_after_warmup),
            "rss_mib_end": mib(rss_end),
            "rss_mib_peak": mib(peak),
            "send_success_rows": slow_sent,
        });
        let _ = std::fs::remove_dir_all(&dir);
        Ok(report)
    }
}
