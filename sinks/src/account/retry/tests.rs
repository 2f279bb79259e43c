//! The partial-retry policy on its own, and its loop against a scripted provider in tokio's
//! virtual time (`start_paused`): the pauses asserted are the policy's backoff, no real sleep.

use std::collections::VecDeque;
use std::sync::Mutex;
use tidings_model::Receiver;

use tokio::time::Instant;

use super::*;

fn policy(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        initial: Duration::from_millis(100),
        max: Duration::from_secs(5),
    }
}

fn busy(why: &str) -> Result<(), SendError> {
    Err(SendError::Transient(why.into()))
}

fn refused(why: &str) -> Result<(), SendError> {
    Err(SendError::Permanent(why.into()))
}

#[test]
fn a_per_receiver_answer_settles_some_and_retries_only_the_busy_ones() {
    let mut p = PartialRetry::new("acct", policy(4), 3, 7);
    assert_eq!(p.pending(), vec![0, 1, 2]);
    let action = p.judge(
        &[0, 1, 2],
        Ok(Delivered::Each(vec![
            Ok(()),
            busy("1302 busy"),
            refused("1014 bad number"),
        ])),
    );
    assert_eq!(
        action,
        RetryAction::RetryPartial {
            receivers: vec![1],
            why: "1302 busy".into()
        }
    );
    assert_eq!(p.next(action), Some(policy(4).backoff(1, 7 ^ 1)));
    assert_eq!((p.attempt(), p.pending()), (2, vec![1]));
    // The second attempt names only receiver 1: its answer is at position 0.
    let action = p.judge(&[1], Ok(Delivered::Each(vec![Ok(())])));
    assert_eq!(action, RetryAction::Successful);
    assert_eq!(p.next(action), None);
    let (outcomes, references) = p.finish();
    assert_eq!(outcomes, vec![Ok(()), Ok(()), refused("1014 bad number")]);
    assert!(references.is_empty());
}

#[test]
fn a_spent_budget_fails_the_unsettled_with_the_attempt_count() {
    let mut p = PartialRetry::new("acct", policy(2), 2, 7);
    let a = p.judge(
        &[0, 1],
        Ok(Delivered::Each(vec![Ok(()), busy("throttled")])),
    );
    assert!(p.next(a).is_some());
    let a = p.judge(&[1], Ok(Delivered::Each(vec![busy("throttled")])));
    assert_eq!(p.next(a), None, "two attempts were the budget");
    let (outcomes, _) = p.finish();
    assert_eq!(
        outcomes,
        vec![Ok(()), busy("throttled (after 2 attempts)")],
        "the accepted receiver keeps its success"
    );
}

#[test]
fn a_whole_call_error_decides_only_the_receivers_still_unsettled() {
    let mut p = PartialRetry::new("acct", policy(4), 3, 7);
    let a = p.judge(
        &[0, 1, 2],
        Ok(Delivered::Each(vec![Ok(()), busy("busy"), busy("busy")])),
    );
    assert!(p.next(a).is_some());
    let a = p.judge(
        &[1, 2],
        Err(SendError::Unauthorized("token revoked".into())),
    );
    assert_eq!(
        a,
        RetryAction::DontRetry(SendError::Unauthorized("token revoked".into()))
    );
    assert_eq!(p.next(a), None, "refused credentials are not retried");
    let (outcomes, _) = p.finish();
    let revoked = Err(SendError::Unauthorized("token revoked".into()));
    assert_eq!(outcomes, vec![Ok(()), revoked.clone(), revoked]);
}

#[test]
fn a_transient_whole_call_is_retried_as_is_and_one_attempt_keeps_its_reason() {
    let mut p = PartialRetry::new("acct", policy(1), 2, 7);
    let a = p.judge(&[0, 1], Err(SendError::Transient("HTTP 503".into())));
    assert_eq!(a, RetryAction::Retry("HTTP 503".into()));
    assert_eq!(p.next(a), None, "attempts = 1: no retry");
    let (outcomes, _) = p.finish();
    assert_eq!(outcomes, vec![busy("HTTP 503"), busy("HTTP 503")]);
}

#[test]
fn references_keep_only_the_receivers_their_call_reached() {
    let mut p = PartialRetry::new("acct", policy(4), 3, 7);
    let a = p.judge(
        &[0, 1, 2],
        Ok(Delivered::Tracked {
            reference: "msgid-1".into(),
            each: Some(vec![Ok(()), refused("invaliduser"), busy("busy")]),
        }),
    );
    assert!(p.next(a).is_some());
    let a = p.judge(
        &[2],
        Ok(Delivered::Tracked {
            reference: "msgid-2".into(),
            each: None,
        }),
    );
    assert_eq!(p.next(a), None);
    let (outcomes, references) = p.finish();
    assert_eq!(outcomes, vec![Ok(()), refused("invaliduser"), Ok(())]);
    assert_eq!(
        references,
        vec![
            ("msgid-1".to_string(), vec![0]),
            ("msgid-2".to_string(), vec![2])
        ]
    );
}

#[test]
fn a_short_answer_fails_the_receivers_it_does_not_name() {
    let mut p = PartialRetry::new("acct", policy(4), 2, 7);
    let a = p.judge(&[0, 1], Ok(Delivered::Each(vec![Ok(())])));
    assert_eq!(p.next(a), None);
    let (outcomes, _) = p.finish();
    assert_eq!(
        outcomes,
        vec![Ok(()), refused("acct: no answer for this receiver")]
    );
}

/// A provider answering from a script, noting what each attempt named and when (virtual
/// time since the script was made).
struct Script {
    answers: Mutex<VecDeque<Result<Delivered, SendError>>>,
    calls: Mutex<Vec<(Duration, Vec<Receiver>)>>,
    start: Instant,
}

impl Script {
    fn new(answers: Vec<Result<Delivered, SendError>>) -> Script {
        Script {
            answers: Mutex::new(answers.into()),
            calls: Mutex::new(Vec::new()),
            start: Instant::now(),
        }
    }

    fn calls(&self) -> Vec<(Duration, Vec<Receiver>)> {
        self.calls.lock().unwrap().clone()
    }
}

impl Attempt for Script {
    async fn attempt(&self, receivers: &[Receiver]) -> Result<Delivered, SendError> {
        self.calls
            .lock()
            .unwrap()
            .push((self.start.elapsed(), receivers.to_vec()));
        self.answers
            .lock()
            .unwrap()
            .pop_front()
            .expect("no more answers scripted")
    }
}

fn names(list: &[&str]) -> Vec<tidings_model::Receiver> {
    list.iter().map(|s| (*s).into()).collect()
}

/// A pause as tokio's timer waits it: at least the pause, rounded up to the millisecond.
fn waited(pause: Duration) -> std::ops::RangeInclusive<Duration> {
    pause..=pause + Duration::from_millis(1)
}

#[tokio::test(start_paused = true)]
async fn the_loop_resends_only_the_unsettled_after_the_policys_backoff() {
    let script = Script::new(vec![
        Ok(Delivered::Each(vec![
            Ok(()),
            busy("busy"),
            refused("bad number"),
            busy("busy"),
        ])),
        Ok(Delivered::Each(vec![busy("busy"), Ok(())])),
        Ok(Delivered::Each(vec![Ok(())])),
    ]);
    let stats = SendStats::default();
    let receivers = names(&["a", "b", "c", "d"]);
    let mut retry = PartialRetry::new("acct", policy(4), receivers.len(), 42);
    send_with_policy(&mut retry, &stats, &receivers, &script).await;
    let (outcomes, _) = retry.finish();
    assert_eq!(
        outcomes,
        vec![Ok(()), Ok(()), refused("bad number"), Ok(())]
    );
    let calls = script.calls();
    let asked: Vec<&Vec<Receiver>> = calls.iter().map(|(_, r)| r).collect();
    assert_eq!(asked, vec![&receivers, &names(&["b", "d"]), &names(&["b"])]);
    // Attempt 1 at once; 2 after backoff(1); 3 after backoff(2) more: virtual time.
    let p = policy(4);
    assert_eq!(calls[0].0, Duration::ZERO);
    assert!(
        waited(p.backoff(1, 42 ^ 1)).contains(&(calls[1].0 - calls[0].0)),
        "{calls:?}"
    );
    assert!(
        waited(p.backoff(2, 42 ^ 2)).contains(&(calls[2].0 - calls[1].0)),
        "{calls:?}"
    );
    assert_eq!(stats.retries.load(Ordering::Relaxed), 2);
    assert_eq!(
        stats.retrying.load(Ordering::Relaxed),
        0,
        "no pause left counted"
    );
}

#[tokio::test(start_paused = true)]
async fn a_permanent_answer_ends_the_loop_without_a_pause() {
    let script = Script::new(vec![Err(SendError::Permanent("HTTP 400".into()))]);
    let stats = SendStats::default();
    let receivers = names(&["a", "b"]);
    let start = Instant::now();
    let mut retry = PartialRetry::new("acct", policy(4), 2, 42);
    send_with_policy(&mut retry, &stats, &receivers, &script).await;
    let (outcomes, _) = retry.finish();
    assert_eq!(outcomes, vec![refused("HTTP 400"), refused("HTTP 400")]);
    assert_eq!(script.calls().len(), 1);
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "no backoff after a final answer"
    );
    assert_eq!(stats.retries.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn the_pauses_grow_to_the_cap_and_the_budget_ends_the_loop() {
    let p = RetryPolicy {
        attempts: 5,
        initial: Duration::from_millis(100),
        max: Duration::from_millis(300),
    };
    let script = Script::new(
        (0..5)
            .map(|_| Err(SendError::Transient("HTTP 503".into())))
            .collect(),
    );
    let stats = SendStats::default();
    let receivers = names(&["a"]);
    let mut retry = PartialRetry::new("acct", p, 1, 9);
    send_with_policy(&mut retry, &stats, &receivers, &script).await;
    let (outcomes, _) = retry.finish();
    assert_eq!(outcomes, vec![busy("HTTP 503 (after 5 attempts)")]);
    let at: Vec<Duration> = script.calls().into_iter().map(|(t, _)| t).collect();
    assert_eq!(at.len(), 5);
    for n in 1..5u32 {
        let gap = at[n as usize] - at[n as usize - 1];
        assert!(
            waited(p.backoff(n, 9 ^ n as u64)).contains(&gap),
            "pause {n}: {gap:?}"
        );
        // 100, 200, then capped at 300 ms, each within ±25%.
        let base = Duration::from_millis(100 * u64::from((1u32 << (n - 1)).min(3)));
        assert!(
            gap >= base.mul_f64(0.75) && gap <= base.mul_f64(1.25),
            "pause {n}: {gap:?}"
        );
    }
    assert_eq!(stats.retries.load(Ordering::Relaxed), 4);
}

/// The whole list accepted in one answer (nearly every send) settles every receiver without a
/// list of its own, after a whole-list retry too; a reference from the whole list reaches
/// every receiver.
#[tokio::test(start_paused = true)]
async fn a_whole_list_answer_settles_every_receiver_alike() {
    let script = Script::new(vec![
        Err(SendError::Transient("HTTP 503".into())),
        Ok(Delivered::All),
    ]);
    let stats = SendStats::default();
    let receivers = names(&["a", "b", "c"]);
    let mut retry = PartialRetry::new("acct", policy(4), receivers.len(), 42);
    send_with_policy(&mut retry, &stats, &receivers, &script).await;
    let (outcomes, references) = retry.finish_with(|e| e.reason().to_string());
    assert_eq!(outcomes[..], [Ok(()), Ok(()), Ok(())]);
    assert!(references.is_empty());
    let calls = script.calls();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|(_, r)| *r == receivers), "{calls:?}");

    let script = Script::new(vec![Ok(Delivered::Tracked {
        reference: "task-1".into(),
        each: None,
    })]);
    let mut retry = PartialRetry::new("acct", policy(4), 2, 42);
    send_with_policy(&mut retry, &stats, &names(&["a", "b"]), &script).await;
    let (outcomes, references) = retry.finish();
    assert_eq!(outcomes, vec![Ok(()), Ok(())]);
    assert_eq!(references, vec![("task-1".to_string(), vec![0, 1])]);
}

/// The loop's shortcut for an answer accepting the whole list leaves what judging it and
/// asking what comes next leave: first, after one transient whole-call answer, after two.
#[test]
fn accepting_the_whole_list_is_judging_it() {
    let transient = |p: &mut PartialRetry<'_>| {
        let action = p.judge_at(None, Err(SendError::Transient("HTTP 503".into())));
        assert!(p.next(action).is_some());
    };
    for transient_before in 0..3 {
        let mut judged = PartialRetry::new("acct", policy(4), 3, 7);
        let mut shortcut = PartialRetry::new("acct", policy(4), 3, 7);
        for _ in 0..transient_before {
            transient(&mut judged);
            transient(&mut shortcut);
        }
        shortcut.accept_all();
        let action = judged.judge_at(None, Ok(Delivered::All));
        assert!(judged.next(action).is_none());
        assert_eq!(
            format!("{shortcut:?}"),
            format!("{judged:?}"),
            "after {transient_before} transient answers"
        );
    }
}

/// A whole-list answer to a resend of some receivers settles only those: the receivers a
/// first answer refused stay refused (the shortcut is for a first answer to the whole list).
#[tokio::test(start_paused = true)]
async fn a_whole_list_answer_to_a_resend_keeps_the_earlier_refusals() {
    let script = Script::new(vec![
        Ok(Delivered::Each(vec![
            Ok(()),
            busy("HTTP 503"),
            refused("HTTP 400"),
        ])),
        Ok(Delivered::All),
    ]);
    let stats = SendStats::default();
    let receivers = names(&["a", "b", "c"]);
    let mut retry = PartialRetry::new("acct", policy(4), receivers.len(), 42);
    send_with_policy(&mut retry, &stats, &receivers, &script).await;
    let (outcomes, _) = retry.finish();
    assert_eq!(outcomes, vec![Ok(()), Ok(()), refused("HTTP 400")]);
    let calls = script.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].1, names(&["b"]), "{calls:?}");
}
