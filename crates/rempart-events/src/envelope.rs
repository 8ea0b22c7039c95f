//! How a ticket event sits in the store: the event's kind is the row's
//! `event_type` (`TICKET_CLOS`, …), its fields are the `payload`, and the
//! [`TicketMeta`] is split over the envelope: the store and the register
//! in their own columns, the business date in the metadata's
//! `dateCommerciale`. Readers (the projection, closures) decode with
//! [`decode`], writers encode with [`encode`], so both agree on one layout.

use std::borrow::Cow;

use serde_json::Value;

pub use crate::store::read::EventRef;
use crate::store::{Metadata, NewEvent, RecordedEvent};
use crate::ticket::{BusinessDate, TicketEvent, TicketMeta};

/// The metadata key holding the business date.
pub const BUSINESS_DATE_KEY: &str = "dateCommerciale";

/// The event kinds of the ticket aggregate, as stored.
pub const TICKET_KINDS: [&str; 9] = [
    "TICKET_OUVERT",
    "ARTICLE_AJOUTE",
    "ARTICLE_RETIRE",
    "REMISE_APPLIQUEE",
    "PAIEMENT_RECU",
    "TICKET_SUSPENDU",
    "TICKET_REPRIS",
    "TICKET_CLOS",
    "TICKET_ANNULE",
];

/// A stored ticket event that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event at position {position} ({event_type}) is not a readable ticket event: {reason}")]
pub struct EnvelopeError {
    /// Where.
    pub position: u64,
    /// Its type.
    pub event_type: String,
    /// What is wrong.
    pub reason: String,
}

/// The event to append for `event`, recorded under `meta`. A training
/// ticket's close also marks the envelope as training.
pub fn encode(meta: &TicketMeta, event: &TicketEvent) -> NewEvent {
    let mut metadata = Metadata::new(meta.store_id.as_str(), meta.register_id.as_str());
    metadata.extra.insert(
        BUSINESS_DATE_KEY.to_owned(),
        Value::String(meta.business_date.to_string()),
    );
    metadata.training = matches!(event, TicketEvent::Closed(c) if c.training)
        || matches!(event, TicketEvent::Opened(o) if o.training);
    // `TicketEvent` serialises as {"type": …, "payload": …}: keep the payload.
    let payload = serde_json::to_value(event)
        .ok()
        .and_then(|mut v| v.get_mut("payload").map(Value::take))
        .unwrap_or(Value::Null);
    NewEvent::new(event.kind(), payload, metadata)
}

/// The ticket event in `recorded`, with its metadata; `Ok(None)` when the
/// row is not a ticket event (a closure, another aggregate's event).
pub fn decode(
    recorded: &RecordedEvent,
) -> Result<Option<(TicketMeta, TicketEvent)>, EnvelopeError> {
    let Some(event) = payload_event(&recorded.event_type, &recorded.payload) else {
        return Ok(None);
    };
    let bad = |reason: String| EnvelopeError {
        position: recorded.position,
        event_type: recorded.event_type.clone(),
        reason,
    };
    let date = recorded
        .metadata
        .extra
        .get(BUSINESS_DATE_KEY)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("its metadata has no {BUSINESS_DATE_KEY}")))?;
    let business_date: BusinessDate = date.parse().map_err(|e| bad(format!("{e}")))?;
    let mut event = event.map_err(|e| bad(e.to_string()))?;
    // A close marked training on either side stays out of fiscal totals.
    if let TicketEvent::Closed(c) = &mut event {
        c.training |= recorded.metadata.training;
    }
    let meta = TicketMeta {
        store_id: recorded.metadata.store_id.as_str().into(),
        register_id: recorded.metadata.register_id.as_str().into(),
        business_date,
    };
    Ok(Some((meta, event)))
}

/// [`decode`] for an event borrowed by a replay ([`EventStore::replay_all`]):
/// the payload text is parsed straight into the ticket event, and only the
/// business date is read from the metadata. `Ok(None)`: not a ticket event
/// (its payload is then not parsed at all).
///
/// [`EventStore::replay_all`]: crate::store::EventStore::replay_all
pub fn decode_ref(
    recorded: &EventRef<'_>,
) -> Result<Option<(TicketMeta, TicketEvent)>, EnvelopeError> {
    let mut payload = serde_json::Deserializer::from_str(recorded.payload);
    let Some(event) = payload_event(recorded.event_type, &mut payload) else {
        return Ok(None);
    };
    let bad = |reason: String| EnvelopeError {
        position: recorded.position,
        event_type: recorded.event_type.to_owned(),
        reason,
    };
    let mut event = event
        .and_then(|e| payload.end().map(|()| e))
        .map_err(|e| bad(e.to_string()))?;
    let business_date: BusinessDate = business_date(recorded.metadata)
        .map_err(|e| bad(format!("its metadata is not a JSON object: {e}")))?
        .ok_or_else(|| bad(format!("its metadata has no {BUSINESS_DATE_KEY}")))?
        .parse()
        .map_err(|e| bad(format!("{e}")))?;
    if let TicketEvent::Closed(c) = &mut event {
        c.training |= recorded.training;
    }
    let meta = TicketMeta {
        store_id: recorded.store_id.into(),
        register_id: recorded.register_id.into(),
        business_date,
    };
    Ok(Some((meta, event)))
}

/// The business date in metadata JSON text, read without building the map;
/// `Ok(None)` when absent or not a string, as [`decode`] sees it.
fn business_date(metadata: &str) -> Result<Option<Cow<'_, str>>, serde_json::Error> {
    use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};
    struct DateIn;
    impl<'de> Visitor<'de> for DateIn {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            // The last occurrence of the key wins, as in a `serde_json::Map`.
            let mut date = None;
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if key == BUSINESS_DATE_KEY {
                    date = match map.next_value::<Value>()? {
                        Value::String(s) => Some(Cow::Owned(s)),
                        _ => None,
                    };
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(date)
        }
    }
    let mut de = serde_json::Deserializer::from_str(metadata);
    let date = (&mut de).deserialize_map(DateIn)?;
    de.end()?;
    Ok(date)
}

/// The ticket event of kind `kind` from its payload, read in place
/// (`&Value` is a deserializer): the replay's hot path, where building a
/// tagged JSON copy of every payload for the enum cost more than the fold.
/// `None`: not a ticket kind. The kinds are [`TICKET_KINDS`]; a unit test
/// checks this match against them and against [`TicketEvent::kind`].
/// Generic over the deserializer: a `&Value` ([`decode`]) or the payload's
/// text ([`decode_ref`]).
fn payload_event<'de, D: serde::Deserializer<'de>>(
    kind: &str,
    payload: D,
) -> Option<Result<TicketEvent, D::Error>> {
    use serde::Deserialize;
    fn read<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
        payload: D,
        wrap: fn(T) -> TicketEvent,
    ) -> Option<Result<TicketEvent, D::Error>> {
        Some(T::deserialize(payload).map(wrap))
    }
    match kind {
        "TICKET_OUVERT" => read(payload, TicketEvent::Opened),
        "ARTICLE_AJOUTE" => read(payload, TicketEvent::ArticleAdded),
        "ARTICLE_RETIRE" => read(payload, TicketEvent::ArticleRemoved),
        "REMISE_APPLIQUEE" => read(payload, TicketEvent::DiscountApplied),
        "PAIEMENT_RECU" => read(payload, TicketEvent::PaymentReceived),
        "TICKET_SUSPENDU" => read(payload, TicketEvent::Suspended),
        "TICKET_REPRIS" => read(payload, TicketEvent::Resumed),
        "TICKET_CLOS" => read(payload, TicketEvent::Closed),
        "TICKET_ANNULE" => read(payload, TicketEvent::Cancelled),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::{Cents, VatRate, ticket_totals};
    use crate::ticket::TicketClosed;
    use serde_json::json;

    fn recorded(e: NewEvent) -> RecordedEvent {
        RecordedEvent {
            position: 7,
            event_id: e.event_id,
            stream_id: "ticket-1".into(),
            version: 1,
            event_type: e.event_type,
            payload: e.payload,
            metadata: e.metadata,
            clock: Vec::new(),
            recorded_at: 0,
            checkpoint: None,
            chain_seq: 1,
            chain_hash: [0; 32],
            signature: None,
        }
    }

    #[test]
    fn every_kind_round_trips_through_the_in_place_decode() {
        use crate::money::Discount;
        use crate::ticket::{
            ArticleAdded, ArticleRemoved, DiscountApplied, PaymentMode, PaymentReceived,
            TicketCancelled, TicketOpened, TicketResumed, TicketSuspended,
        };
        let meta = TicketMeta {
            store_id: "magasin-1".into(),
            register_id: "caisse-1".into(),
            business_date: "2026-11-29".parse().unwrap(),
        };
        let totals = ticket_totals(&[(VatRate::NORMAL, Cents::new(12_00))], &[]).unwrap();
        let events = [
            TicketEvent::Opened(TicketOpened {
                ticket_id: "T-1".into(),
                cashier_id: "caissier-1".into(),
                register_id: "caisse-1".into(),
                training: false,
            }),
            TicketEvent::ArticleAdded(ArticleAdded {
                code_ean: "3017620422003".into(),
                label: "pâte à tartiner".into(),
                quantity: 2,
                unit_price: Cents::new(6_00),
                vat_rate: VatRate::NORMAL,
            }),
            TicketEvent::ArticleRemoved(ArticleRemoved {
                code_ean: "3017620422003".into(),
                quantity: 1,
            }),
            TicketEvent::DiscountApplied(DiscountApplied {
                discount: Discount::Percent { basis_points: 1000 },
                reason: "carte fidélité".into(),
            }),
            TicketEvent::PaymentReceived(PaymentReceived {
                mode: PaymentMode::Card,
                amount: Cents::new(12_00),
            }),
            TicketEvent::Suspended(TicketSuspended {
                register_id: "caisse-1".into(),
            }),
            TicketEvent::Resumed(TicketResumed {
                register_id: "caisse-2".into(),
            }),
            TicketEvent::Closed(TicketClosed::from_totals(totals, "0001", false).unwrap()),
            TicketEvent::Cancelled(TicketCancelled {
                reason: "client parti".into(),
            }),
        ];
        let kinds: Vec<&str> = events.iter().map(TicketEvent::kind).collect();
        assert_eq!(kinds, TICKET_KINDS, "one event of each stored kind");
        for event in events {
            let r = recorded(encode(&meta, &event));
            assert_eq!(decode(&r).unwrap(), Some((meta.clone(), event)));
        }
    }

    /// `r` as a replay lends it, its JSON written out as stored.
    fn borrowed<'a>(r: &'a RecordedEvent, payload: &'a str, metadata: &'a str) -> EventRef<'a> {
        EventRef {
            position: r.position,
            stream_id: &r.stream_id,
            version: r.version,
            event_type: &r.event_type,
            payload,
            store_id: &r.metadata.store_id,
            register_id: &r.metadata.register_id,
            training: r.metadata.training,
            metadata,
        }
    }

    #[test]
    fn the_text_decode_agrees_with_the_tree_decode_and_names_bad_rows() {
        let meta = TicketMeta {
            store_id: "magasin-1".into(),
            register_id: "caisse-1".into(),
            business_date: "2026-11-29".parse().unwrap(),
        };
        let totals = ticket_totals(&[(VatRate::NORMAL, Cents::new(12_00))], &[]).unwrap();
        let close = TicketEvent::Closed(TicketClosed::from_totals(totals, "0001", false).unwrap());
        let mut r = recorded(encode(&meta, &close));
        // A close marked training only on the envelope stays out of revenue.
        r.metadata.training = true;
        let (payload, metadata) = (
            r.payload.to_string(),
            Value::from(r.metadata.extra.clone()).to_string(),
        );
        let text = decode_ref(&borrowed(&r, &payload, &metadata)).unwrap();
        assert_eq!(text, decode(&r).unwrap());
        assert!(matches!(&text, Some((_, TicketEvent::Closed(c))) if c.training));
        // The last of a repeated key wins, as in the tree.
        let twice = r#"{"dateCommerciale": "2026-11-28", "dateCommerciale": "2026-11-29"}"#;
        assert_eq!(decode_ref(&borrowed(&r, &payload, twice)).unwrap(), text);
        let refused = |payload: &str, metadata: &str| {
            let e = decode_ref(&borrowed(&r, payload, metadata)).unwrap_err();
            assert_eq!((e.position, e.event_type.as_str()), (7, "TICKET_CLOS"));
            e.reason
        };
        assert!(refused(&payload, "{}").contains(BUSINESS_DATE_KEY));
        assert!(refused(&payload, r#"{"dateCommerciale": 20261129}"#).contains(BUSINESS_DATE_KEY));
        assert!(refused(&payload, r#"["2026-11-29"]"#).contains("not a JSON object"));
        assert!(refused(&payload, &format!("{metadata} x")).contains("not a JSON object"));
        assert!(!refused(&format!("{payload} x"), &metadata).is_empty());
        assert!(!refused("not json", &metadata).is_empty());
        assert!(!refused(r#"{"mode": "CB", "montant": 100}"#, &metadata).is_empty());
        let other = RecordedEvent {
            event_type: "CLOTURE_JOUR".into(),
            ..r.clone()
        };
        assert_eq!(
            decode_ref(&borrowed(&other, "not json", "{}")).unwrap(),
            None
        );
    }

    #[test]
    fn a_payload_of_another_kind_is_refused_with_its_position() {
        let mut r = recorded(NewEvent::new(
            "TICKET_CLOS",
            json!({"mode": "CB", "montant": 100}),
            Metadata::new("magasin-1", "caisse-1"),
        ));
        r.metadata.extra.insert(
            BUSINESS_DATE_KEY.to_owned(),
            Value::String("2026-11-29".into()),
        );
        let e = decode(&r).unwrap_err();
        assert_eq!((e.position, e.event_type.as_str()), (7, "TICKET_CLOS"));
    }

    #[test]
    fn a_close_round_trips_and_a_missing_date_is_named() {
        let meta = TicketMeta {
            store_id: "magasin-1".into(),
            register_id: "caisse-1".into(),
            business_date: "2026-11-29".parse().unwrap(),
        };
        let totals = ticket_totals(&[(VatRate::NORMAL, Cents::new(12_00))], &[]).unwrap();
        let event = TicketEvent::Closed(TicketClosed::from_totals(totals, "0001", false).unwrap());
        let new = encode(&meta, &event);
        assert_eq!(new.event_type, "TICKET_CLOS");
        assert_eq!(new.payload["montantTotal"], 1200);
        let mut r = recorded(new);
        assert_eq!(decode(&r).unwrap(), Some((meta, event)));
        r.metadata.extra.clear();
        let e = decode(&r).unwrap_err();
        assert!(e.to_string().contains("position 7") && e.to_string().contains(BUSINESS_DATE_KEY));
        r.event_type = "CLOTURE_JOUR".into();
        assert_eq!(decode(&r).unwrap(), None);
    }
}
