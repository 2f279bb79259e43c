//! Ctrl-C stops a running job gracefully: it reads no more, drains what it read, flushes
//! tracking and exits 0; every receiver it received reached exactly one terminal state.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sigint_drains_and_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let templates = common::sms_template(1, "none", false, "user_id");
    let ts = 1_763_784_000_000;
    let lines: Vec<String> = (0..20_000)
        .map(|i| common::envelope(ts + i, 1, &format!("u{i}"), "x"))
        .collect();
    std::fs::write(dir.path().join("templates.toml"), templates).unwrap();
    std::fs::write(dir.path().join("requests.jsonl"), lines.join("\n")).unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        "name = \"stop\"\ntemplates = \"templates.toml\"\nworkers = 2\n[source]\nkind = \"file\"\npath = \"requests.jsonl\"\nepoch_lines = 50\nmax_out_of_order_ms = 1000\n\
         [tracking]\ndir = \"var/tracking\"\nflush_interval_ms = 100\n\
         [accounts.out]\nchannel = \"sms\"\nprovider = \"outbox\"\ndir = \"var/outbox\"\nrate_limit = { per_second = 500 }\n",
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["run", job.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let outbox = dir.path().join("var/outbox/sms.jsonl");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&outbox).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "nothing was sent within 60 s");
        std::thread::park_timeout(Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("stopping"));

    let counts = common::sql_csv(
        &dir.path().join("var/tracking"),
        "SELECT sum(CASE WHEN state = 'RECEIVE' THEN 1 ELSE 0 END), \
         sum(CASE WHEN state = 'SEND_SUCCESS' THEN 1 ELSE 0 END) FROM events",
    );
    let nums: Vec<u64> = common::first_row(&counts);
    let sent_lines = std::fs::read_to_string(&outbox).unwrap().lines().count() as u64;
    assert!(nums[0] > 0 && nums[0] < 20_000, "stopped early: {nums:?}");
    assert_eq!(nums[0], nums[1], "every received receiver was sent");
    assert_eq!(sent_lines, nums[1]);
}
