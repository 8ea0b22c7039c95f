//! How a ticket event sits in the store: the event's kind is the row's
//! `event_type` (`TICKET_CLOS`, …), its fields are the `payload`, and the
//! [`TicketMeta`] is split over the envelope: the store and the register
//! in their own columns, the business date in the metadata's
//! `dateCommerciale`. Readers (the projection, closures) decode with
//! [`decode`], writers encode with [`encode`], so both agree on one layout.

use serde_json::Value;

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

/// The ticket event of kind `kind` from its payload, read in place
/// (`&Value` is a deserializer): the replay's hot path, where building a
/// tagged JSON copy of every payload for the enum cost more than the fold.
/// `None`: not a ticket kind. The kinds are [`TICKET_KINDS`]; a unit test
/// checks this match against them and against [`TicketEvent::kind`].
fn payload_event(kind: &str, payload: &Value) -> Option<Result<TicketEvent, serde_json::Error>> {
    use serde::Deserialize;
    fn read<'a, T: Deserialize<'a>>(
        payload: &'a Value,
        wrap: fn(T) -> TicketEvent,
    ) -> Option<Result<TicketEvent, serde_json::Error>> {
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
