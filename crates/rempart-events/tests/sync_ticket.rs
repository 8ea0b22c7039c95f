//! A ticket parked on register A and taken up by register B of the same
//! shop; cut off from each other, both resume it and close it. Through
//! real stores and sync: central keeps both closes, records the conflicts,
//! and the domain hook picks the first close; the other is flagged for
//! review. Every store still verifies.

use rempart_db::test_support::TestDb;
use rempart_events::clock::RegisterNo;
use rempart_events::conflict::ReviewReason;
use rempart_events::money::{Cents, VatRate};
use rempart_events::signing::RegisterKey;
use rempart_events::store::Direction;
use rempart_events::sync::{Central, RegisterSync};
use rempart_events::ticket::{ArticleAdded, PaymentMode, Ticket, TicketCommand, TicketMeta};
use rempart_events::verify::{VerifyOptions, verify};

const STREAM: &str = "ticket-T-9";

async fn ticket(r: &RegisterSync) -> Ticket {
    r.store().ticket(STREAM).await.unwrap().0
}

async fn run(r: &RegisterSync, command: TicketCommand) {
    let meta = TicketMeta {
        store_id: "s1".into(),
        register_id: r.register_id().into(),
        business_date: "2026-11-29".parse().unwrap(),
    };
    r.store()
        .run_ticket_command(STREAM, &meta, &command)
        .await
        .unwrap();
}

async fn resume_pay_close(r: &RegisterSync) {
    run(
        r,
        TicketCommand::Resume {
            register_id: r.register_id().into(),
        },
    )
    .await;
    let totals = ticket(r).await.totals().unwrap();
    run(
        r,
        TicketCommand::ReceivePayment {
            mode: PaymentMode::Cash,
            amount: totals.ttc(),
        },
    )
    .await;
    run(
        r,
        TicketCommand::Close {
            expected_total: totals.ttc(),
            expected_vat: totals.tva().unwrap(),
            ticket_number: format!("{}-1", r.register_id()),
        },
    )
    .await;
}

async fn push(central: &Central, r: &RegisterSync) {
    while let Some(batch) = r.outbox(100).await.unwrap() {
        let ack = central.receive(batch).await.unwrap();
        r.record_ack(&ack).await.unwrap();
    }
}

async fn pull(central: &Central, r: &RegisterSync) {
    let (_, from) = r.progress().await.unwrap();
    let page = central.pull("s1", from, 1_000).await.unwrap();
    r.apply_pull(&page).await.unwrap();
}

#[tokio::test]
async fn a_ticket_closed_on_two_registers_keeps_both_and_the_first_close_wins() {
    for backend in ["sqlite", "postgres"] {
        let central_db = TestDb::new(backend).await.unwrap();
        let central = Central::open(&central_db.url).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let open = |id: &'static str, no: u32| {
            let url = format!(
                "sqlite://{}",
                dir.path().join(format!("{id}.sqlite")).display()
            );
            async move {
                RegisterSync::open(
                    &url,
                    RegisterKey::from_secret(id, [no as u8; 32]),
                    "s1",
                    RegisterNo(no),
                )
                .await
                .unwrap()
            }
        };
        let a = open("caisse-a", 1).await;
        let b = open("caisse-b", 2).await;
        run(
            &a,
            TicketCommand::Open {
                ticket_id: "T-9".into(),
                cashier_id: "c".into(),
                register_id: "caisse-a".into(),
                training: false,
            },
        )
        .await;
        run(
            &a,
            TicketCommand::AddArticle(ArticleAdded {
                code_ean: "pain".into(),
                label: "pain".into(),
                quantity: 1,
                unit_price: Cents::new(1_20),
                vat_rate: VatRate::NORMAL,
            }),
        )
        .await;
        run(
            &a,
            TicketCommand::Suspend {
                register_id: "caisse-a".into(),
            },
        )
        .await;
        push(&central, &a).await;
        pull(&central, &b).await;
        // Cut off from each other: both take the parked ticket up and close it.
        resume_pay_close(&b).await;
        resume_pay_close(&a).await;
        push(&central, &b).await;
        push(&central, &a).await;

        let on_central = central
            .store()
            .read_stream(STREAM, 1, Direction::Forward, 100)
            .await
            .unwrap();
        assert_eq!(on_central.len(), 9, "{backend}: both branches kept");
        let conflicts = central.conflicts().await.unwrap();
        // Each of A's three events is concurrent with each of B's three.
        assert_eq!(conflicts.len(), 9, "{backend}: {conflicts:?}");
        let review = central.review_ticket(STREAM).await.unwrap();
        let decision = review.decision.unwrap();
        assert!(
            conflicts
                .iter()
                .all(|c| c.decision == Some((decision.origin.0, decision.counter)))
        );
        let losing: Vec<_> = review
            .for_review
            .iter()
            .filter(|c| c.reason == ReviewReason::LosingDecision)
            .collect();
        assert_eq!(losing.len(), 1, "{backend}: the other close is flagged");
        assert_ne!(losing[0].event.origin, decision.origin);
        assert_eq!(review.accepted.len() + review.for_review.len(), 9);
        for store in [central.store(), a.store(), b.store()] {
            let r = verify(store.db(), &VerifyOptions::default()).await.unwrap();
            assert!(r.intact(), "{backend}: {:?}", r.findings);
        }
    }
}
