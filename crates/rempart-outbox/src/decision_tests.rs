use super::*;
use proptest::prelude::*;
use rempart::rng::SplitMix64;
use uuid::Uuid;

fn row(agg: &str, seq: i64, payload: &str) -> Envelope {
    Envelope {
        id: Uuid::new_v4(),
        aggregate_type: "order".into(),
        aggregate_id: agg.into(),
        seq,
        event_type: "OrderCreated".into(),
        payload: payload.into(),
        headers: "{}".into(),
        attempts: 0,
        created_ms: 0,
    }
}

fn policy(max_attempts: Option<u32>) -> RetryPolicy {
    RetryPolicy {
        backoff: Backoff::exponential(Duration::from_millis(100), 2.0, Duration::from_secs(10))
            .unwrap(),
        jitter: Jitter::None,
        max_attempts,
    }
}

#[test]
fn a_transient_failure_is_retried_after_the_backoff() {
    let mut rng = SplitMix64::seeded(1);
    let out = after_failure(
        2,
        &PublishError::transient("broker down"),
        &policy(None),
        1_000,
        &mut rng,
    );
    // Third failure: 100 ms × 2² = 400 ms.
    assert_eq!(
        out,
        RowOutcome::Retry {
            attempts: 3,
            next_attempt_at: 1_400,
            error: "broker down".into()
        }
    );
}

#[test]
fn transient_failures_never_dead_letter_without_a_limit() {
    let mut rng = SplitMix64::seeded(1);
    let out = after_failure(
        u32::MAX - 1,
        &PublishError::transient("down"),
        &policy(None),
        0,
        &mut rng,
    );
    assert!(matches!(out, RowOutcome::Retry { .. }), "{out:?}");
}

#[test]
fn a_bad_message_is_dead_lettered_at_once_with_its_error() {
    let mut rng = SplitMix64::seeded(1);
    let out = after_failure(
        0,
        &PublishError::permanent("too large"),
        &policy(None),
        0,
        &mut rng,
    );
    assert_eq!(
        out,
        RowOutcome::Dead {
            attempts: 1,
            error: "too large".into()
        }
    );
}

#[test]
fn a_row_out_of_attempts_is_dead_lettered_and_says_so() {
    let mut rng = SplitMix64::seeded(1);
    let out = after_failure(
        4,
        &PublishError::transient("nack"),
        &policy(Some(5)),
        0,
        &mut rng,
    );
    assert_eq!(
        out,
        RowOutcome::Dead {
            attempts: 5,
            error: "gave up after 5 attempts: nack".into()
        }
    );
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct OrderCreated {
    order_id: String,
    total_cents: u64,
}

#[test]
fn a_payload_not_of_its_declared_type_is_not_admissible() {
    let checks = PayloadChecks::new().declare::<OrderCreated>("OrderCreated");
    let good = row("a", 1, r#"{"order_id":"a","total_cents":10}"#);
    assert_eq!(admissible(&good, None, &checks), Ok(()));
    let bad = row("a", 1, r#"{"order_id":"a"}"#);
    let e = admissible(&bad, None, &checks).unwrap_err();
    assert!(
        e.contains("not a valid OrderCreated") && e.contains("total_cents"),
        "{e}"
    );
}

#[test]
fn an_undeclared_type_must_still_be_json() {
    let e = admissible(&row("a", 1, "{not json"), None, &PayloadChecks::new()).unwrap_err();
    assert!(e.starts_with("payload is not JSON"), "{e}");
}

#[test]
fn a_message_over_the_limit_is_not_admissible_and_names_both_sizes() {
    let r = row("a", 1, &format!("\"{}\"", "x".repeat(100)));
    let e = admissible(&r, Some(50), &PayloadChecks::new()).unwrap_err();
    assert!(e.contains("104 bytes") && e.contains("limit of 50"), "{e}");
    assert_eq!(admissible(&r, Some(104), &PayloadChecks::new()), Ok(()));
}

#[test]
fn bad_headers_are_not_admissible() {
    let mut r = row("a", 1, "{}");
    r.headers = "[1]".into();
    assert!(admissible(&r, None, &PayloadChecks::new()).is_err());
}

proptest! {
    /// Every row lands in exactly one chain, a chain holds one aggregate in
    /// `seq` order, and no two chains share an aggregate.
    #[test]
    fn chains_keep_every_row_and_each_aggregates_order(
        rows in proptest::collection::vec((0u8..5, 0i64..50), 0..60)
    ) {
        let mut seen = std::collections::HashSet::new();
        let input: Vec<Envelope> = rows
            .into_iter()
            .filter(|k| seen.insert(*k))
            .map(|(a, s)| row(&a.to_string(), s, "{}"))
            .collect();
        let n = input.len();
        let out = chains(input);
        prop_assert_eq!(out.iter().map(Vec::len).sum::<usize>(), n);
        let mut aggregates = std::collections::HashSet::new();
        for chain in &out {
            prop_assert!(aggregates.insert(chain[0].aggregate_id.clone()));
            prop_assert!(chain.iter().all(|r| r.aggregate_id == chain[0].aggregate_id));
            prop_assert!(chain.windows(2).all(|w| w[0].seq < w[1].seq));
        }
    }
}

#[test]
fn only_a_cycle_with_nothing_published_counts_as_the_destination_failing() {
    let some = CycleReport {
        claimed: 5,
        published: 4,
        retried: 1,
        ..Default::default()
    };
    assert!(!some.destination_failing());
    let none = CycleReport {
        claimed: 5,
        retried: 5,
        ..Default::default()
    };
    assert!(none.destination_failing());
    assert!(!CycleReport::default().destination_failing());
}

fn attempt(attempts: u32, result: Result<(), PublishError>) -> Attempt {
    Attempt {
        id: Uuid::new_v4(),
        attempts,
        result,
    }
}

#[test]
fn an_outage_neither_counts_against_rows_nor_delays_them() {
    let mut rng = SplitMix64::seeded(1);
    let (report, out) = settle(
        vec![
            attempt(4, Err(PublishError::transient("down"))),
            attempt(0, Err(PublishError::permanent("too large"))),
        ],
        &policy(Some(5)),
        1_000,
        &mut rng,
    );
    assert!(report.destination_failing());
    assert_eq!(
        out[0].1,
        RowOutcome::Retry {
            attempts: 4,
            next_attempt_at: 1_000,
            error: "down".into()
        },
        "an outage must not dead-letter through max_attempts nor push the row back"
    );
    assert!(matches!(out[1].1, RowOutcome::Dead { .. }));
}

#[test]
fn a_failure_among_successes_is_the_messages_own() {
    let mut rng = SplitMix64::seeded(1);
    let (report, out) = settle(
        vec![
            attempt(0, Ok(())),
            attempt(0, Err(PublishError::transient("nack"))),
        ],
        &policy(None),
        1_000,
        &mut rng,
    );
    assert_eq!((report.published, report.retried), (1, 1));
    assert_eq!(
        out[1].1,
        RowOutcome::Retry {
            attempts: 1,
            next_attempt_at: 1_100,
            error: "nack".into()
        }
    );
}
