//! The inbox's per-aggregate order, as a pure decision.
//!
//! The relay publishes an aggregate's messages in order, but a broker
//! redelivers a message whose ack was lost (JetStream's `ack_wait`, a
//! RabbitMQ connection that dropped) or that was nak'ed after a failed apply
//! *after* later messages of its aggregate went out. So the inbox keeps, per
//! `(consumer, aggregate_type, aggregate_id)`, the last `rempart-seq` it
//! applied, and applies only the next one: a later one is `Early` and goes
//! back to the broker, which delivers it again once its predecessor is in.
//!
//! A consumer that starts after retention deleted an aggregate's first
//! messages would wait for seq 1 forever (as would one upgraded from the
//! unordered inbox): seed its place with [`Inbox::start_at`](crate::Inbox::start_at).

use std::collections::BTreeMap;

/// Where a delivered message sits in its aggregate, from the standard
/// headers (`rempart-aggregate-type`, `rempart-aggregate-id`, `rempart-seq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The aggregate's type.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// The message's place in its aggregate, from 1.
    pub seq: i64,
}

impl Position {
    /// The position a message's headers declare: `None` without any of the
    /// three headers (the message is applied unordered, deduplicated by id
    /// only); an error when they are incomplete or the seq is not a number
    /// from 1, since guessing would apply it out of order or never.
    pub fn from_headers(headers: &BTreeMap<String, String>) -> Result<Option<Position>, String> {
        let get = |k: &str| headers.get(k);
        match (
            get("rempart-aggregate-type"),
            get("rempart-aggregate-id"),
            get("rempart-seq"),
        ) {
            (None, None, None) => Ok(None),
            (Some(t), Some(id), Some(seq)) => match seq.parse::<i64>() {
                Ok(seq) if seq >= 1 => Ok(Some(Position {
                    aggregate_type: t.clone(),
                    aggregate_id: id.clone(),
                    seq,
                })),
                _ => Err(format!(
                    "header rempart-seq {seq:?} is not a whole number from 1; \
                     the producer must publish the outbox's seq"
                )),
            },
            _ => Err(
                "headers rempart-aggregate-type, rempart-aggregate-id and rempart-seq \
                 come together; this message has only some of them"
                    .into(),
            ),
        }
    }
}

/// What the inbox does with a message of an ordered aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Its seq was applied already: skip it, ack it.
    Duplicate,
    /// The next one: apply it.
    Apply,
    /// A predecessor is missing: do not apply it; the broker redelivers it.
    Early {
        /// The seq the inbox waits for.
        expected: i64,
    },
}

/// Decides for a message at `seq`, given the last seq applied for its
/// aggregate by this consumer (`None`: none yet, so seq 1 is next).
pub fn decide(last_applied: Option<i64>, seq: i64) -> Order {
    let last = last_applied.unwrap_or(0);
    if seq <= last {
        Order::Duplicate
    } else if seq == last + 1 {
        Order::Apply
    } else {
        Order::Early { expected: last + 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_first_message_of_an_aggregate_is_seq_1() {
        assert_eq!(decide(None, 1), Order::Apply);
        assert_eq!(decide(None, 2), Order::Early { expected: 1 });
    }

    #[test]
    fn seq_2_before_seq_1_waits_and_a_late_copy_of_1_is_a_duplicate() {
        assert_eq!(decide(Some(0), 2), Order::Early { expected: 1 });
        assert_eq!(decide(Some(1), 2), Order::Apply);
        assert_eq!(decide(Some(2), 1), Order::Duplicate);
        assert_eq!(decide(Some(2), 2), Order::Duplicate);
    }

    fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_position_needs_all_three_headers_and_a_seq_from_1() {
        assert_eq!(Position::from_headers(&headers(&[("x", "y")])), Ok(None));
        let full = [
            ("rempart-aggregate-type", "order"),
            ("rempart-aggregate-id", "o-1"),
            ("rempart-seq", "3"),
        ];
        assert_eq!(
            Position::from_headers(&headers(&full))
                .unwrap()
                .unwrap()
                .seq,
            3
        );
        assert!(Position::from_headers(&headers(&full[..2])).is_err());
        for bad in ["0", "-1", "two", ""] {
            let mut h = headers(&full);
            h.insert("rempart-seq".into(), bad.into());
            assert!(Position::from_headers(&h).is_err(), "{bad:?}");
        }
    }

    proptest! {
        /// Any delivery order, with copies: applying only what `decide`
        /// says applies every seq once, in order, once all have come.
        #[test]
        fn any_redelivery_order_applies_each_seq_once_in_order(
            n in 1i64..12,
            order in proptest::collection::vec(0usize..64, 0..80),
        ) {
            let mut last = None;
            let mut applied = Vec::new();
            // The broker's queue: the early and the undelivered go back.
            let mut queue: Vec<i64> = (1..=n).collect();
            queue.extend(order.iter().map(|i| (*i as i64 % n) + 1));
            let mut rounds = 0;
            while !queue.is_empty() {
                rounds += 1;
                prop_assert!(rounds < 10_000);
                // Shuffled picks, then a rotation so the run ends.
                let pick = order.get(rounds % order.len().max(1)).copied().unwrap_or(0);
                let i = if rounds < 1_000 { pick % queue.len() } else { 0 };
                let seq = queue.remove(i);
                match decide(last, seq) {
                    Order::Apply => { applied.push(seq); last = Some(seq); }
                    Order::Duplicate => prop_assert!(seq <= last.unwrap_or(0)),
                    Order::Early { expected } => {
                        prop_assert_eq!(expected, last.unwrap_or(0) + 1);
                        prop_assert!(seq > expected);
                        queue.push(seq);
                    }
                }
            }
            prop_assert_eq!(applied, (1..=n).collect::<Vec<_>>());
        }
    }
}
