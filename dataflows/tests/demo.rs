//! End to end on the demo job: the binary runs it into Parquet, DataFusion reads it back, every
//! state of docs/states.md is reached, every RECEIVE has exactly one terminal state, and 1 and 4
//! workers write the same rows.

mod common;

use common::tidings;

use std::path::Path;

use tidings_dataflows::{Job, RunOptions, run};
use tidings_operators::Clock;

fn sql(dir: &Path, query: &str) -> String {
    common::sql_csv(dir, query)
}

#[test]
fn demo_reaches_every_state_and_reads_back() {
    let (_dir, job) = common::demo_copy();
    let job_s = job.to_str().unwrap();
    let summary = tidings(&["run", job_s, "-w", "2"]);
    assert!(
        summary.contains("SEND_SUCCESS") && summary.contains("dead letters"),
        "{summary}"
    );

    let by_state = tidings(&[
        "sql",
        "--job",
        job_s,
        "--format",
        "csv",
        "SELECT state, count(*) AS n FROM events GROUP BY state ORDER BY state",
    ]);
    for state in [
        "RECEIVE",
        "RECEIVER_INVALID",
        "DISCARD",
        "NIGHT_SHIELD",
        "NIGHT_SHIELD_NEXT_SEND",
        "CONTENT_DEDUPLICATION",
        "RULE_DEDUPLICATION",
        "WHITE_LIST",
        "SEND_SUCCESS",
        "SEND_FAIL",
    ] {
        assert!(
            by_state
                .lines()
                .any(|l| l.starts_with(&format!("{state},"))),
            "{state} missing:\n{by_state}"
        );
    }
    let tracking = job.parent().unwrap().join("var/tracking");

    // Every RECEIVE ends in exactly one terminal state (nothing is left parked: the demo's
    // event times are in the past, so every release is due by the end of the run).
    let bad = sql(
        &tracking,
        "SELECT count(*) AS bad FROM (SELECT message_id, receiver, \
           sum(CASE WHEN state = 'RECEIVE' THEN 1 ELSE 0 END) AS received, \
           sum(CASE WHEN state_code IN (15, 20, 22, 30, 40, 50, 60, 70) THEN 1 ELSE 0 END) AS terminal \
         FROM events GROUP BY message_id, receiver HAVING received <> 1 OR terminal <> 1)",
    );
    assert_eq!(
        bad.trim(),
        "bad\n0",
        "receivers without exactly one terminal state"
    );

    // Dead letters: every bad-input kind of §4.1, each with its reason.
    let dead = sql(
        &tracking,
        "SELECT count(*) AS n, count(DISTINCT reason) AS reasons FROM dead_letters WHERE reason <> ''",
    );
    let counts: Vec<i64> = common::first_row(&dead);
    assert!(counts[0] >= 10 && counts[1] >= 6, "{dead}");

    // The outbox holds one line per SEND_SUCCESS.
    let sent = sql(
        &tracking,
        "SELECT count(*) FROM events WHERE state = 'SEND_SUCCESS'",
    );
    let sent: usize = sent.lines().nth(1).unwrap().parse().unwrap();
    let outbox = job.parent().unwrap().join("var/outbox");
    let lines: usize = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .lines()
                .count()
        })
        .sum();
    assert_eq!(lines, sent);

    // Released night_delay messages were judged at 09:00 local, their release time.
    let released = sql(
        &tracking,
        "SELECT DISTINCT e.event_time FROM events e JOIN events p ON e.message_id = p.message_id AND e.receiver = p.receiver \
         WHERE p.state = 'NIGHT_SHIELD_NEXT_SEND' AND e.state_code IN (30, 40, 60, 70)",
    );
    assert_eq!(
        released.lines().skip(1).collect::<Vec<_>>(),
        vec!["2025-11-22T01:00:00Z"],
        "{released}"
    );
}

/// Rows of a Parquet run, without the wall-clock `time` column, in a canonical order.
fn rows_without_time(job: &Path, workers: usize) -> String {
    let job = Job::load(job).unwrap();
    let mut opts = RunOptions::for_job(&job);
    opts.workers = workers;
    opts.clock = Clock::Fixed(1_800_000_000_000);
    run(&job, &opts).unwrap();
    sql(
        job.tracking_dir.local().unwrap(),
        "SELECT event_time, message_id, business_id, template_id, channel, msg_type, receiver, state, state_code, reason, biz_id, date \
         FROM events ORDER BY message_id, receiver, state_code, event_time",
    )
}

#[test]
fn one_and_four_workers_write_the_same_rows() {
    let (_a, job1) = common::demo_copy();
    let (_b, job4) = common::demo_copy();
    let one = rows_without_time(&job1, 1);
    let four = rows_without_time(&job4, 4);
    assert!(one.lines().count() > 3000, "{}", one.lines().count());
    assert!(one == four, "1 and 4 workers differ");
}
