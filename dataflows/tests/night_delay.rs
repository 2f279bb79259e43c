//! Parked night_delay messages are durable: a run that ends before their release leaves them
//! in the state directory, and the next run releases them, in event-time order, with the
//! release time as their event time.

mod common;

use tidings_model::State;

// 2025-11-22 01:00 and 02:00 Shanghai; release at 09:00 = 2025-11-22T01:00Z.
const ONE_AM: i64 = 1_763_744_400_000;
const TWO_AM: i64 = ONE_AM + 3_600_000;
const RELEASE: i64 = 1_763_773_200_000;

#[test]
fn parked_messages_survive_the_run_and_are_released_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let templates = common::sms_template(3, "night_delay", true, "user_id");
    let requests = [
        common::envelope(TWO_AM, 3, "u1,u2", "b"),
        common::envelope(ONE_AM, 3, "u1", "a"),
        common::envelope(TWO_AM, 3, "u1", "b"), // same content as line 1 for u1
    ]
    .join("\n");
    let job = common::write_job(dir.path(), &templates, &requests, "");
    // Line 2 is an hour behind line 1: within the bound, so judged at its own time.
    common::set_source(&job, "max_out_of_order_ms = 7200000");

    // Run 1 ends at 03:00 local by the wall clock: nothing is due yet.
    let (events, _, summary) = common::run_memory(&job, 2, TWO_AM + 3_600_000);
    assert_eq!(summary.parked, 4);
    assert_eq!(
        events
            .iter()
            .filter(|e| e.state == State::NightShieldNextSend)
            .count(),
        4
    );
    assert!(
        events
            .iter()
            .all(|e| matches!(e.state, State::Receive | State::NightShieldNextSend))
    );
    let parked_file = dir.path().join("var/state/parked.jsonl");
    assert_eq!(
        std::fs::read_to_string(&parked_file)
            .unwrap()
            .lines()
            .count(),
        4
    );

    // Run 2 starts after 09:00 with nothing new to read: the parked ones are released.
    std::fs::write(dir.path().join("requests.jsonl"), "").unwrap();
    let (events, _, summary) = common::run_memory(&job, 2, RELEASE + 60_000);
    assert_eq!(summary.parked, 0);
    assert!(!parked_file.exists());
    assert!(
        events.iter().all(|e| e.event_time == RELEASE),
        "{events:#?}"
    );
    let state_of = |receiver: &str, original: i64| {
        events
            .iter()
            .filter(|e| &*e.receiver == receiver && e.meta.event_time == original)
            .map(|e| e.state)
            .collect::<Vec<_>>()
    };
    // Event-time order: u1's 01:00 message goes first, then the first of its two identical
    // 02:00 messages; the second is a content duplicate.
    assert_eq!(state_of("u1", ONE_AM), vec![State::SendSuccess]);
    let mut twos = state_of("u1", TWO_AM);
    twos.sort();
    assert_eq!(twos, vec![State::ContentDeduplication, State::SendSuccess]);
    assert_eq!(state_of("u2", TWO_AM), vec![State::SendSuccess]);
}
