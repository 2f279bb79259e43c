//! Event time as the graph's time, seen from the outside: a file job resumes where it read
//! (a second run sends nothing again, appended lines are read, `follow` tails the file), and a
//! quiet Kafka topic releases a parked message when the wall clock reaches its release time.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Timelike, Utc};
use tidings_dataflows::kafka::{Outgoing, produce};

fn receive_count(tracking: &Path) -> u64 {
    let csv = common::sql_csv(
        tracking,
        "SELECT count(*) FROM events WHERE state = 'RECEIVE'",
    );
    common::first_row::<u64>(&csv)[0]
}

fn total_rows(tracking: &Path) -> u64 {
    common::first_row::<u64>(&common::sql_csv(tracking, "SELECT count(*) FROM events"))[0]
}

/// `tidings run JOB ARGS` in the background, its stderr piped.
fn spawn_run(job: &Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tidings"))
        .arg("run")
        .arg(job)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn interrupt(mut child: Child, what: &str) -> String {
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = common::wait_within(&mut child, Duration::from_secs(60), what);
    let mut err = String::new();
    use std::io::Read as _;
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "{what}: {err}");
    err
}

#[test]
fn a_file_job_resumes_where_it_read() {
    let (dir, job) = common::demo_copy();
    let j = job.to_str().unwrap();
    let tracking = dir.path().join("var/tracking");
    let now = "2025-11-23T12:00:00+08:00";
    common::tidings(&["run", j, "--now", now]);
    let receives = receive_count(&tracking);
    let rows = total_rows(&tracking);
    assert!(receives > 1000, "{receives}");

    // The same file again: nothing is read, nothing is written.
    common::tidings(&["run", j, "--now", now]);
    assert_eq!(total_rows(&tracking), rows, "a second run wrote rows");

    // Lines appended later are read by the next run, and only they.
    let appended = three_codes("1380013800", "77", 1_763_784_000_000);
    let path = dir.path().join("requests.jsonl");
    let mut text = std::fs::read_to_string(&path).unwrap();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&appended);
    std::fs::write(&path, text).unwrap();
    common::tidings(&["run", j, "--now", now]);
    assert_eq!(receive_count(&tracking), receives + 3);

    // `--from-start` replays on purpose, under the same message ids.
    let ids = distinct_ids(&tracking);
    common::tidings(&["run", j, "--now", now, "--from-start"]);
    assert_eq!(receive_count(&tracking), 2 * (receives + 3));
    assert_eq!(
        distinct_ids(&tracking),
        ids,
        "a replay gives the ids it gave"
    );

    // Another file at the same path is read from its start, under ids of its own: its lines
    // 1 to 3 are not the old file's.
    std::fs::write(&path, three_codes("1390013900", "78", 1_763_784_100_000)).unwrap();
    common::tidings(&["run", j, "--now", now]);
    assert_eq!(receive_count(&tracking), 2 * (receives + 3) + 3);
    assert_eq!(
        distinct_ids(&tracking),
        ids + 3,
        "the new file's ids are new"
    );

    // Another file again, beginning with the same line as the last: its first line cannot
    // tell it apart, the bytes before the place the last run read to can. It is read from its
    // start, none of its lines skipped (its line n shares line n's id of the last file).
    let first = std::fs::read_to_string(&path).unwrap();
    let first = first.lines().next().unwrap().to_string() + "\n";
    let receives = receive_count(&tracking);
    std::fs::write(
        &path,
        first + &three_codes("1400014000", "79", 1_763_784_200_000),
    )
    .unwrap();
    common::tidings(&["run", j, "--now", now]);
    assert_eq!(receive_count(&tracking), receives + 4);
}

/// Three envelope lines of template 1: code `code` to `<phone>0`..`<phone>2`, at `ts`, +1, +2.
fn three_codes(phone: &str, code: &str, ts: i64) -> String {
    (0..3)
        .map(|i| {
            let payload = serde_json::json!({"code": "send", "messageTemplateId": 1,
                "messageParam": {"receiver": format!("{phone}{i}"), "variables": {"code": code}}});
            serde_json::json!({"ts": ts + i, "payload": payload.to_string()}).to_string() + "\n"
        })
        .collect()
}

fn distinct_ids(tracking: &Path) -> u64 {
    common::first_row::<u64>(&common::sql_csv(
        tracking,
        "SELECT count(DISTINCT message_id) FROM events",
    ))[0]
}

/// Requests `from..to` of template 1 to receivers `u<i>`, a line each (no event time: read
/// time stands for it).
fn requests(from: u32, to: u32) -> String {
    (from..to)
        .map(|i| {
            serde_json::json!({"code": "send", "messageTemplateId": 1,
                "messageParam": {"receiver": format!("u{i}"), "variables": {"v": "x"}}})
            .to_string()
                + "\n"
        })
        .collect()
}

/// A job following a file of two requests, once it has sent them: its job file, the job and
/// a wait for its outbox to hold `n` lines.
fn following(
    dir: &Path,
    args: &[&str],
) -> (std::path::PathBuf, Child, impl Fn(usize, &str) + use<>) {
    let job = common::write_job(
        dir,
        &common::sms_template(1, "none", false, "user_id"),
        &requests(0, 2),
        "",
    );
    common::set_source(&job, "follow = true\nmax_out_of_order_ms = 200");
    let child = spawn_run(&job, args);
    let outbox = dir.join("var/outbox/sms.jsonl");
    let sent = move |n: usize, what: &str| {
        common::wait_until(Duration::from_secs(30), what, || {
            common::count_lines(&outbox) == n
        })
    };
    sent(2, "the first two");
    (job, child, sent)
}

/// A [`following`] job that read its first two requests and was stopped, and two more
/// requests appended to its file while it is down: the job, the file, and the wait for sends.
fn stopped_then_appended(
    dir: &Path,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    impl Fn(usize, &str) + use<>,
) {
    let (job, child, sent) = following(dir, &[]);
    interrupt(child, "the following job");
    let path = dir.join("requests.jsonl");
    append(&path, &requests(2, 4));
    (job, path, sent)
}

/// Appends `text` to the file at `path`.
fn append(path: &Path, text: &str) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[test]
fn follow_reads_lines_appended_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let (_, child, sent) = following(dir.path(), &[]);
    append(&dir.path().join("requests.jsonl"), &requests(2, 5));
    sent(5, "the appended three");
    interrupt(child, "the following job");
    assert_eq!(receive_count(&dir.path().join("var/tracking")), 5);
}

/// A followed file rotated away (renamed, a new file made at its path) while its writer still
/// appends to it, then truncated in place and written again, then replaced by a copy of itself
/// with a line added, then written over in place with more bytes than were read of it (its first
/// line the same): each
/// new file is read from its start (the copy on from where the old one
/// was read to), the old file to its end (a last line without its newline too), no line twice,
/// and a later run reads nothing again.
#[test]
fn follow_reads_a_rotated_or_truncated_file_anew() {
    // On 1 worker and on 3, the later run on the other count: the same message ids.
    let one = rotated_run("1", "3");
    let three = rotated_run("3", "1");
    assert_eq!(one, three, "the ids depend on the worker count");
}

/// [`follow_reads_a_rotated_or_truncated_file_anew`] on `workers`, the later run on `then`:
/// the message ids of the run.
fn rotated_run(workers: &str, then: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (job, child, sent) = following(dir.path(), &["-w", workers]);
    let outbox = dir.path().join("var/outbox/sms.jsonl");
    let path = dir.path().join("requests.jsonl");
    let rotated = dir.path().join("requests.jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    std::fs::write(&path, requests(2, 5)).unwrap();
    // The writer has not reopened the path yet: two more lines to the old file, the last
    // without its newline.
    append(&rotated, requests(5, 7).trim_end());
    sent(7, "the rotated file's three and the old file's last two");
    // Shorter than what was read of it: a truncation.
    std::fs::write(&path, requests(7, 8)).unwrap();
    sent(8, "the truncated file's one");
    // A copy of it with a line added, moved over it.
    let copy = dir.path().join("requests.jsonl.new");
    let text = std::fs::read_to_string(&path).unwrap() + &requests(8, 9);
    std::fs::write(&copy, text).unwrap();
    std::fs::rename(&copy, &path).unwrap();
    sent(9, "the copy's added line");
    // Written over in place, longer than what was read of it (never shorter at any moment),
    // beginning with the same line: not lines appended, another file read from its start (its
    // first line is u7 again, under the same id: the same first line).
    {
        use std::io::Write as _;
        let first = requests(7, 8);
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all((first + &requests(9, 12)).as_bytes()).unwrap();
    }
    sent(13, "the overwritten file's four");
    interrupt(child, "the following job");
    let out = std::fs::read_to_string(&outbox).unwrap();
    for i in 0..12 {
        let times = if i == 7 { 2 } else { 1 };
        assert_eq!(
            out.matches(&format!("\"u{i}\"")).count(),
            times,
            "u{i}: {out}"
        );
    }
    let tracking = dir.path().join("var/tracking");
    assert_eq!(receive_count(&tracking), 13);
    // Each file's lines have ids of their own, but for the last two files, which begin with
    // the same line: their lines 1 and 2 (u7 and u8, u7 and u9) share ids.
    assert_eq!(
        distinct_ids(&tracking),
        11,
        "each file's lines have ids of their own"
    );

    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(&job, text.replace("follow = true", "follow = false")).unwrap();
    common::tidings(&["run", job.to_str().unwrap(), "-w", then]);
    assert_eq!(
        receive_count(&tracking),
        13,
        "the next run read a line again"
    );
    common::sql_csv(
        &tracking,
        "SELECT DISTINCT message_id FROM events ORDER BY message_id",
    )
}

/// A followed file rotated twice while its job was down (lines appended, renamed, a new file
/// made at its path, and again): the next run reads the old file on from where the last one
/// read to, then the one rotated after it, then the new one; a run that does not follow reads
/// the new one and says where the old one's unread lines are.
#[test]
fn a_file_rotated_while_its_job_was_down_is_read_on_under_its_new_name() {
    let dir = tempfile::tempdir().unwrap();
    let (job, path, _) = stopped_then_appended(dir.path());
    let rotated = |n: u32| dir.path().join(format!("requests.jsonl.{n}"));
    std::fs::rename(&path, rotated(1)).unwrap();
    std::fs::write(&path, requests(4, 6)).unwrap();
    // Last written in the same clock tick as the file read: their numbers order them.
    let read = std::fs::metadata(rotated(1)).unwrap().modified().unwrap();
    let later = std::fs::File::options().write(true).open(&path).unwrap();
    later.set_modified(read).unwrap();
    std::fs::rename(rotated(1), rotated(2)).unwrap();
    std::fs::rename(&path, rotated(1)).unwrap();
    std::fs::write(&path, requests(6, 8)).unwrap();
    // An older rotation beside them (numbered before the file read, written in its tick), a
    // copy of the old file as it was read, a compressed rotation: none is read.
    let older = std::fs::File::create(rotated(3)).unwrap();
    std::io::Write::write_all(&mut &older, requests(20, 22).as_bytes()).unwrap();
    older.set_modified(read).unwrap();
    std::fs::write(dir.path().join("requests.jsonl.bak"), requests(0, 2)).unwrap();
    std::fs::write(dir.path().join("requests.jsonl.1.gz"), requests(30, 32)).unwrap();

    // On another worker count: the ids are the files' and lines', not the workers'.
    let child = spawn_run(&job, &["-w", "2"]);
    let outbox = dir.path().join("var/outbox/sms.jsonl");
    common::wait_until(
        Duration::from_secs(30),
        "the old file's two, the middle file's two and the new file's two",
        || common::count_lines(&outbox) == 8,
    );
    let err = interrupt(child, "the following job again");
    assert!(
        err.contains("requests.jsonl.2 now (rotated): reading it on, then")
            && err.contains("requests.jsonl.1, the file at the path"),
        "{err}"
    );
    let out = std::fs::read_to_string(&outbox).unwrap();
    for i in 0..8 {
        assert_eq!(out.matches(&format!("\"u{i}\"")).count(), 1, "u{i}: {out}");
    }
    let tracking = dir.path().join("var/tracking");
    assert_eq!(distinct_ids(&tracking), 8);

    // Not following: the new file is read (from where the last run read it to), and the
    // old file's lines left unread are named.
    append(&path, &requests(8, 9));
    std::fs::rename(&path, rotated(1)).unwrap();
    std::fs::write(&path, requests(9, 10)).unwrap();
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(&job, text.replace("follow = true", "follow = false")).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["run", job.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    assert!(
        err.contains("requests.jsonl.1 now (rotated), 93 bytes of it unread"),
        "{err}"
    );
    assert_eq!(receive_count(&tracking), 9);
}

/// A followed path with no file at it (a rotation renamed it while the job was down and has
/// not made the new one; a writer that has not begun) is waited for, not refused: the file the
/// checkpoint read is read on under its new name, then the file made at the path.
#[test]
fn a_followed_path_with_no_file_yet_is_read_once_one_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let (job, path, sent) = stopped_then_appended(dir.path());
    std::fs::rename(&path, dir.path().join("requests.jsonl.1")).unwrap();
    let child = spawn_run(&job, &["-w", "2"]);
    sent(4, "the old file's two, read on under its new name");
    std::fs::write(&path, requests(4, 6)).unwrap();
    sent(6, "the new file's two");
    let err = interrupt(child, "the following job again");
    assert!(err.contains("requests.jsonl.1 now (rotated)"), "{err}");
    let out = std::fs::read_to_string(dir.path().join("var/outbox/sms.jsonl")).unwrap();
    for i in 0..6 {
        assert_eq!(out.matches(&format!("\"u{i}\"")).count(), 1, "u{i}: {out}");
    }
    assert_eq!(distinct_ids(&dir.path().join("var/tracking")), 6);

    // A job whose file is not there yet (its path relative to where it runs): it starts, and
    // reads the file once it is made.
    let fresh = tempfile::tempdir().unwrap();
    let job = common::write_job(
        fresh.path(),
        &common::sms_template(1, "none", false, "user_id"),
        "",
        "",
    );
    common::set_source(&job, "follow = true\nmax_out_of_order_ms = 200");
    let path = fresh.path().join("requests.jsonl");
    std::fs::remove_file(&path).unwrap();
    let run_here = || {
        Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args(["run", "job.toml"])
            .current_dir(fresh.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Once the job has begun waiting for it.
    let waiting = |child: &mut Child, what: &str| {
        let said = common::stderr_lines(child);
        common::wait_until(Duration::from_secs(30), what, || {
            said.any(|l| l.contains("no file at the path"))
        });
        said
    };
    let mut child = run_here();
    let mut said = waiting(&mut child, "the job waiting for its file");
    std::fs::write(&path, requests(0, 3)).unwrap();
    let outbox = fresh.path().join("var/outbox/sms.jsonl");
    let sent = |n: usize, what: &str| {
        common::wait_until(Duration::from_secs(30), what, || {
            common::count_lines(&outbox) == n
        })
    };
    sent(3, "the made file's three");
    interrupt(child, "the job waiting for its file");
    let err = said.all();
    assert!(err.contains("no file at the path yet"), "{err}");
    assert!(err.contains("a file is at its path now"), "{err}");

    // Its file moved away (not beside the path) while the job was down, a line added, and
    // moved back after the job started: read on from the checkpoint, no line again.
    let away = fresh.path().join("away");
    std::fs::create_dir(&away).unwrap();
    std::fs::rename(&path, away.join("requests.jsonl")).unwrap();
    append(&away.join("requests.jsonl"), &requests(3, 4));
    let mut child = run_here();
    let mut said = waiting(&mut child, "the job waiting for its file to come back");
    std::fs::rename(away.join("requests.jsonl"), &path).unwrap();
    sent(4, "the line added while it was away");
    interrupt(child, "the job whose file came back");
    let err = said.all();
    assert!(err.contains("resuming at line 4"), "{err}");
    let out = std::fs::read_to_string(&outbox).unwrap();
    for i in 0..4 {
        assert_eq!(out.matches(&format!("\"u{i}\"")).count(), 1, "u{i}: {out}");
    }
    assert_eq!(distinct_ids(&fresh.path().join("var/tracking")), 4);

    // Not following, a missing file is still the job file's error.
    std::fs::remove_file(&path).unwrap();
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(&job, text.replace("follow = true", "follow = false")).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["run", job.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(err.contains("is not a readable file"), "{err}");
}

#[test]
fn a_quiet_topic_releases_a_parked_message_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let unique = common::unique();
    let topic = format!("idle-{unique}");
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into());
    // A night around now (UTC), with the release 20 s ahead.
    let now = Utc::now();
    let release = now + chrono::Duration::seconds(20);
    let hm = |t: chrono::DateTime<Utc>| format!("{:02}:{:02}", t.hour(), t.minute());
    let night = format!(
        "{}-{}",
        hm(now - chrono::Duration::hours(1)),
        hm(now + chrono::Duration::minutes(2))
    );
    let release_at = format!(
        "{:02}:{:02}:{:02}",
        release.hour(),
        release.minute(),
        release.second()
    );
    std::fs::write(
        dir.path().join("templates.toml"),
        common::sms_template(1, "night_delay", false, "user_id"),
    )
    .unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"idle\"\ntimezone = \"UTC\"\ntemplates = \"templates.toml\"\n\
             [source]\nkind = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\ngroup = \"g-{unique}\"\n\
             [shield]\nnight = \"{night}\"\nrelease_at = \"{release_at}\"\n\
             [tracking]\ndir = \"var/tracking\"\n[accounts.out]\nchannel = \"sms\"\nprovider = \"outbox\"\ndir = \"var/outbox\"\n"
        ),
    )
    .unwrap();
    // The topic exists before the job starts; the one record is produced with the time of now.
    let line = serde_json::json!({"code": "send", "messageTemplateId": 1,
        "messageParam": {"receiver": "night-owl", "variables": {"v": "x"}}})
    .to_string();
    let child = spawn_run(&job, &[]);
    produce(&brokers, &topic, [Outgoing::of_line(&line).unwrap()], || {}).unwrap();
    let outbox = dir.path().join("var/outbox/sms.jsonl");
    let release_ms = Utc
        .timestamp_millis_opt(release.timestamp_millis())
        .unwrap()
        .with_nanosecond(0)
        .unwrap()
        .timestamp_millis();
    common::wait_until(
        Duration::from_secs(40),
        "the parked message sent with no other record",
        || common::count_lines(&outbox) == 1,
    );
    let sent_at = Utc::now().timestamp_millis();
    assert!(
        sent_at >= release_ms,
        "sent {} ms before its release",
        release_ms - sent_at
    );
    assert!(
        sent_at <= release_ms + 1_000,
        "sent {} ms after its release time",
        sent_at - release_ms
    );
    interrupt(child, "the Kafka job");
}

#[test]
fn an_unreachable_broker_is_said_within_seconds_and_idle_exit_still_ends_the_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("templates.toml"),
        common::sms_template(1, "none", false, "user_id"),
    )
    .unwrap();
    let job = dir.path().join("job.toml");
    // Port 1 on loopback: nothing listens there.
    std::fs::write(
        &job,
        "name = \"down\"\ntemplates = \"templates.toml\"\n[source]\nkind = \"kafka\"\nbrokers = \"127.0.0.1:1\"\n\
         topic = \"nowhere\"\n[tracking]\ndir = \"var/tracking\"\n\
         [accounts.out]\nchannel = \"sms\"\nprovider = \"outbox\"\ndir = \"var/outbox\"\n",
    )
    .unwrap();
    let start = Instant::now();
    let mut child = spawn_run(&job, &["--idle-exit", "4"]);
    let stderr = child.stderr.take().unwrap();
    let said = std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut first = None;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if first.is_none() && line.contains("cannot reach the brokers at 127.0.0.1:1") {
                first = Some(start.elapsed());
            }
            all.push_str(&line);
            all.push('\n');
        }
        (first, all)
    });
    let status = common::wait_within(
        &mut child,
        Duration::from_secs(60),
        "the job with no broker",
    );
    let (first, all) = said.join().unwrap();
    let first = first.unwrap_or_else(|| panic!("never said the brokers are unreachable: {all}"));
    assert!(first < Duration::from_secs(10), "said after {first:?}");
    assert!(status.success(), "{all}");
}

#[test]
fn a_record_later_than_the_bound_is_judged_at_the_watermark_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let t = 1_763_784_000_000; // 2025-11-22 12:00 Shanghai
    let hour = 3_600_000;
    let requests = [
        common::envelope(t, 1, "u1", "a"),
        common::envelope(t + hour, 1, "u2", "b"),
        common::envelope(t, 1, "u3", "c"), // an hour behind: later than the 5-minute bound
        common::envelope(t + hour - 60_000, 1, "u4", "d"), // a minute behind: on time
    ]
    .join("\n");
    let job = common::write_job(
        dir.path(),
        &common::sms_template(1, "none", true, "user_id"),
        &requests,
        "",
    );
    let (events, dead, _) = common::run_memory(&job, 2, t + 2 * hour);
    assert!(dead.is_empty(), "{dead:?}");
    let receive = |r: &str| {
        events
            .iter()
            .find(|e| &*e.receiver == r && e.state == tidings_model::State::Receive)
            .unwrap_or_else(|| panic!("no RECEIVE for {r}: {events:?}"))
    };
    let late = receive("u3");
    assert_eq!(
        late.event_time,
        t + hour - 300_000,
        "judged at the watermark"
    );
    let reason = late.reason.as_deref().unwrap_or_default();
    assert!(
        reason.starts_with("late: event time 1763784000000 came 3300000 ms behind"),
        "{reason}"
    );
    let on_time = receive("u4");
    assert_eq!(on_time.event_time, t + hour - 60_000);
    assert!(on_time.reason.is_none());
    assert!(
        events
            .iter()
            .filter(|e| e.state == tidings_model::State::SendSuccess)
            .count()
            == 4
    );
}
