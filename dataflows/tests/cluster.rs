//! Cluster mode: the same job as one process and as timely clusters of several processes on
//! this machine (`tidings run --local N`) decides the same rows; a process SIGKILLed mid-run
//! takes the whole cluster down, the supervisor starts it again from the newest complete cut,
//! and nothing is lost.

mod common;

use common::{paced_demo, partitioned_demo, start_local};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NOW: &str = "2025-11-22T10:00:00+08:00";
const ROWS: &str = "SELECT message_id, receiver, state, coalesce(reason, '') AS reason \
                    FROM events ORDER BY 1, 2, 3, 4";

/// Runs the job (`-w W`, and `--local N` when N > 1); returns stderr, after asserting success.
fn run(job: &Path, workers: usize, processes: usize) -> String {
    let mut args = vec![
        "run".to_string(),
        job.display().to_string(),
        "--now".into(),
        NOW.into(),
        "-w".into(),
        workers.to_string(),
    ];
    if processes > 1 {
        args.extend(["--local".into(), processes.to_string()]);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "{processes} x {workers}: {}\n{stderr}",
        out.status
    );
    stderr
}

fn rows(job: &Path) -> String {
    common::sql_csv(&job.parent().unwrap().join("var/tracking"), ROWS)
}

#[test]
fn one_process_and_clusters_of_3x1_2x2_and_3x2_decide_the_same_rows() {
    let mut seen: Vec<(String, String)> = Vec::new();
    // 3 x 2 has more workers than the 4 partitions: processes whose sources hold nothing
    // learn each cut before any source moves past it (acknowledged cuts).
    for (processes, workers) in [(1, 2), (3, 1), (2, 2), (3, 2)] {
        let (_dir, job) = partitioned_demo(1);
        // Backlog epochs of a minute before the line `--now` draws (09:54 of the requests'
        // 00:00–12:00), the job's 100 ms after it: every shape agrees on the same line.
        let text = std::fs::read_to_string(&job).unwrap().replace(
            "[source]\n",
            "[source]\nepoch_ms = 100\nbacklog_epoch_ms = 60000\n",
        );
        std::fs::write(&job, text).unwrap();
        let said = run(&job, workers, processes);
        if processes > 1 {
            assert!(
                said.contains("the cluster's backlog line: event times before 2025-11-22T01:54:00.000Z are read in 60000 ms epochs"),
                "{said}"
            );
        }
        // Each process keeps its recall books apart (the demo's WeCom app account recalls).
        let recall = job.parent().unwrap().join("var/state/recall");
        for p in 0..processes {
            let book = match p {
                0 => recall.join("wecom-app.jsonl"),
                p => recall.join(format!("p{p}/wecom-app.jsonl")),
            };
            assert!(
                book.is_file(),
                "{processes} x {workers}: no {}",
                book.display()
            );
        }
        seen.push((format!("{processes} x {workers}"), rows(&job)));
    }
    let (base_name, base) = &seen[0];
    assert!(base.lines().count() > 3_000, "{}", base.lines().count());
    for (name, rows) in &seen[1..] {
        assert!(
            rows == base,
            "{name} differs from {base_name}: {} rows against {}",
            rows.lines().count(),
            base.lines().count()
        );
    }
    // Every process wrote tracking files of its own; process 0 wrote the checkpoints.
}

#[test]
fn a_process_killed_mid_run_restarts_the_cluster_and_nothing_is_lost() {
    let (_base_dir, base_job) = partitioned_demo(6);
    run(&base_job, 2, 1);
    let expected = rows(&base_job);

    // Paced sends: the run is still going when a process is killed.
    let (dir, job) = paced_demo();
    let log = dir.path().join("cluster.log");

    let mut supervisor = start_local(&job, 3, &log, NOW);
    let state = dir.path().join("var/state");
    let outbox = dir.path().join("var/outbox/email.jsonl");
    // Kill process 1 once some mail went out. (A cut completes only once every send before
    // it did, which with paced sends is late: the restart may replay from the start.)
    common::wait_until(Duration::from_secs(60), "the first sends", || {
        common::count_lines(&outbox) > 60
    });
    let pids = std::fs::read_to_string(state.join("local-cluster/pids")).unwrap();
    let victim: u32 = pids.lines().nth(1).unwrap().parse().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{victim}/stat")).unwrap();
    assert!(
        !stat.contains(") Z "),
        "process 1 ended before the kill: {stat}"
    );
    let cuts_at_kill = complete_cuts(&state);
    let killed = Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = common::wait_within(&mut supervisor, Duration::from_secs(240), "the cluster");
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}\n{said}");
    assert!(
        said.contains("process 1 failed (signal 9)") && said.contains("attempt 2 of 5"),
        "the supervisor saw the kill and started again:\n{said}"
    );
    let got = rows(&job);
    let tracking = dir.path().join("var/tracking");
    let distinct = common::sql_csv(
        &tracking,
        &format!(
            "SELECT message_id, receiver, state, reason FROM ({ROWS}) GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
        ),
    );
    let repeats = got.lines().count() - distinct.lines().count();
    eprintln!(
        "cluster kill: {} rows ({} distinct, {repeats} repeated after the restart from {cuts_at_kill} complete cut(s); the rest took {:.1?})",
        got.lines().count() - 1,
        distinct.lines().count() - 1,
        started.elapsed()
    );
    // Nothing lost and nothing decided differently: the distinct rows are the one-process
    // run's rows; replays after the kill only repeat rows.
    assert!(
        distinct == expected,
        "{} distinct rows against {} of one process\n{said}",
        distinct.lines().count(),
        expected.lines().count()
    );
    let terminal = common::sql_csv(
        &tracking,
        "SELECT count(*) FROM (SELECT message_id, receiver FROM events \
           WHERE state IN ('SEND_SUCCESS', 'SEND_FAIL') GROUP BY 1, 2 HAVING count(DISTINCT state) > 1)",
    );
    assert_eq!(common::first_row::<usize>(&terminal), vec![0]);
}

#[test]
fn a_graceful_stop_of_2_processes_and_a_restart_on_3_write_each_row_once() {
    let (_base_dir, base_job) = partitioned_demo(6);
    run(&base_job, 1, 1);
    let expected = rows(&base_job);

    let (dir, job) = paced_demo();
    // Process 0 serves the live state, for its own workers.
    let mut text = std::fs::read_to_string(&job).unwrap();
    text.push_str("\n[admin]\nbind = \"127.0.0.1:0\"\n");
    std::fs::write(&job, text).unwrap();
    let log = dir.path().join("cluster.log");
    let mut supervisor = start_local(&job, 2, &log, NOW);
    let outbox = dir.path().join("var/outbox/email.jsonl");
    common::wait_until(Duration::from_secs(60), "the first sends", || {
        common::count_lines(&outbox) > 60
    });
    let addr = std::fs::read_to_string(dir.path().join("var/state/admin.addr")).unwrap();
    let ask = |path: &str| {
        let r = reqwest::blocking::get(format!("http://{}{path}", addr.trim()));
        r.map(|r| (r.status().as_u16(), r.text().unwrap_or_default()))
            .unwrap_or((0, String::new()))
    };
    let (operators, state) = (ask("/state/operators"), ask("/state"));
    let said = common::stop_gracefully(&mut supervisor, &log);
    let summed = serde_json::from_str::<serde_json::Value>(&operators.1).unwrap_or_default();
    assert_eq!(operators.0, 200, "{operators:?}");
    assert_eq!(
        (
            &summed["ContentDedup"]["workers"],
            &summed["ContentDedup"]["of_workers"]
        ),
        (&serde_json::json!(1), &serde_json::json!(2)),
        "{summed}"
    );
    assert_eq!(state.0, 200, "{state:?}");
    let stopped = common::count_lines(&outbox);
    // The rest, on three processes: it resumes at the stop's cut.
    run(&job, 1, 3);
    let got = rows(&job);
    eprintln!(
        "cluster stop: {stopped} mails before the stop, {} rows in all",
        got.lines().count() - 1
    );
    assert!(
        got == expected,
        "{} rows against {} of one process run straight through\n{said}",
        got.lines().count(),
        expected.lines().count()
    );
}

fn complete_cuts(state: &Path) -> usize {
    std::fs::read_dir(state.join("checkpoints"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().join("_COMPLETE").is_file())
                .count()
        })
        .unwrap_or(0)
}

/// The same burst over a topic of 4 partitions, read by 1 process × 2 workers, 3 × 1 and 2 × 2
/// (each run its own group, state and tracking): identical rows.
#[test]
fn a_kafka_burst_over_four_partitions_decides_alike_on_1x2_3x1_and_2x2() {
    use tidings_dataflows::kafka::{Outgoing, produce};
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into());
    let (dir, file_job) = common::demo_copy();
    let unique = common::unique();
    let topic = format!("cluster-{unique}");
    let text = std::fs::read_to_string(dir.path().join("requests.jsonl")).unwrap();
    // Every line its own key: the broker spreads them over the topic's 4 partitions.
    let records = text.lines().enumerate().map(|(i, l)| Outgoing {
        key: Some(format!("k{i}")),
        ..Outgoing::of_line(l).unwrap()
    });
    produce(&brokers, &topic, records, || {}).unwrap();
    let mut seen: Vec<(String, String)> = Vec::new();
    for (processes, workers) in [(1, 2), (3, 1), (2, 2)] {
        let name = format!("{processes}x{workers}");
        let job_text = std::fs::read_to_string(&file_job)
            .unwrap()
            .replace(
                "kind = \"file\"\npath = \"requests.jsonl\"\nepoch_lines = 256",
                &format!(
                    "kind = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\ngroup = \"g{name}-{unique}\"\nmax_out_of_order_ms = 300000"
                ),
            )
            .replace("state_dir = \"var/state\"", &format!("state_dir = \"var/state-{name}\""))
            .replace("dir = \"var/tracking\"", &format!("dir = \"var/tracking-{name}\""))
            // No rate limits: a rate-limited account of a Kafka job queues in a topic named
            // after the source topic, which the three runs would share.
            .lines()
            .filter(|l| !l.starts_with("rate_limit"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            job_text.contains("kind = \"kafka\"") && job_text.contains(&format!("tracking-{name}"))
        );
        let job = dir.path().join(format!("kafka-{name}.toml"));
        std::fs::write(&job, job_text).unwrap();
        let mut args = vec![
            "run".to_string(),
            job.display().to_string(),
            "--now".into(),
            NOW.into(),
            "-w".into(),
            workers.to_string(),
            "--idle-exit".into(),
            "8".into(),
        ];
        if processes > 1 {
            args.extend(["--local".into(), processes.to_string()]);
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let status = common::wait_within(&mut child, Duration::from_secs(180), &name);
        assert!(status.success(), "{name}: {status}");
        let rows = common::sql_csv(&dir.path().join(format!("var/tracking-{name}")), ROWS);
        seen.push((name, rows));
    }
    let (base_name, base) = &seen[0];
    assert!(base.lines().count() > 3_000, "{}", base.lines().count());
    for (name, rows) in &seen[1..] {
        assert!(
            rows == base,
            "{name} differs from {base_name}: {} rows against {}",
            rows.lines().count(),
            base.lines().count()
        );
    }
}

/// The partitioned demo, its files followed (the run never ends by itself) and sent slowly (a
/// graceful stop would take minutes: a second signal is what ends it).
fn endless_demo() -> (tempfile::TempDir, PathBuf) {
    let (dir, job) = partitioned_demo(1);
    let text = std::fs::read_to_string(&job)
        .unwrap()
        .replace("[source]\n", "[source]\nfollow = true\n")
        .replace("per_second = 500", "per_second = 2");
    std::fs::write(&job, text).unwrap();
    (dir, job)
}

/// A second signal to the `--local` supervisor halts the cluster: every process is ended
/// (none is left running behind the supervisor), the exit is non-zero with one line.
#[test]
fn a_second_signal_to_the_supervisor_leaves_no_process_behind() {
    let (dir, job) = endless_demo();
    let log = dir.path().join("local.log");
    let mut child = start_local(&job, 2, &log, NOW);
    let pids_file = dir.path().join("var/state/local-cluster/pids");
    common::wait_until(Duration::from_secs(60), "the processes' pids", || {
        std::fs::read_to_string(&pids_file).is_ok_and(|p| p.lines().count() == 2)
    });
    let pids: Vec<String> = std::fs::read_to_string(&pids_file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    // Sending: the processes are past their start (signal handlers installed).
    let outbox = dir.path().join("var/outbox");
    first_sends(&outbox);
    let interrupt = || {
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap()
    };
    // The second signal once the supervisor has taken the first (a graceful stop).
    interrupt();
    common::wait_until(Duration::from_secs(30), "the first signal taken", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("stopping (SIGINT)"))
    });
    interrupt();
    let status = common::wait_within(&mut child, Duration::from_secs(30), "the supervisor");
    let alive = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split_whitespace().nth(2).is_none_or(|st| st != "Z"))
    };
    let left: Vec<&String> = pids.iter().filter(|p| alive(p)).collect();
    assert!(left.is_empty(), "processes left running: {left:?}");
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(
        !status.success() && stderr.contains("stopped at once"),
        "{status}: {stderr}"
    );
}

/// The processes of a hand-started cluster, killed when the test ends however it ends.
struct Procs(Vec<std::process::Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits (90 s at most) until the outbox under `outbox` holds a send.
fn first_sends(outbox: &Path) {
    common::wait_until(Duration::from_secs(90), "the first sends", || {
        common::count_lines(outbox) > 0
    });
}

/// The text of each of `logs`.
fn read_all(logs: &[PathBuf]) -> Vec<String> {
    logs.iter()
        .map(|l| std::fs::read_to_string(l).unwrap())
        .collect()
}

/// Starts `job` as a 2-process cluster by hand (`-n 2 -p I -h HOSTS` each, no supervisor),
/// process `I` with `extra[I]` too (`--now NOW` unless it gives another); returns them and
/// their stderr files.
fn hand_started(dir: &Path, job: &Path, extra: [&[&str]; 2]) -> (Procs, Vec<PathBuf>) {
    hand_started_with(dir, job, extra, [&[], &[]], Some(NOW))
}

/// [`hand_started`], process `I` with the environment variables `env[I]` too, the clock at
/// `now` (`None`: the system's).
fn hand_started_with(
    dir: &Path,
    job: &Path,
    extra: [&[&str]; 2],
    env: [&[(&str, &str)]; 2],
    now: Option<&str>,
) -> (Procs, Vec<PathBuf>) {
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let logs: Vec<PathBuf> = (0..2).map(|i| dir.join(format!("p{i}.log"))).collect();
    let procs = Procs(
        (0..2)
            .map(|i| {
                let now: Vec<&str> = match now {
                    Some(now) if !extra[i].contains(&"--now") => vec!["--now", now],
                    _ => vec![],
                };
                Command::new(env!("CARGO_BIN_EXE_tidings"))
                    .args(["run", job.to_str().unwrap(), "-w", "1"])
                    .args(now)
                    .args(["-n", "2", "-p", &i.to_string(), "-h"])
                    .arg(&hosts)
                    .args(extra[i])
                    .envs(env[i].iter().copied())
                    .env_remove("RUST_BACKTRACE")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&logs[i]).unwrap())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    (procs, logs)
}

/// Processes given different backlog lines (here one a line and the other none) would put
/// event times in different epochs and judge the same records in different orders: the run is
/// refused, every process exits non-zero, and says why.
#[test]
fn processes_with_different_backlog_lines_are_refused() {
    let (dir, job) = endless_demo();
    let (mut procs, logs) = hand_started(
        dir.path(),
        &job,
        [&["--backlog-before", "2025-11-22T10:00:00+08:00"], &[]],
    );
    let procs = &mut procs.0;
    // A process that does not end shows both processes' logs (a rare hang in a full run).
    let said = || {
        let logs: Vec<String> = logs
            .iter()
            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .collect();
        format!("; the logs:\n{}", logs.join("\n----\n"))
    };
    let limit = Duration::from_secs(90);
    let first = common::wait_within_showing(&mut procs[0], limit, "process 0", said);
    let second = common::wait_within_showing(&mut procs[1], limit, "process 1", said);
    assert!(!first.success() && !second.success(), "{first} {second}");
    for log in &logs {
        let said = std::fs::read_to_string(log).unwrap();
        assert!(
            said.contains(
                "different --backlog-before (process 0: 2025-11-22T02:00:00.000Z; process 1: none)"
            ),
            "{said}"
        );
    }
}

/// A process whose peers never connect (one failed at its start, or was never started) fails
/// after its connect timeout with one line naming the addresses, instead of waiting for ever.
#[test]
fn a_cluster_that_does_not_form_fails_after_its_connect_timeout() {
    let (dir, job) = endless_demo();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Process 1's address takes no connection: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1:{port}\n127.0.0.1:{closed}\n")).unwrap();
    let log = dir.path().join("p0.log");
    let mut alone = Procs(vec![
        Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args(["run", job.to_str().unwrap(), "-w", "1", "--now", NOW])
            .args(["-n", "2", "-p", "0", "-h"])
            .arg(&hosts)
            .args(["--connect-timeout", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    ]);
    let status = common::wait_within(&mut alone.0[0], Duration::from_secs(60), "process 0");
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{status}: {said}");
    assert!(
        said.contains(&format!(
            "the cluster did not form within 2 s: process 0 of 2 waited for the others to \
             connect (127.0.0.1:{port}, 127.0.0.1:{closed})"
        )),
        "{said}"
    );
    // A timeout of no time is refused before anything starts.
    let out = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args([
            "run",
            job.to_str().unwrap(),
            "-n",
            "2",
            "-p",
            "0",
            "--connect-timeout=0",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--connect-timeout 0: give a positive number"),
        "{stderr}"
    );
}

/// Processes whose clocks differ (here by an hour) take process 0's backlog line: both read
/// the same grid of epochs, and the run goes on.
#[test]
fn a_cluster_takes_process_0s_backlog_line() {
    let (dir, job) = endless_demo();
    let (_procs, logs) = hand_started(
        dir.path(),
        &job,
        [&[], &["--now", "2025-11-22T11:00:00+08:00"]],
    );
    let said = |i: usize| std::fs::read_to_string(&logs[i]).unwrap_or_default();
    let line = |text: &str| {
        let at = text.find("event times before ")? + "event times before ".len();
        let end = at + text[at..].find(' ')?;
        Some(
            chrono::DateTime::parse_from_rfc3339(&text[at..end])
                .ok()?
                .timestamp_millis(),
        )
    };
    common::wait_until(
        Duration::from_secs(90),
        "both processes' backlog lines",
        || line(&said(0)).is_some() && line(&said(1)).is_some(),
    );
    let (first, second) = (line(&said(0)).unwrap(), line(&said(1)).unwrap());
    let now = chrono::DateTime::parse_from_rfc3339(NOW)
        .unwrap()
        .timestamp_millis();
    // Process 0's clock less a minute and the job's out-of-order bound (5 minutes), in whole
    // seconds; process 1's own would be an hour later.
    assert_eq!((first, second), (now - 360_000, now - 360_000));
    let outbox = dir.path().join("var/outbox");
    first_sends(&outbox);
}

/// A cluster started by hand is fail-stop too: a process halted by a second signal tells the
/// other, which halts instead of waiting for it; both exit non-zero with one line saying why.
#[test]
fn a_halted_process_of_a_hand_started_cluster_halts_the_other() {
    let (dir, job) = endless_demo();
    let (mut procs, logs) = hand_started(dir.path(), &job, [&[], &[]]);
    let procs = &mut procs.0;
    let outbox = dir.path().join("var/outbox");
    first_sends(&outbox);
    let interrupt = |pid: u32| {
        Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap()
    };
    interrupt(procs[1].id());
    common::wait_until(Duration::from_secs(30), "the first signal taken", || {
        std::fs::read_to_string(&logs[1]).is_ok_and(|l| l.contains("stopping (SIGINT)"))
    });
    interrupt(procs[1].id());
    let halted = common::wait_within(&mut procs[1], Duration::from_secs(30), "process 1");
    let told = common::wait_within(&mut procs[0], Duration::from_secs(30), "process 0");
    let said = read_all(&logs);
    assert!(
        !halted.success() && said[1].contains("stopped at once"),
        "{halted}: {}",
        said[1]
    );
    assert!(
        !told.success() && said[0].contains("another process of the cluster ended early"),
        "{told}: {}",
        said[0]
    );
}

/// A bug's panic in a worker of a cluster is said as one (its worker and place), not blamed on
/// a peer: timely names its workers `timely:work-N`, and every `timely:` thread was once read
/// as a network thread. The other process says its peer ended early.
#[test]
fn a_workers_panic_in_a_cluster_is_said_as_a_panic() {
    let (dir, job) = partitioned_demo(1);
    let (mut procs, logs) = hand_started_with(
        dir.path(),
        &job,
        [&[], &[]],
        [&[], &[("TIDINGS_FAIL_WORKER", "1")]],
        Some(NOW),
    );
    let procs = &mut procs.0;
    let failed = common::wait_within(&mut procs[1], Duration::from_secs(60), "process 1");
    let told = common::wait_within(&mut procs[0], Duration::from_secs(60), "process 0");
    let said = read_all(&logs);
    let errors: Vec<&str> = said[1]
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert!(!failed.success(), "{}", said[1]);
    assert_eq!(errors.len(), 1, "{}", said[1]);
    assert!(
        errors[0].contains("worker 1 panicked at ")
            && errors[0].contains("injected fault (TIDINGS_FAIL_WORKER=1)")
            && !errors[0].contains("peer process"),
        "{}",
        said[1]
    );
    assert!(!told.success(), "{}", said[0]);
}

/// A process of a cluster that fails because a peer is gone leaves the rows it had not yet
/// written to Redis (durable in Parquet, queued in memory while Redis is down) in its spool
/// for the next run: the restart replays only what follows its checkpoint, so they would
/// never reach Redis otherwise.
#[test]
fn a_fail_stopped_process_spools_what_it_owed_redis() {
    let (dir, job) = endless_demo();
    // A Redis that answers nothing: every row waits in the writer's memory.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = std::fs::read_to_string(&job).unwrap().replace(
        "[tracking]\n",
        &format!("[tracking]\nredis = \"redis://127.0.0.1:{closed}\"\n"),
    );
    std::fs::write(&job, text).unwrap();
    let (mut procs, logs) = hand_started(dir.path(), &job, [&[], &[]]);
    let procs = &mut procs.0;
    // Rows durable in Parquet: the writer has been handed some.
    let events = dir.path().join("var/tracking/events");
    common::wait_until(Duration::from_secs(90), "the first tracking files", || {
        common::parquet_files(&events) > 0
    });
    procs[1].kill().unwrap();
    let _ = procs[1].wait();
    let failed = common::wait_within(&mut procs[0], Duration::from_secs(60), "process 0");
    let said = std::fs::read_to_string(&logs[0]).unwrap();
    assert!(!failed.success(), "{said}");
    assert!(
        said.contains("Redis rows spooled for the next run"),
        "{said}"
    );
    let spool = dir.path().join("var/state/redis-spool");
    let rows: usize = std::fs::read_dir(&spool)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap().lines().count())
        .sum();
    assert!(rows > 0, "nothing spooled in {}: {said}", spool.display());
}

/// Each process of a cluster keeps its own recall book (the calls its workers made); a recall
/// asks every process and merges their answers. 24 WeCom messages over 4 partitions, then a
/// recall naming half of them and an unknown id, and a recall of the whole template: every
/// receiver is recalled once and only the unknown id fails, on 2 processes as on 1, and on 1
/// after 2 sent (process 0 takes in the book of the process the cluster no longer has).
#[test]
fn a_recall_in_a_cluster_reaches_the_calls_of_every_process() {
    const T0: i64 = 1_763_776_800_000; // NOW
    let template = "[[template]]\nid = 1\nname = \"t1\"\nchannel = \"enterprise_we_chat\"\nmsg_type = \"notice\"\nid_type = \"enterprise_user_id\"\naccount = \"wecom\"\ndedup = false\n[template.content]\ncontent = \"task {$v}\"\n";
    let accounts = "state_dir = \"var/state\"\n[accounts.wecom]\nchannel = \"enterprise_we_chat\"\nprovider = \"outbox\"\ndir = \"var/outbox\"\n";
    let write = |dir: &Path, parts: [Vec<String>; 4]| {
        for (p, lines) in parts.iter().enumerate() {
            let file = dir.join(format!("requests/p{p}.jsonl"));
            std::fs::write(file, lines.join("\n")).unwrap();
        }
    };
    let recall = |ts: i64, ids: &[String]| {
        let payload = serde_json::json!({"code": "recall", "messageTemplateId": 1,
            "recallMessageIds": ids});
        serde_json::json!({"ts": ts, "key": "k", "payload": payload.to_string()}).to_string()
    };
    let mut seen = Vec::new();
    for ((processes, workers), (recall_processes, recall_workers)) in
        [((2, 1), (2, 1)), ((1, 2), (1, 2)), ((2, 1), (1, 2))]
    {
        let dir = tempfile::tempdir().unwrap();
        let job = common::write_job(dir.path(), template, "", accounts);
        let text = std::fs::read_to_string(&job)
            .unwrap()
            .replace("path = \"requests.jsonl\"", "path = \"requests\"");
        std::fs::write(&job, text).unwrap();
        std::fs::create_dir_all(dir.path().join("requests")).unwrap();
        write(
            dir.path(),
            std::array::from_fn(|p| {
                (0..6)
                    .map(|k| {
                        let ts = T0 - 600_000 + (p as i64 * 6 + k) * 1_000;
                        common::envelope(ts, 1, &format!("u{p}-{k}"), "a")
                    })
                    .collect()
            }),
        );
        run(&job, workers, processes);
        let tracking = dir.path().join("var/tracking");
        let sent = common::sql_csv(
            &tracking,
            "SELECT receiver, message_id FROM events WHERE state = 'SEND_SUCCESS' ORDER BY 1",
        );
        let ids: Vec<(String, String)> = sent
            .lines()
            .skip(1)
            .map(|l| {
                let (r, m) = l.split_once(',').unwrap();
                (r.to_string(), m.to_string())
            })
            .collect();
        assert_eq!(ids.len(), 24, "{sent}");
        if processes == 2 {
            // Both processes made calls: each book holds some.
            let book = dir.path().join("var/state/recall");
            for file in [book.join("wecom.jsonl"), book.join("p1/wecom.jsonl")] {
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                assert!(text.lines().count() > 0, "{} is empty", file.display());
            }
        }
        // Half the messages by id (of every partition) and an unknown id, from partition 0;
        // the whole template later, from partition 3.
        let mut named: Vec<String> = ids.iter().step_by(2).map(|(_, m)| m.clone()).collect();
        named.push("no-such-message".into());
        write(
            dir.path(),
            [
                vec![recall(T0 - 100_000, &named)],
                vec![],
                vec![],
                vec![recall(T0 - 90_000, &[])],
            ],
        );
        run(&job, recall_workers, recall_processes);
        let orphan = dir.path().join("var/state/recall/p1");
        assert_eq!(
            orphan.exists(),
            recall_processes == 2,
            "{}",
            orphan.display()
        );
        let recalled = common::sql_csv(
            &tracking,
            "SELECT receiver, message_id, state, coalesce(reason, '') FROM events \
             WHERE state LIKE 'RECALL%' ORDER BY 1, 2, 3",
        );
        let lines: Vec<&str> = recalled.lines().skip(1).collect();
        let ok: Vec<&str> = lines
            .iter()
            .filter(|l| l.contains("RECALL_SUCCESS"))
            .copied()
            .collect();
        assert_eq!(
            ok.len(),
            24,
            "{processes} x {workers}, then {recall_processes} x {recall_workers}: {recalled}"
        );
        let failed: Vec<&str> = lines
            .iter()
            .filter(|l| l.contains("RECALL_FAIL"))
            .copied()
            .collect();
        assert_eq!(
            failed.len(),
            1,
            "{processes} x {workers}, then {recall_processes} x {recall_workers}: {recalled}"
        );
        assert!(
            failed[0].contains("no-such-message") && failed[0].contains("not recallable"),
            "{failed:?}"
        );
        // The same receivers whatever the shape (message ids are per run).
        let receivers: Vec<String> = lines
            .iter()
            .map(|l| l.split(',').next().unwrap().to_string())
            .collect();
        seen.push(receivers);
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0], seen[2]);
}

/// A process waiting for its cluster to form stops at once on SIGTERM, exit 0 (nothing was
/// read): it ignored the stop until the whole drain bound passed and it was killed, which
/// under `serve --peers` was every stop of a job whose other node's service was down.
#[test]
fn a_process_waiting_for_its_cluster_stops_on_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let job = common::write_job(
        dir.path(),
        &common::sms_template(1, "none", false, "user_id"),
        "",
        "",
    );
    let hosts = dir.path().join("hosts");
    let lines = common::free_addresses(2);
    std::fs::write(&hosts, lines.join("\n") + "\n").unwrap();
    let log = dir.path().join("p1.log");
    // Process 1 alone: process 0 is never started. (timely says it retries on stdout.)
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args([
            "run",
            job.to_str().unwrap(),
            "-w",
            "1",
            "-n",
            "2",
            "-p",
            "1",
            "-h",
        ])
        .arg(&hosts)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    common::wait_until(
        Duration::from_secs(60),
        "process 1 trying to connect",
        || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("connecting")),
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status =
        common::wait_within_showing(&mut child, Duration::from_secs(10), "process 1", || {
            std::fs::read_to_string(&log).unwrap_or_default()
        });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{status}: {text}");
    assert!(text.contains("stopped before the cluster formed"), "{text}");
}

/// A graceful stop asked of process 1 alone (a pod evicted, a hand-started process signalled)
/// stops the whole cluster at one cut, every process exiting 0: process 0, which reads the
/// account topics, stops them too (it waited for a stop of its own, and the cluster was
/// halted at the drain timeout, exiting 1).
#[test]
fn a_stop_asked_of_process_1_stops_a_cluster_with_account_topics() {
    use tidings_dataflows::kafka::{Outgoing, produce};
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into());
    let dir = tempfile::tempdir().unwrap();
    let unique = common::unique();
    let topic = format!("stop1-{unique}");
    std::fs::write(
        dir.path().join("templates.toml"),
        common::sms_template(1, "none", false, "phone"),
    )
    .unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"stop1\"\ntemplates = \"templates.toml\"\nstate_dir = \"var/state\"\n[source]\nkind = \"kafka\"\n\
             brokers = \"{brokers}\"\ntopic = \"{topic}\"\ngroup = \"g-{unique}\"\ncheckpoint_ms = 200\n\
             [tracking]\ndir = \"var/tracking\"\n\
             [accounts.out]\nchannel = \"sms\"\nprovider = \"outbox\"\ndir = \"var/outbox\"\n\
             rate_limit = {{ per_second = 20 }}\nmax_queued = 20\n"
        ),
    )
    .unwrap();
    // 200 requests at 20 a second: the run is stopped mid-way (and its account drains the 20
    // it holds within a second).
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let records = (0..200).map(|i| Outgoing {
        key: Some(format!("k{i}")),
        ..Outgoing::of_line(&common::envelope(ts + i, 1, &format!("138{i:08}"), "x")).unwrap()
    });
    produce(&brokers, &topic, records, || {}).unwrap();
    let drain: &[&str] = &["--drain-timeout", "20"];
    // The system clock: a stop waits for the caught-up watermark to pass its cut.
    let (mut procs, logs) = hand_started_with(dir.path(), &job, [drain, drain], [&[], &[]], None);
    let procs = &mut procs.0;
    let outbox = dir.path().join("var/outbox");
    first_sends(&outbox);
    let status = Command::new("kill")
        .args(["-TERM", &procs[1].id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let one = common::wait_within(&mut procs[1], Duration::from_secs(60), "process 1");
    let zero = common::wait_within(&mut procs[0], Duration::from_secs(60), "process 0");
    let said = read_all(&logs);
    assert!(
        one.success(),
        "process 1 {one}: {}\n0: {}",
        said[1],
        said[0]
    );
    assert!(zero.success(), "process 0 {zero}: {}", said[0]);
}
