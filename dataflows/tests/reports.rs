//! Reports and the SQL shell on the demo's output: the demo is run with a fixed clock (so its
//! Parquet is the same every time), every report in `sql/queries/` is run through
//! `tidings report` and compared with its golden file in `sql/queries/golden/`.
//!
//! After changing a report or the demo, regenerate the golden files with
//! `TIDINGS_BLESS=1 cargo test -p tidings-dataflows --test reports` and review the diff.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::tidings;
use tidings_sql::reports::REPORTS;

/// The arguments each report is run with on the demo.
fn args_of(name: &str) -> Vec<&'static str> {
    match name {
        "receiver_timeline" => vec!["--receiver", "13800138000"],
        "template_funnel" => vec!["--date", "2025-11-22"],
        _ => vec![],
    }
}

#[test]
fn reports_match_their_golden_files_on_the_demo() {
    let (_dir, job) = common::demo_copy();
    let job_s = job.to_str().unwrap();
    tidings(&[
        "run",
        job_s,
        "-w",
        "2",
        "--now",
        "2025-11-23T12:00:00+08:00",
    ]);

    let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql/queries/golden");
    let bless = std::env::var_os("TIDINGS_BLESS").is_some();
    let mut failures = Vec::new();
    for r in REPORTS {
        let mut args = vec!["report", r.name, "--job", job_s, "--format", "csv"];
        args.extend(args_of(r.name));
        let out = tidings(&args);
        assert!(
            out.lines().count() > 1,
            "report {} is empty:\n{out}",
            r.name
        );
        let path = golden_dir.join(format!("{}.csv", r.name));
        if bless {
            std::fs::create_dir_all(&golden_dir).unwrap();
            std::fs::write(&path, &out).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (TIDINGS_BLESS=1 writes it)", path.display()));
        if out != want {
            failures.push(format!("{}:\n--- golden\n{want}\n--- got\n{out}", r.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // `--dir` reads days and hours in `--timezone` (the job's zone: the same report; another
    // zone: other hours); a zone that is not one is refused, naming the flag.
    let tracking = job.parent().unwrap().join("var/tracking");
    let by_dir = |tz: &str| {
        tidings(&[
            "report",
            "hourly_volume",
            "--dir",
            tracking.to_str().unwrap(),
            "--timezone",
            tz,
            "--format",
            "csv",
        ])
    };
    let golden = std::fs::read_to_string(golden_dir.join("hourly_volume.csv")).unwrap();
    if !bless {
        assert_eq!(by_dir("Asia/Shanghai"), golden);
        assert_ne!(by_dir("UTC"), golden);
    }
    let refused = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args([
            "report",
            "hourly_volume",
            "--dir",
            "x",
            "--timezone",
            "Mars/Base",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("--timezone") && said.contains("Mars/Base"),
        "{said}"
    );

    // Parameters narrow a report: one template's funnel is a part of the whole day's.
    let all = tidings(&[
        "report",
        "template_funnel",
        "--job",
        job_s,
        "--format",
        "csv",
        "--date",
        "2025-11-22",
    ]);
    let one = tidings(&[
        "report",
        "template_funnel",
        "--job",
        job_s,
        "--format",
        "csv",
        "--date",
        "2025-11-22",
        "--template",
        "1",
    ]);
    assert!(one.lines().count() > 1 && one.lines().count() < all.lines().count());
    for line in one.lines().skip(1) {
        assert!(
            all.lines().any(|l| l == line),
            "{line} not in the whole funnel"
        );
    }
    let listed = tidings(&["report", "--list"]);
    for r in REPORTS {
        assert!(listed.contains(r.name), "{listed}");
    }

    // The SQL shell: commands, a statement over two lines, history written where asked.
    let history = tempfile::NamedTempFile::new().unwrap();
    let out = sql_script(
        job_s,
        history.path(),
        b"\\tables\n\\schema events\nSELECT count(*) AS sent\n  FROM events WHERE state = 'SEND_SUCCESS';\n\\format json\nSELECT 1 AS one;\n\\q\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("dead_letters") && stdout.contains("events"),
        "{stdout}"
    );
    assert!(
        stdout.contains("state_code") && stdout.contains("Int32"),
        "{stdout}"
    );
    let sent = common::sql_csv(
        &job.parent().unwrap().join("var/tracking"),
        "SELECT count(*) AS sent FROM events WHERE state = 'SEND_SUCCESS'",
    );
    assert!(stdout.contains(&sent), "{stdout}\nwant {sent}");
    assert!(stdout.contains(r#"{"one":1}"#), "{stdout}");
    let saved = std::fs::read_to_string(history.path()).unwrap();
    assert!(saved.contains("SELECT 1 AS one;"), "{saved}");

    // A script's mistaken command fails the run (it exited 0), and the rest still runs.
    for (script, said) in [
        (
            &b"\\format xml\nSELECT 2 AS two;\n"[..],
            "unknown format xml",
        ),
        (b"\\schema\nSELECT 2 AS two;\n", "\\schema takes a table"),
        (b"\\nope\nSELECT 2 AS two;\n", "unknown command \\nope"),
    ] {
        let out = sql_script(job_s, history.path(), script);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(said), "{stderr}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("two"),
            "{stderr}"
        );
    }

    // A trace with a limit (the console's) keeps the newest rows, oldest first: the last of
    // the whole trace.
    let tracking = job.parent().unwrap().join("var/tracking");
    let rows = |limit: Option<usize>| -> Vec<String> {
        let batches = tokio::runtime::Runtime::new().unwrap().block_on(async {
            let t = tidings_sql::Tracking::open(&tracking).await.unwrap();
            t.trace(&["user4@example.com".to_string()], None, limit)
                .await
                .unwrap()
        });
        let table = tidings_sql::json_table(&batches, 1000).unwrap();
        table["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.to_string())
            .collect()
    };
    let all = rows(None);
    assert!(all.len() > 2, "{all:?}");
    assert_eq!(rows(Some(2)), all[all.len() - 2..], "{all:?}");
}

/// `tidings sql` over `job` with `script` on its stdin (its history in `history`).
fn sql_script(job: &str, history: &std::path::Path, script: &[u8]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["sql", "--job", job, "--format", "csv"])
        .env("TIDINGS_HISTORY", history)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(script).unwrap();
    child.wait_with_output().unwrap()
}
