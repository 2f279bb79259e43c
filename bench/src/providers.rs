//! `tidings-bench providers`: what sending over a real provider API costs.
//!
//! The same SMS requests (one receiver each, dedup off) run three times through the whole
//! graph with in-memory tracking: to a `blackhole` account (the baseline: the graph without a
//! provider), to a `tencent_sms` account calling the project's provider simulator over HTTP on
//! 127.0.0.1 (TC3 signing, JSON, the simulator checking every signature), and to a group of
//! an always-failing Aliyun (weight 100) and that Tencent account, so every message fails over.
//! A fourth run sends the same requests as notices to an `aliyun_sms` account (a second
//! simulator, without faults): notices may share Aliyun's `SendBatchSms` calls (100 numbers,
//! each with its own parameters), where verification codes go one `SendSms` call each. A
//! fifth sends them as one text to everyone through Tencent (calls of 200 numbers of one
//! content), a sixth the same through Yunpian (`batch_send`, 200 numbers a call).
//! The simulators run in processes of their own (`tidings-bench simulator`, this binary started
//! again), as a provider would; `--in-process` keeps them in this one. Reports receivers/s of
//! each and the ratios to the baseline.

use std::io::{BufRead, Read, Write};
use std::time::Instant;

use tidings_dataflows::{Job, RunOptions, TrackingTarget, run};
use tidings_model::State;
use tidings_operators::Clock;
use tidings_sinks::simulator::{Credentials, Fault, Simulator};
use tidings_sinks::tracking::MemoryTracking;

/// What to run.
pub struct Providers {
    /// Requests (one receiver each).
    pub requests: u64,
    /// Provider calls in flight per account.
    pub concurrency: usize,
    /// The simulator in this process instead of its own.
    pub in_process: bool,
}

/// The faults the simulator answers with: every Aliyun call fails (the failover case), or
/// none.
fn faults(faulty: bool) -> anyhow::Result<Vec<Fault>> {
    if !faulty {
        return Ok(Vec::new());
    }
    Ok(vec![
        Fault::parse("aliyun=500").map_err(anyhow::Error::msg)?,
    ])
}

/// What the simulator received, in short.
fn summary(received: &[tidings_sinks::simulator::Received]) -> serde_json::Value {
    let calls = |p: &str| received.iter().filter(|r| r.provider == p).count();
    let numbers: usize = received
        .iter()
        .filter(|r| r.provider == "tencent" && !r.faulted)
        .map(|r| r.body["PhoneNumberSet"].as_array().map_or(0, |a| a.len()))
        .sum();
    let aliyun_batch: Vec<usize> = received
        .iter()
        .filter(|r| r.provider == "aliyun" && r.body["Action"] == "SendBatchSms")
        .map(|r| {
            r.body["PhoneNumberJson"]
                .as_str()
                .and_then(|n| serde_json::from_str::<Vec<String>>(n).ok())
                .map_or(0, |n| n.len())
        })
        .collect();
    serde_json::json!({
        "tencent_calls": calls("tencent"),
        "tencent_numbers": numbers,
        "aliyun_calls": calls("aliyun"),
        "yunpian_calls": calls("yunpian"),
        "yunpian_numbers": received
            .iter()
            .filter(|r| r.provider == "yunpian")
            .map(|r| r.body["mobile"].as_str().map_or(0, |m| m.split(',').count()))
            .sum::<usize>(),
        "aliyun_batch_calls": aliyun_batch.len(),
        "aliyun_batch_numbers": aliyun_batch.iter().sum::<usize>(),
        "invalid": received.iter().filter(|r| !r.valid).count(),
    })
}

/// `tidings-bench simulator`: the simulator's process. Its first line is its address; when
/// its stdin closes it prints [`summary`] and ends.
pub fn simulator_process(faulty: bool) -> anyhow::Result<()> {
    let sim = Simulator::start("127.0.0.1:0", Credentials::default(), faults(faulty)?)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", sim.addr)?;
    out.flush()?;
    let mut rest = Vec::new();
    std::io::stdin().read_to_end(&mut rest)?;
    writeln!(out, "{}", summary(&sim.received()))?;
    out.flush()?;
    sim.stop();
    Ok(())
}

/// The simulator, here or in its own process.
enum Sim {
    Here(Simulator),
    Child {
        child: std::process::Child,
        lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
        addr: String,
    },
}

impl Sim {
    fn start(in_process: bool, faulty: bool) -> anyhow::Result<Sim> {
        if in_process {
            return Ok(Sim::Here(Simulator::start(
                "127.0.0.1:0",
                Credentials::default(),
                faults(faulty)?,
            )?));
        }
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .arg("simulator")
            .args((!faulty).then_some("--no-faults"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("the simulator has no stdout"))?;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let addr = lines
            .next()
            .ok_or_else(|| anyhow::anyhow!("the simulator process ended before it listened"))??;
        Ok(Sim::Child { child, lines, addr })
    }

    fn endpoint(&self, provider: &str) -> String {
        match self {
            Sim::Here(s) => s.endpoint(provider),
            Sim::Child { addr, .. } => format!("http://{addr}/{provider}"),
        }
    }

    /// Stops it; returns [`summary`] of what it received.
    fn finish(self) -> anyhow::Result<serde_json::Value> {
        match self {
            Sim::Here(s) => {
                let got = summary(&s.received());
                s.stop();
                Ok(got)
            }
            Sim::Child {
                mut child,
                mut lines,
                ..
            } => {
                drop(child.stdin.take());
                let line = lines.next().ok_or_else(|| {
                    anyhow::anyhow!("the simulator process ended without a summary")
                })??;
                child.wait()?;
                Ok(serde_json::from_str(&line)?)
            }
        }
    }
}

const TEMPLATES: &str = r#"
[[template]]
id = 1
name = "code"
channel = "sms"
msg_type = "auth_code"
id_type = "phone"
account = "sms"
dedup = false
[template.content]
content = "Your code is {$code}."
"#;

impl Providers {
    fn once(
        &self,
        dir: &std::path::Path,
        name: &str,
        accounts: &str,
        templates: &str,
    ) -> anyhow::Result<(f64, u64, u64)> {
        let case = dir.join(name);
        std::fs::create_dir_all(&case)?;
        std::fs::write(case.join("templates.toml"), templates)?;
        std::fs::copy(dir.join("requests.jsonl"), case.join("requests.jsonl"))?;
        std::fs::write(
            case.join("job.toml"),
            format!(
                "name = \"{name}\"\ntemplates = \"templates.toml\"\nworkers = 2\n\
                 [source]\nkind = \"file\"\npath = \"requests.jsonl\"\nepoch_lines = 1024\n\
                 [tracking]\ndir = \"var/tracking\"\n{accounts}"
            ),
        )?;
        let job = Job::load(&case.join("job.toml")).map_err(|e| anyhow::anyhow!("{e}"))?;
        let memory = MemoryTracking::default();
        let mut opts = RunOptions::for_job(&job);
        opts.clock = Clock::Fixed(1_763_870_400_000); // 2025-11-23 12:00 Shanghai
        opts.tracking = TrackingTarget::Memory(memory.clone());
        let started = Instant::now();
        let s = run(&job, &opts)?;
        let secs = started.elapsed().as_secs_f64();
        let sent = s
            .counts
            .states
            .get(&State::SendSuccess)
            .copied()
            .unwrap_or(0);
        let failed = s.counts.states.get(&State::SendFail).copied().unwrap_or(0);
        drop(memory.take());
        Ok((secs, sent, failed))
    }

    /// Runs the six cases and reports them.
    pub fn run(&self) -> anyhow::Result<serde_json::Value> {
        let dir = std::env::temp_dir().join(format!("tidings-providers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut body = String::new();
        for i in 0..self.requests {
            let payload = serde_json::json!({"code": "send", "messageTemplateId": 1,
                "messageParam": {"receiver": format!("139{:08}", (i % 9_999_999) * 10 + 1), "variables": {"code": i % 10_000}}});
            body.push_str(&serde_json::json!({"ts": 1_763_870_400_000i64 + i as i64, "payload": payload.to_string()}).to_string());
            body.push('\n');
        }
        std::fs::write(dir.join("requests.jsonl"), body)?;
        let sim = Sim::start(self.in_process, true)?;
        let clean = Sim::start(self.in_process, false)?;
        let c = Credentials::default();
        let tencent_at = |name: &str, endpoint: &str| {
            format!(
                "[accounts.{name}]\nchannel = \"sms\"\nprovider = \"tencent_sms\"\nconcurrency = {}\n\
                 settings = {{ secret_id = \"{}\", secret_key = \"{}\", sdk_app_id = \"1400006666\", sign_name = \"tidings\", template_id = \"1110\", endpoint = \"{}\" }}\n",
                self.concurrency, c.tencent.0, c.tencent.1, endpoint
            )
        };
        let tencent = |name: &str| tencent_at(name, &sim.endpoint("tencent"));
        let baseline = format!(
            "[accounts.sms]\nchannel = \"sms\"\nprovider = \"blackhole\"\nconcurrency = {}\n",
            self.concurrency
        );
        let group = format!(
            "[groups.sms]\nchannel = \"sms\"\naccounts = {{ sms-aliyun = 100, sms-tencent = 1 }}\n\
             [accounts.sms-aliyun]\nchannel = \"sms\"\nprovider = \"aliyun_sms\"\nattempts = 1\nconcurrency = {}\n\
             settings = {{ access_key_id = \"{}\", access_key_secret = \"{}\", sign_name = \"tidings\", template_code = \"SMS_1\", endpoint = \"{}\" }}\n{}",
            self.concurrency,
            c.aliyun.0,
            c.aliyun.1,
            sim.endpoint("aliyun"),
            tencent("sms-tencent")
        );
        let aliyun = format!(
            "[accounts.sms]\nchannel = \"sms\"\nprovider = \"aliyun_sms\"\nconcurrency = {}\n\
             settings = {{ access_key_id = \"{}\", access_key_secret = \"{}\", sign_name = \"tidings\", template_code = \"SMS_1\", endpoint = \"{}\" }}\n",
            self.concurrency,
            c.aliyun.0,
            c.aliyun.1,
            clean.endpoint("aliyun"),
        );
        let notices = TEMPLATES.replace("msg_type = \"auth_code\"", "msg_type = \"notice\"");
        let (b_secs, b_sent, _) = self.once(&dir, "blackhole", &baseline, TEMPLATES)?;
        let (t_secs, t_sent, t_failed) = self.once(&dir, "tencent", &tencent("sms"), TEMPLATES)?;
        let (g_secs, g_sent, g_failed) = self.once(&dir, "failover", &group, TEMPLATES)?;
        let (a_secs, a_sent, a_failed) = self.once(&dir, "aliyun", &aliyun, &notices)?;
        // One text for every message (a maintenance notice to each user): Tencent's calls
        // take 200 numbers of one content.
        let one_text =
            notices.replace("Your code is {$code}.", "Maintenance tonight, 22:00-23:00.");
        let (s_secs, s_sent, s_failed) = self.once(
            &dir,
            "tencent-one-text",
            &tencent_at("sms", &clean.endpoint("tencent")),
            &one_text,
        )?;
        // The same through Yunpian (`batch_send`: one text, up to 200 numbers a call).
        let yunpian = format!(
            "[accounts.sms]\nchannel = \"sms\"\nprovider = \"yunpian_sms\"\nconcurrency = {}\n\
             settings = {{ apikey = \"{}\", endpoint = \"{}\" }}\n",
            self.concurrency,
            c.yunpian_apikey,
            clean.endpoint("yunpian"),
        );
        let (y_secs, y_sent, y_failed) =
            self.once(&dir, "yunpian-one-text", &yunpian, &one_text)?;
        let received = sim.finish()?;
        let batched = clean.finish()?;
        let invalid = received["invalid"].as_u64().unwrap_or(u64::MAX)
            + batched["invalid"].as_u64().unwrap_or(u64::MAX);
        let _ = std::fs::remove_dir_all(&dir);
        anyhow::ensure!(
            invalid == 0,
            "{invalid} requests failed the simulator's checks"
        );
        anyhow::ensure!(
            b_sent == self.requests
                && t_sent == self.requests
                && g_sent == self.requests
                && a_sent == self.requests
                && s_sent == self.requests
                && y_sent == self.requests,
            "not every receiver was sent: {b_sent} {t_sent} {g_sent} {a_sent} {s_sent} {y_sent} (failed {t_failed} {g_failed} {a_failed} {s_failed} {y_failed})"
        );
        let rate = |secs: f64| self.requests as f64 / secs;
        Ok(serde_json::json!({
            "requests": self.requests,
            "concurrency": self.concurrency,
            "blackhole_receivers_per_s": rate(b_secs),
            "tencent_http_receivers_per_s": rate(t_secs),
            "failover_receivers_per_s": rate(g_secs),
            "tencent_over_blackhole": b_secs / t_secs,
            "failover_over_blackhole": b_secs / g_secs,
            "aliyun_notices_receivers_per_s": rate(a_secs),
            "aliyun_notices_over_blackhole": b_secs / a_secs,
            "aliyun_notices_calls": batched["aliyun_calls"],
            "aliyun_notices_batch_calls": batched["aliyun_batch_calls"],
            "aliyun_notices_batch_numbers": batched["aliyun_batch_numbers"],
            "tencent_one_text_receivers_per_s": rate(s_secs),
            "tencent_one_text_over_blackhole": b_secs / s_secs,
            "tencent_one_text_calls": batched["tencent_calls"],
            "yunpian_one_text_receivers_per_s": rate(y_secs),
            "yunpian_one_text_over_blackhole": b_secs / y_secs,
            "yunpian_one_text_calls": batched["yunpian_calls"],
            "yunpian_one_text_numbers": batched["yunpian_numbers"],
            "simulator": if self.in_process { "in this process" } else { "a process of its own" },
            "tencent_calls": received["tencent_calls"],
            "tencent_numbers": received["tencent_numbers"],
            "aliyun_calls": received["aliyun_calls"],
        }))
    }
}
