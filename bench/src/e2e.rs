//! `tidings-bench e2e`: the whole job against the broker, beside the broker's own limit.
//!
//! 1. Produces `requests` requests of `receivers` receivers each to a fresh topic.
//! 2. **Raw**: an rdkafka consumer that does nothing else reads the topic to its end: the rate
//!    the broker can be consumed at on this machine, measured in the same process from its
//!    first record (every partition assigned, as the job assigns its own).
//! 3. **Pipeline**: the job (Kafka source, 2 workers, dedup on, a `blackhole` account, Parquet
//!    tracking, optionally Redis tracking) reads the same topic to its end. Its rate is taken
//!    over the span of its own tracking rows (first RECEIVE to last terminal row), so group
//!    joining and the idle tail are not counted. Reports requests/s, receivers/s, the ratio to
//!    raw, peak RSS and CPU seconds. The job runs in a process of its own (this binary's hidden
//!    `run-job` command, started as a child), so its peak RSS and CPU time are the job's alone,
//!    as a deployed `tidings run` would have them; `--in-process` runs it in this process, on
//!    top of what the producer and the raw consumer left resident.
//! 4. With `--rate R`, the job runs while requests are produced at `R`/s for `seconds` by
//!    **another process** (this binary's `produce` command, started as a child; 5 ms linger, as the job's producers), over the
//!    topic's partitions (4, created by the bench), with a checkpoint every second; the produce →
//!    SEND_SUCCESS latency (Kafka timestamp → row `time`) is reported as p50/p99/p999/max over
//!    the run and per 10 s window of event time, so growth over the run is visible.
//! 5. With `--rate R --raw`, the same producer process and rate, read by two plain consumers
//!    (the job's consumer settings and workers, no job): the broker's own produce → consume latency
//!    per 10 s window, beside step 4's.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use arrow_array::{Array, Int64Array, StringArray, TimestampMillisecondArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tidings_dataflows::kafka::{Outgoing, produce};
use tidings_dataflows::{Cluster, Job, RunOptions, run};

/// Raw passes over the topic before the job reads it; their median is the reference rate.
const RAW_PASSES: usize = 3;

/// The median of `v` (the mean of the middle two for an even count); NaN when empty.
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// What to run.
pub struct E2e {
    pub brokers: String,
    pub redis: Option<String>,
    pub requests: u64,
    pub receivers: u64,
    pub rate: Option<u32>,
    pub seconds: u64,
    pub epoch_ms: u64,
    /// `source.max_out_of_order_ms`; `None` leaves the source's default.
    pub max_out_of_order_ms: Option<u64>,
    /// `source.in_flight`; `None` leaves the default.
    pub in_flight: Option<usize>,
    /// `source.in_flight_receivers`; `None` leaves the default.
    pub in_flight_receivers: Option<usize>,
    /// With `rate`: measure a plain consumer of the topic instead of the job (the broker's own
    /// produce → consume latency, the floor under the job's).
    pub raw: bool,
    /// Without `rate`: run the job in this process (as before the tenth session), not in a
    /// process of its own; its peak RSS then includes what the producer and the raw consumer
    /// left resident.
    pub in_process: bool,
    /// Without `rate`: the requests' Kafka timestamps spread evenly over this many ms ending
    /// when they are produced (a backlog after downtime); `None`: the producer's clock.
    pub spread_ms: Option<u64>,
    /// `source.backlog_epoch_ms`; `None` leaves the default.
    pub backlog_epoch_ms: Option<u64>,
    /// Without `rate`: the job as a cluster of this many processes (one worker each); 1: one
    /// process of the job's two workers.
    pub processes: usize,
}

/// What the job's own process (`tidings-bench run-job`) reports: its peak RSS and CPU time,
/// and the rows its Redis writer wrote.
pub fn run_job(
    path: &Path,
    idle_exit: Duration,
    cluster: Option<Cluster>,
) -> anyhow::Result<serde_json::Value> {
    let job = Job::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rss_at_start = crate::rss_bytes();
    #[cfg(feature = "heap-count")]
    crate::heap_count::sample_from_env();
    let written = run_to_idle(&job, idle_exit, cluster)?;
    #[cfg(feature = "heap-count")]
    eprintln!(
        "heap peak {:.1} MiB",
        crate::heap_count::peak() as f64 / (1024.0 * 1024.0)
    );
    Ok(serde_json::json!({
        "peak_rss_bytes": crate::peak_rss_bytes(),
        "rss_bytes_at_start": rss_at_start,
        "cpu_seconds": cpu_seconds(),
        "redis_rows_written": written,
    }))
}

/// Runs `job` (as a process of `cluster`, one worker) until its source has been idle for
/// `idle_exit`; the rows its Redis writer wrote.
fn run_to_idle(
    job: &Job,
    idle_exit: Duration,
    cluster: Option<Cluster>,
) -> anyhow::Result<Option<u64>> {
    let mut opts = RunOptions::for_job(job);
    opts.idle_exit = Some(idle_exit);
    if cluster.is_some() {
        opts.workers = 1;
    }
    opts.cluster = cluster;
    Ok(run(job, &opts)?.redis.map(|r| r.written))
}

/// One tracking row, as far as the harness needs it.
pub struct Row {
    pub template_id: i64,
    pub state: String,
    pub time: i64,
    /// The record's own event time (its Kafka timestamp): a late record's rows carry its
    /// partition's watermark as their `event_time` column, and its own time only in its
    /// RECEIVE row's reason; [`read_events`] puts the own time back on each of its rows, so a
    /// latency is never counted from the watermark (which would cut a late record's).
    pub event_time: i64,
}

impl Row {
    /// Produce (Kafka timestamp) → this row, in milliseconds.
    pub fn latency(&self) -> i64 {
        self.time - self.event_time
    }
}

/// Every events row under `events/`.
pub fn read_events(events: &Path) -> anyhow::Result<Vec<Row>> {
    use std::hash::BuildHasher;
    // Rows with a 64-bit hash of their message id (no id kept: the rows are read after the
    // job, in the process whose peak RSS is reported), and late records' own event times by
    // that hash.
    let mut out = Vec::new();
    let mut late: std::collections::HashMap<u64, i64> = std::collections::HashMap::new();
    let ids = std::collections::hash_map::RandomState::new();
    let Ok(dates) = std::fs::read_dir(events) else {
        return Ok(Vec::new());
    };
    for date in dates {
        for file in std::fs::read_dir(date?.path())? {
            let path = file?.path();
            if path.extension().is_none_or(|x| x != "parquet") {
                continue;
            }
            let reader =
                ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path)?)?.build()?;
            for batch in reader {
                let batch = batch?;
                let ts = |name: &str| -> anyhow::Result<TimestampMillisecondArray> {
                    Ok(batch
                        .column_by_name(name)
                        .and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>())
                        .ok_or_else(|| anyhow::anyhow!("{}: column {name}", path.display()))?
                        .clone())
                };
                let (time, event_time) = (ts("time")?, ts("event_time")?);
                let template = batch
                    .column_by_name("template_id")
                    .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
                    .ok_or_else(|| anyhow::anyhow!("{}: column template_id", path.display()))?
                    .clone();
                let text = |name: &str| -> anyhow::Result<StringArray> {
                    Ok(batch
                        .column_by_name(name)
                        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                        .ok_or_else(|| anyhow::anyhow!("{}: column {name}", path.display()))?
                        .clone())
                };
                let (state, message, reason) =
                    (text("state")?, text("message_id")?, text("reason")?);
                for i in 0..batch.num_rows() {
                    let state = if state.is_null(i) { "" } else { state.value(i) };
                    let id = ids.hash_one(message.value(i));
                    if state == "RECEIVE"
                        && !reason.is_null(i)
                        && let Some(own) = tidings_operators::admit::late_own_time(reason.value(i))
                    {
                        late.insert(id, own);
                    }
                    out.push((
                        id,
                        Row {
                            template_id: template.value(i),
                            state: state.to_string(),
                            time: time.value(i),
                            event_time: event_time.value(i),
                        },
                    ));
                }
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|(message, mut row)| {
            if let Some(&own) = late.get(&message) {
                row.event_time = own;
            }
            row
        })
        .collect())
}

/// CPU seconds (user + system) of this process so far.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| tidings_dataflows::run::times::stat_cpu(&stat).map(|(_, s)| s))
        .unwrap_or(0.0)
}

fn request(i: u64, receivers: u64) -> Outgoing {
    let to: Vec<String> = (0..receivers)
        .map(|j| format!("1{:010}", (i * receivers + j) % 9_999_999_999))
        .collect();
    Outgoing {
        key: Some(i.to_string()),
        payload: serde_json::json!({"code": "send", "messageTemplateId": 1,
            "messageParam": {"receiver": to.join(","), "variables": {"code": i % 10_000}}})
        .to_string(),
        timestamp: None,
    }
}

impl E2e {
    fn job(&self, dir: &Path, topic: &str, group: &str) -> anyhow::Result<Job> {
        std::fs::write(
            dir.join("templates.toml"),
            "[[template]]\nid = 1\nname = \"code\"\nchannel = \"sms\"\nmsg_type = \"auth_code\"\n\
             id_type = \"user_id\"\naccount = \"hole\"\n[template.content]\ncontent = \"Your code is {$code}.\"\n",
        )?;
        let redis = match &self.redis {
            Some(url) => format!("redis = \"{url}\"\nredis_prefix = \"tidings-bench:\"\n"),
            None => String::new(),
        };
        let bound = match self.max_out_of_order_ms {
            Some(ms) => format!("max_out_of_order_ms = {ms}\n"),
            None => String::new(),
        };
        let bound = match self.in_flight {
            Some(n) => format!("{bound}in_flight = {n}\n"),
            None => bound,
        };
        let bound = match self.in_flight_receivers {
            Some(n) => format!("{bound}in_flight_receivers = {n}\n"),
            None => bound,
        };
        let bound = match self.backlog_epoch_ms {
            Some(n) => format!("{bound}backlog_epoch_ms = {n}\n"),
            None => bound,
        };
        std::fs::write(
            dir.join("job.toml"),
            format!(
                "name = \"e2e\"\ntemplates = \"templates.toml\"\nworkers = 2\n\
                 [source]\nkind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{topic}\"\ngroup = \"{group}\"\nepoch_ms = {}\ncheckpoint_ms = 1000\n{bound}\
                 [tracking]\ndir = \"var/tracking\"\n{redis}\
                 [accounts.hole]\nchannel = \"sms\"\nprovider = \"blackhole\"\n",
                self.brokers, self.epoch_ms
            ),
        )?;
        Job::load(&dir.join("job.toml")).map_err(|e| anyhow::anyhow!("{e}"))
    }

    pub fn run(&self) -> anyhow::Result<serde_json::Value> {
        let dir: PathBuf = std::env::temp_dir().join(format!("tidings-e2e-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let unique = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis()
        );
        let topic = format!("e2e-{unique}");
        let job = self.job(&dir, &topic, &format!("e2e-{unique}"))?;
        create_topic(&self.brokers, &topic, PARTITIONS)?;
        let report = match self.rate {
            None => self.throughput(&job, &topic)?,
            Some(rate) if self.raw => self.raw_latency(&topic, rate, &unique)?,
            Some(rate) => self.latency(&job, &topic, rate)?,
        };
        let _ = std::fs::remove_dir_all(&dir);
        Ok(report)
    }

    fn throughput(&self, job: &Job, topic: &str) -> anyhow::Result<serde_json::Value> {
        let t = Instant::now();
        let now = tidings_model::time::wall_ms();
        produce(
            &self.brokers,
            topic,
            (0..self.requests).map(|i| {
                let mut r = request(i, self.receivers);
                r.timestamp = self.spread_ms.map(|spread| {
                    let at = spread as u128 * i as u128 / self.requests.max(1) as u128;
                    now - spread as i64 + at as i64
                });
                r
            }),
            || {},
        )?;
        eprintln!("produced {} requests in {:.1?}", self.requests, t.elapsed());

        // Raw: read to the end, nothing else; every partition assigned, as the job assigns its
        // own (no group join to wait for, about 20 s on the tests' broker). Read RAW_PASSES
        // times and the median taken: one pass varies by up to half on this machine (a pass at
        // 578k/s beside others at 1.2M/s), and the ratio would carry it.
        let mut passes = Vec::with_capacity(RAW_PASSES);
        let mut bytes = 0u64;
        for _ in 0..RAW_PASSES {
            let (secs, b) = self.raw_pass(topic)?;
            passes.push(self.requests as f64 / secs);
            bytes = b;
        }
        let raw_rate = median(&passes);
        let raw_secs = self.requests as f64 / raw_rate;

        // The pipeline: in a process of its own (the producer's and the raw consumer's memory
        // is not in its peak), or in this one.
        let idle_exit = Duration::from_secs(3);
        let cpu0 = cpu_seconds();
        let peak_before = crate::peak_rss_bytes().unwrap_or(0);
        let started = Instant::now();
        let (job_peak, rss_at_start, cpu, written) = if self.in_process {
            // The process's peak so far is the producer's and the raw consumer's; from here on
            // it is the job's (on top of what they left resident).
            let rss_at_start = crate::reset_peak_rss();
            let written = run_to_idle(job, idle_exit, None)?;
            let peak = rss_at_start.and(crate::peak_rss_bytes());
            (peak, rss_at_start, cpu_seconds() - cpu0, written)
        } else {
            self.job_processes(job, idle_exit)?
        };
        // Until the job ended: its idle exit, and (with Redis) the writer draining its queue.
        let job_wall = started.elapsed().as_secs_f64();
        let rows = read_events(&local_tracking(job)?.join("events"))?;
        let first_row = rows.iter().map(|r| r.time).min().unwrap_or(0);
        let last_row = rows.iter().map(|r| r.time).max().unwrap_or(0);
        let span = ((last_row - first_row) as f64 / 1000.0).max(1e-3);
        let sent = rows.iter().filter(|r| r.state == "SEND_SUCCESS").count() as u64;
        let rate = self.requests as f64 / span;
        // With Redis, the job ends when its writer has drained: every row is in Redis by
        // `job_wall` (start-up and the idle exit included, so this rate is a floor).
        let redis_rate = self.redis.as_ref().map(|_| self.requests as f64 / job_wall);
        Ok(serde_json::json!({
            "requests": self.requests,
            "receivers_per_request": self.receivers,
            "spread_ms": self.spread_ms,
            "epoch_ms": self.epoch_ms,
            "backlog_epoch_ms": self.backlog_epoch_ms,
            "processes": self.processes.max(1),
            "send_success": sent,
            "redis_tracking": self.redis.is_some(),
            "redis_rows_written": written,
            "job_in_own_process": !self.in_process,
            "job_wall_seconds_incl_idle_exit_and_redis_drain": job_wall,
            "redis_tracked_requests_per_s": redis_rate,
            "redis_tracked_over_raw": redis_rate.map(|r| r / raw_rate),
            "raw_consume_requests_per_s": raw_rate,
            "raw_consume_requests_per_s_passes": passes,
            "raw_consume_mib_per_s": bytes as f64 / raw_secs / (1024.0 * 1024.0),
            "pipeline_seconds": span,
            "pipeline_requests_per_s": rate,
            "pipeline_receivers_per_s": (self.requests * self.receivers) as f64 / span,
            "pipeline_over_raw": rate / raw_rate,
            "peak_rss_mib": crate::peak_rss_bytes().unwrap_or(0).max(peak_before).max(job_peak.unwrap_or(0)) as f64 / (1024.0 * 1024.0),
            "rss_mib_at_pipeline_start": rss_at_start.map(|b| b as f64 / (1024.0 * 1024.0)),
            "peak_rss_mib_pipeline": job_peak.map(|b| b as f64 / (1024.0 * 1024.0)),
            "cpu_seconds_whole_run": cpu,
        }))
    }

    /// Runs the job in processes of its own (`run-job`): one, or a cluster of
    /// [`E2e::processes`] on free localhost ports. Their largest peak RSS, process 0's RSS at
    /// its start, their CPU seconds added up, and the rows Redis took.
    fn job_processes(
        &self,
        job: &Job,
        idle_exit: Duration,
    ) -> anyhow::Result<(Option<u64>, Option<u64>, f64, Option<u64>)> {
        let n = self.processes.max(1);
        let hosts: Vec<String> = if n > 1 {
            let held = (0..n)
                .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
                .collect::<Result<Vec<_>, _>>()?;
            held.iter()
                .map(|l| l.local_addr().map(|a| a.to_string()))
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let children = (0..n)
            .map(|i| {
                let mut c = std::process::Command::new(std::env::current_exe()?);
                c.arg("run-job")
                    .arg(&job.path)
                    .args(["--idle-exit", &idle_exit.as_secs().to_string()])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::inherit());
                if n > 1 {
                    c.args(["--process", &i.to_string(), "--hosts", &hosts.join(",")]);
                }
                c.spawn()
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut outs = Vec::new();
        let mut children = children.into_iter();
        while let Some(child) = children.next() {
            let child = child.wait_with_output()?;
            if !child.status.success() {
                // The others would wait for it for ever: end them too.
                for mut other in children {
                    let _ = other.kill();
                    let _ = other.wait();
                }
                anyhow::bail!("the job's process failed ({})", child.status);
            }
            // The report is the last line (timely's cluster start prints before it).
            let said = String::from_utf8_lossy(&child.stdout);
            let last = said
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            outs.push(
                serde_json::from_str::<serde_json::Value>(last)
                    .map_err(|e| anyhow::anyhow!("the job's process said `{said}`: {e}"))?,
            );
        }
        let each = |k: &'static str| outs.iter().filter_map(move |o| o[k].as_u64());
        Ok((
            each("peak_rss_bytes").max(),
            outs[0]["rss_bytes_at_start"].as_u64(),
            outs.iter()
                .map(|o| o["cpu_seconds"].as_f64().unwrap_or(f64::NAN))
                .sum(),
            each("redis_rows_written").reduce(|a, b| a + b),
        ))
    }

    /// One raw pass: a consumer assigned every partition of `topic` reads it to the end and
    /// does nothing else. Seconds from its first record to its last, and the payload bytes.
    fn raw_pass(&self, topic: &str) -> anyhow::Result<(f64, u64)> {
        let consumer = self.raw_consumer_assigned(topic)?;
        let mut read = 0u64;
        let mut bytes = 0u64;
        let mut first: Option<Instant> = None;
        let deadline = Instant::now() + Duration::from_secs(600);
        while read < self.requests && Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                let m = m?;
                first.get_or_insert_with(Instant::now);
                read += 1;
                bytes += rdkafka::Message::payload(&m).map_or(0, |p| p.len() as u64);
            }
        }
        let secs = first.map_or(f64::NAN, |f| f.elapsed().as_secs_f64());
        anyhow::ensure!(
            read == self.requests,
            "raw consumer read {read} of {}",
            self.requests
        );
        Ok((secs, bytes))
    }

    /// A plain consumer of `topic` in group `group`, from the start: no commits, the job's
    /// fetch wait.
    fn raw_consumer(&self, topic: &str, group: &str) -> anyhow::Result<BaseConsumer> {
        let consumer = self.plain_consumer(group)?;
        consumer.subscribe(&[topic])?;
        Ok(consumer)
    }

    /// A consumer in `group` that commits nothing, from the start, with the job's fetch wait
    /// and fetch queue backoff.
    fn plain_consumer(&self, group: &str) -> anyhow::Result<BaseConsumer> {
        Ok(ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "10")
            .set(
                "fetch.queue.backoff.ms",
                tidings_dataflows::kafka::FETCH_QUEUE_BACKOFF_MS,
            )
            .create()?)
    }

    /// A plain consumer of every partition of `topic` from its start, assigned (the job's
    /// fetch wait, no group).
    fn raw_consumer_assigned(&self, topic: &str) -> anyhow::Result<BaseConsumer> {
        let consumer = self.plain_consumer("tidings-bench-raw")?;
        let n = partitions(&self.brokers, topic)
            .ok_or_else(|| anyhow::anyhow!("no metadata for the topic {topic}"))?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..n as i32 {
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        Ok(consumer)
    }

    /// The producer process of [`E2e::latency`], for `seconds` at `rate`.
    fn produce_from_child(&self, topic: &str, rate: u32) -> anyhow::Result<()> {
        let producer = std::process::Command::new(std::env::current_exe()?)
            .args(["produce", "--topic", topic])
            .args(["--rate", &rate.to_string()])
            .args(["--seconds", &self.seconds.to_string()])
            .args(["--receivers", &self.receivers.to_string()])
            .env("KAFKA_BROKERS", &self.brokers)
            .output()?;
        anyhow::ensure!(
            producer.status.success(),
            "the producer process failed: {}",
            String::from_utf8_lossy(&producer.stderr)
        );
        Ok(())
    }

    /// The broker alone: the same producer process and rate, read by a plain consumer (the
    /// job's consumer settings, no job): Kafka timestamp → the consumer has the record, per
    /// 10 s window.
    fn raw_latency(
        &self,
        topic: &str,
        rate: u32,
        unique: &str,
    ) -> anyhow::Result<serde_json::Value> {
        produce(&self.brokers, topic, [request(u64::MAX / 2, 1)], || {})?;
        // One group member per job worker (the job runs 2), each on a thread of its own.
        let stop = Arc::new(AtomicBool::new(false));
        // Each member's assigned partitions, reported until the producer starts: the run
        // starts once the group has settled (every member holds some, all are held), not
        // after a fixed wait.
        let assigned = Arc::new((Mutex::new(vec![0usize; RAW_MEMBERS]), Condvar::new()));
        let settled = Arc::new(AtomicBool::new(false));
        let mut readers = Vec::new();
        for member in 0..RAW_MEMBERS {
            let consumer = self.raw_consumer(topic, &format!("raw-latency-{unique}"))?;
            let stop = stop.clone();
            let (assigned, settled) = (assigned.clone(), settled.clone());
            readers.push(std::thread::spawn(
                move || -> anyhow::Result<Vec<(i64, i64)>> {
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let m = consumer.poll(Duration::from_millis(100));
                        if !settled.load(Ordering::Relaxed) {
                            let n = consumer.assignment().map_or(0, |a| a.count());
                            let (counts, changed) = &*assigned;
                            counts.lock().unwrap_or_else(|p| p.into_inner())[member] = n;
                            changed.notify_all();
                        }
                        if let Some(m) = m {
                            let m = m?;
                            let now = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)?
                                .as_millis() as i64;
                            if let Some(ts) = rdkafka::Message::timestamp(&m).to_millis() {
                                seen.push((ts, now - ts));
                            }
                        }
                    }
                    Ok(seen)
                },
            ));
        }
        let want = partitions(&self.brokers, topic).unwrap_or(1);
        let waited = Instant::now();
        {
            let (counts, changed) = &*assigned;
            let counts = counts.lock().unwrap_or_else(|p| p.into_inner());
            let (counts, timeout) = changed
                .wait_timeout_while(counts, Duration::from_secs(60), |c| {
                    !(c.iter().all(|&n| n > 0) && c.iter().sum::<usize>() >= want)
                })
                .unwrap_or_else(|p| p.into_inner());
            anyhow::ensure!(
                !timeout.timed_out(),
                "the raw consumers' group did not settle in 60 s (assigned: {counts:?} of {want})"
            );
        }
        settled.store(true, Ordering::Relaxed);
        let assignment_wait_s = waited.elapsed().as_secs_f64();
        let start = Instant::now();
        let start_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        self.produce_from_child(topic, rate)?;
        let achieved = (rate as u64 * self.seconds) as f64 / start.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        let mut seen: Vec<(i64, i64)> = Vec::new();
        for r in readers {
            seen.extend(
                r.join()
                    .map_err(|_| anyhow::anyhow!("reader panicked"))??
                    .into_iter()
                    .filter(|&(t, _)| t >= start_ms),
            );
        }
        let mut all: Vec<i64> = seen.iter().map(|&(_, l)| l).collect();
        all.sort_unstable();
        let windows: Vec<serde_json::Value> = by_window(start_ms, &seen)
            .into_iter()
            .map(|(w, l)| {
                serde_json::json!({"from_s": w * 10, "read": l.len(),
                    "p50": percentile(&l, 0.5), "p99": percentile(&l, 0.99), "max": l.last()})
            })
            .collect();
        Ok(serde_json::json!({
            "mode": "raw: plain consumers, no job",
            "group_members": RAW_MEMBERS,
            "group_settled_after_s": assignment_wait_s,
            "offered_requests_per_s": rate,
            "achieved_produce_per_s": achieved,
            "producer": "another process (tidings-bench produce)",
            "partitions": partitions(&self.brokers, topic),
            "seconds": self.seconds,
            "read": all.len(),
            "latency_ms_p50": percentile(&all, 0.5),
            "latency_ms_p99": percentile(&all, 0.99),
            "latency_ms_max": all.last(),
            "windows_10s": windows,
        }))
    }

    fn latency(&self, job: &Job, topic: &str, rate: u32) -> anyhow::Result<serde_json::Value> {
        // The topic must exist before the group subscribes (librdkafka looks for a missing
        // topic again only after `topic.metadata.refresh.interval.ms`): one warm-up request,
        // left out of the latencies below.
        produce(&self.brokers, topic, [request(u64::MAX / 2, 1)], || {})?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut opts = RunOptions::for_job(job);
        opts.stop = Some(stop.clone());
        // A job behind its producer drains the rest at the stop: those latencies count too (a
        // job still 3 minutes behind is reported as such: `drain_unfinished`).
        opts.drain_timeout = Some(Duration::from_secs(180));
        let runner = {
            let job = job.clone();
            std::thread::spawn(move || run(&job, &opts))
        };
        // Let the group assign its partitions first.
        std::thread::sleep(Duration::from_secs(8));
        let total = rate as u64 * self.seconds;
        let start = Instant::now();
        let start_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        // The producer is another process: its CPU and allocations are not the job's.
        self.produce_from_child(topic, rate)?;
        let achieved = total as f64 / start.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        let stopped = Instant::now();
        let drain = match runner.join().map_err(|_| anyhow::anyhow!("run panicked"))? {
            Ok(_) => None,
            // What was sent is tracked: report it, and that the rest is still in Kafka.
            Err(e) if e.to_string().contains("drain did not finish") => Some(e.to_string()),
            Err(e) => return Err(e),
        };
        let drain_seconds = stopped.elapsed().as_secs_f64();
        let rows = read_events(&local_tracking(job)?.join("events"))?;
        let of = |state: &str| -> Vec<(i64, i64)> {
            rows.iter()
                .filter(|r| r.state == state && r.event_time >= start_ms)
                .map(|r| (r.event_time, r.latency()))
                .collect()
        };
        let sent = of("SEND_SUCCESS");
        // Kafka timestamp → RECEIVE (the record admitted, once the watermark passed its epoch):
        // the broker's and the watermark's share of the latency, per window beside the whole.
        let received = of("RECEIVE");
        let admitted = by_window(start_ms, &received);
        let mut latencies: Vec<i64> = sent.iter().map(|&(_, l)| l).collect();
        latencies.sort_unstable();
        let pct = |p: f64| percentile(&latencies, p);
        // Per 10 s window of event time: growth over the run shows here.
        let windows: Vec<serde_json::Value> = by_window(start_ms, &sent)
            .into_iter()
            .map(|(w, l)| {
                let a = admitted.get(&w).map(Vec::as_slice).unwrap_or_default();
                serde_json::json!({"from_s": w * 10, "sent": l.len(),
                    "p50": percentile(&l, 0.5), "p99": percentile(&l, 0.99),
                    "p999": percentile(&l, 0.999), "max": l.last(),
                    "receive_p50": percentile(a, 0.5), "receive_p99": percentile(a, 0.99)})
            })
            .collect();
        Ok(serde_json::json!({
            "offered_requests_per_s": rate,
            "achieved_produce_per_s": achieved,
            "producer": "another process (tidings-bench produce)",
            "partitions": partitions(&self.brokers, topic),
            "checkpoint_ms": 1000,
            "receivers_per_request": self.receivers,
            "seconds": self.seconds,
            "send_success": latencies.len(),
            "latency_ms_p50": pct(0.5),
            "latency_ms_p99": pct(0.99),
            "latency_ms_p999": pct(0.999),
            "latency_ms_max": latencies.last(),
            "windows_10s": windows,
            "drain_seconds_after_producer": drain_seconds,
            "drain_unfinished": drain,
            "redis_tracking": self.redis.is_some(),
            "epoch_ms": self.epoch_ms,
            "max_out_of_order_ms": self.max_out_of_order_ms,
            "in_flight": self.in_flight,
            "in_flight_receivers": self.in_flight_receivers,
            "peak_rss_mib": crate::peak_rss_bytes().unwrap_or(0) as f64 / (1024.0 * 1024.0),
        }))
    }
}

/// Group members of the raw latency run: as many as the job's workers.
const RAW_MEMBERS: usize = 2;

/// `(event time, latency)` pairs by 10 s window from `start_ms`, each window's latencies
/// sorted.
fn by_window(start_ms: i64, pairs: &[(i64, i64)]) -> std::collections::BTreeMap<i64, Vec<i64>> {
    let mut windows: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
    for &(t, l) in pairs {
        windows.entry((t - start_ms) / 10_000).or_default().push(l);
    }
    for l in windows.values_mut() {
        l.sort_unstable();
    }
    windows
}

/// The `p` quantile of sorted `values`.
fn percentile(values: &[i64], p: f64) -> Option<i64> {
    (!values.is_empty()).then(|| values[((values.len() - 1) as f64 * p).round() as usize])
}

/// Partitions of the bench's topic.
const PARTITIONS: i32 = 4;

/// Creates `topic` with `partitions` (one replica) unless it exists. The memory broker of the
/// tests makes 4 on first use by itself; a broker that does not create topics on use (tansu's
/// SQLite engine) needs this.
fn create_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::error::RDKafkaErrorCode;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let wanted = [NewTopic::new(topic, partitions, TopicReplication::Fixed(1))];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in runtime.block_on(admin.create_topics(&wanted, &options))? {
        if let Err((topic, e)) = r
            && e != RDKafkaErrorCode::TopicAlreadyExists
        {
            anyhow::bail!("cannot create the topic {topic}: {e}");
        }
    }
    Ok(())
}

/// The number of partitions of `topic`, as the broker says.
fn partitions(brokers: &str, topic: &str) -> Option<usize> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .ok()?;
    let meta = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .ok()?;
    meta.topics().first().map(|t| t.partitions().len())
}

/// Produces `rate` requests a second for `seconds` to `topic` (the latency run's producer
/// process): each request stamped when it is handed to the client, at most 5 ms lingering.
pub fn produce_paced(
    brokers: &str,
    topic: &str,
    rate: u32,
    seconds: u64,
    receivers: u64,
) -> anyhow::Result<u64> {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // As the job's own producers: a request per produce call would cost the broker (on
        // the same 2 cores) more than the job; the stamp is taken before the linger.
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        // A retried batch must not be written twice: an overloaded broker (the 5-minute run
        // at 2,000/s) timed batches out and the job then sent more requests than were offered.
        .set("enable.idempotence", "true")
        .create()?;
    let total = rate as u64 * seconds;
    let start = Instant::now();
    // Paced in 5 ms ticks (the linger): a sleep per request (every 100 µs at 10,000/s) kept
    // the producer process on a core of its own. Each record is stamped when it is sent.
    let tick = Duration::from_millis(5);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            producer.poll(Duration::ZERO);
            std::thread::sleep(wait.max(tick));
        }
        let r = request(i, receivers);
        let key = r.key.unwrap_or_default();
        loop {
            match producer.send(
                BaseRecord::<String, String>::to(topic)
                    .payload(&r.payload)
                    .key(&key),
            ) {
                Ok(()) => break,
                Err((e, _))
                    if e.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                {
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(total)
}

/// The job's local tracking directory (the benches read their rows back from disk).
fn local_tracking(job: &Job) -> anyhow::Result<std::path::PathBuf> {
    job.tracking_dir
        .local()
        .map(|p| p.to_path_buf())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the benches read a local tracking.dir, not {}",
                job.tracking_dir
            )
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_median_is_the_middle_pass() {
        assert_eq!(
            super::median(&[578_000.0, 1_218_000.0, 1_200_000.0]),
            1_200_000.0
        );
        assert_eq!(super::median(&[1.0, 4.0, 2.0, 3.0]), 2.5);
        assert!(super::median(&[]).is_nan());
    }
}
