//! Ticket commands run against a register's store: a refused command
//! records nothing, a register that does not hold the ticket is refused,
//! and a close is recorded signed, with the store id in its metadata.

use rempart_db::test_support::TestDb;
use rempart_events::money::{Cents, VatRate};
use rempart_events::signing::RegisterKey;
use rempart_events::store::{Checkpoint, Direction, EventStore};
use rempart_events::ticket::{
    ArticleAdded, PaymentMode, Refusal, TicketCommand, TicketMeta, TicketStatus,
};
use rempart_events::till::{TillError, ticket_stream};

fn meta() -> TicketMeta {
    TicketMeta {
        store_id: "magasin-1".into(),
        register_id: "caisse-1".into(),
        business_date: "2026-11-29".parse().unwrap(),
    }
}

#[tokio::test]
async fn a_refused_command_records_nothing_and_a_close_is_recorded_signed() {
    let t = TestDb::sqlite().await.unwrap();
    let store = EventStore::open(&t.url)
        .await
        .unwrap()
        .with_key(RegisterKey::from_secret("caisse-1", [3; 32]))
        .await
        .unwrap();
    let stream = ticket_stream("T-1");
    let m = meta();
    for c in [
        TicketCommand::Open {
            ticket_id: "T-1".into(),
            cashier_id: "c".into(),
            register_id: "caisse-1".into(),
            training: false,
        },
        TicketCommand::AddArticle(ArticleAdded {
            code_ean: "pain".into(),
            label: "pain".into(),
            quantity: 2,
            unit_price: Cents::new(1_20),
            vat_rate: VatRate::REDUCED,
        }),
        TicketCommand::ReceivePayment {
            mode: PaymentMode::Cash,
            amount: Cents::new(2_40),
        },
    ] {
        store.run_ticket_command(&stream, &m, &c).await.unwrap();
    }
    // A close with a total the events do not give is refused, and records nothing.
    let wrong = TicketCommand::Close {
        expected_total: Cents::new(2_00),
        expected_vat: Cents::new(13),
        ticket_number: "1".into(),
    };
    let e = store.run_ticket_command(&stream, &m, &wrong).await;
    assert!(
        matches!(e, Err(TillError::Refused(Refusal::TotalMismatch { .. }))),
        "{e:?}"
    );
    assert_eq!(store.stream_version(&stream).await.unwrap(), 3);
    // Another register may not ring up a ticket this one holds.
    let elsewhere = TicketMeta {
        register_id: "caisse-2".into(),
        ..meta()
    };
    let pay = TicketCommand::ReceivePayment {
        mode: PaymentMode::Card,
        amount: Cents::new(1),
    };
    let e = store.run_ticket_command(&stream, &elsewhere, &pay).await;
    assert!(
        matches!(e, Err(TillError::Refused(Refusal::HeldElsewhere { .. }))),
        "{e:?}"
    );
    let (ticket, _) = store.ticket(&stream).await.unwrap();
    let totals = ticket.totals().unwrap();
    let close = TicketCommand::Close {
        expected_total: totals.ttc(),
        expected_vat: totals.tva().unwrap(),
        ticket_number: "1".into(),
    };
    let (_, after, at) = store.run_ticket_command(&stream, &m, &close).await.unwrap();
    assert_eq!(after.status, TicketStatus::Closed);
    assert_eq!(at.version, 4);
    let recorded = store
        .read_stream(&stream, 4, Direction::Forward, 1)
        .await
        .unwrap();
    assert_eq!(recorded[0].event_type, "TICKET_CLOS");
    assert_eq!(recorded[0].checkpoint, Some(Checkpoint::Ticket));
    assert!(recorded[0].signature.is_some(), "a close is signed");
    assert_eq!(recorded[0].metadata.store_id, "magasin-1");
    // Closed is closed: the same close again is refused.
    let e = store.run_ticket_command(&stream, &m, &close).await;
    assert!(
        matches!(e, Err(TillError::Refused(Refusal::Closed))),
        "{e:?}"
    );
}
