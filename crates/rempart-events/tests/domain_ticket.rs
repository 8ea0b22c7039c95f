//! The ticket aggregate: every event kind applied (the removal the seed
//! forgot included), the refusals, and the close checked against the
//! events.

use proptest::prelude::*;
use rempart_events::money::{Cents, Discount, VatRate};
use rempart_events::ticket::{
    ArticleAdded, ArticleRemoved, PaymentMode, Refusal, RegisterId, Ticket, TicketCommand,
    TicketEvent, TicketStatus, apply, decide, decide_at,
};

fn open(training: bool) -> TicketCommand {
    TicketCommand::Open {
        ticket_id: "T-0001".into(),
        cashier_id: "caissier-7".into(),
        register_id: "caisse-01".into(),
        training,
    }
}

fn article(ean: &str, quantity: u32, cents: i64, rate: VatRate) -> TicketCommand {
    TicketCommand::AddArticle(ArticleAdded {
        code_ean: ean.into(),
        label: format!("article {ean}"),
        quantity,
        unit_price: Cents::new(cents),
        vat_rate: rate,
    })
}

fn remove(ean: &str, quantity: u32) -> TicketCommand {
    TicketCommand::RemoveArticle(ArticleRemoved {
        code_ean: ean.into(),
        quantity,
    })
}

fn pay(cents: i64) -> TicketCommand {
    TicketCommand::ReceivePayment {
        mode: PaymentMode::Card,
        amount: Cents::new(cents),
    }
}

fn close(total: i64, vat: i64) -> TicketCommand {
    TicketCommand::Close {
        expected_total: Cents::new(total),
        expected_vat: Cents::new(vat),
        ticket_number: "0001".into(),
    }
}

/// Run the commands, each of which must be accepted; returns the ticket and
/// every event recorded.
fn run(commands: &[TicketCommand]) -> (Ticket, Vec<TicketEvent>) {
    let mut ticket = Ticket::new();
    let mut log = Vec::new();
    for command in commands {
        let events = decide(&ticket, command)
            .unwrap_or_else(|refusal| panic!("{command:?} refused: {refusal}"));
        for event in events {
            ticket = apply(ticket, &event);
            log.push(event);
        }
    }
    (ticket, log)
}

#[test]
fn every_event_kind_is_applied() {
    let (ticket, log) = run(&[
        open(false),
        article("A", 3, 2_00, VatRate::NORMAL),
        article("B", 1, 10_00, VatRate::REDUCED),
        remove("A", 1),
        TicketCommand::ApplyDiscount {
            discount: Discount::Percent { basis_points: 1000 },
            reason: "carte fidélité".into(),
        },
        TicketCommand::Suspend {
            register_id: "caisse-01".into(),
        },
        TicketCommand::Resume {
            register_id: "caisse-02".into(),
        },
        pay(5_00),
        TicketCommand::ReceivePayment {
            mode: PaymentMode::Cash,
            amount: Cents::new(7_60),
        },
        // (4.00 + 10.00) − 10 % = 12.60; VAT: 20 % on 3.60 → 0.60,
        // 5.5 % on 9.00 → 0.4692… → 0.47.
        close(12_60, 1_07),
    ]);
    let kinds: Vec<_> = log.iter().map(TicketEvent::kind).collect();
    for kind in [
        "TICKET_OUVERT",
        "ARTICLE_AJOUTE",
        "ARTICLE_RETIRE",
        "REMISE_APPLIQUEE",
        "PAIEMENT_RECU",
        "TICKET_SUSPENDU",
        "TICKET_REPRIS",
        "TICKET_CLOS",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert_eq!(ticket.status, TicketStatus::Closed);
    assert_eq!(ticket.register, Some("caisse-02".into()));
    assert_eq!(ticket.quantity_of("A"), 2);
    let closed = ticket.closed.as_ref().unwrap();
    assert_eq!(closed.total, Cents::new(12_60));
    assert_eq!(closed.vat, Cents::new(1_07));
    assert_eq!(
        closed.breakdown.get(VatRate::NORMAL).unwrap().ttc,
        Cents::new(3_60)
    );
    assert_eq!(
        closed.breakdown.get(VatRate::REDUCED).unwrap().ttc,
        Cents::new(9_00)
    );
    // Replaying the log rebuilds the same ticket, also after a JSON round trip.
    assert_eq!(Ticket::replay(&log), ticket);
    let json = serde_json::to_string(&log).unwrap();
    assert!(
        json.contains(
            r#""type":"REMISE_APPLIQUEE","payload":{"type":"POURCENTAGE","pointsDeBase":1000"#
        ),
        "{json}"
    );
    let back: Vec<TicketEvent> = serde_json::from_str(&json).unwrap();
    assert_eq!(Ticket::replay(&back), ticket);
}

#[test]
fn a_cancelled_ticket_is_kept_and_takes_nothing_more() {
    let (ticket, log) = run(&[
        open(false),
        article("A", 1, 5_00, VatRate::NORMAL),
        TicketCommand::Cancel {
            reason: "client parti".into(),
        },
    ]);
    assert_eq!(log.last().unwrap().kind(), "TICKET_ANNULE");
    assert_eq!(ticket.status, TicketStatus::Cancelled);
    assert_eq!(ticket.closed, None);
    assert_eq!(decide(&ticket, &pay(5_00)), Err(Refusal::Cancelled));
    assert_eq!(decide(&ticket, &close(5_00, 83)), Err(Refusal::Cancelled));
    // Once something is paid, a cancel is refused: the payment is a fact.
    let (paid, _) = run(&[
        open(false),
        article("A", 1, 5_00, VatRate::NORMAL),
        pay(2_00),
    ]);
    assert_eq!(
        decide(&paid, &TicketCommand::Cancel { reason: "x".into() }),
        Err(Refusal::CancelAfterPayment {
            paid: Cents::new(2_00)
        })
    );
}

#[test]
fn an_open_ticket_takes_commands_only_from_the_register_holding_it() {
    let (ticket, _) = run(&[open(false), article("A", 1, 5_00, VatRate::NORMAL)]);
    let (here, there) = (RegisterId::from("caisse-01"), RegisterId::from("caisse-02"));
    assert!(decide_at(&ticket, &here, &pay(5_00)).is_ok());
    assert_eq!(
        decide_at(&ticket, &there, &pay(5_00)),
        Err(Refusal::HeldElsewhere {
            holder: here.clone(),
            register: there.clone(),
        })
    );
    // Parked, it can be taken up anywhere; then the other register holds it.
    let suspend = TicketCommand::Suspend {
        register_id: here.clone(),
    };
    let ticket = apply(
        ticket.clone(),
        &decide_at(&ticket, &here, &suspend).unwrap()[0],
    );
    let resume = TicketCommand::Resume {
        register_id: there.clone(),
    };
    let ticket = apply(
        ticket.clone(),
        &decide_at(&ticket, &there, &resume).unwrap()[0],
    );
    assert!(decide_at(&ticket, &there, &pay(5_00)).is_ok());
    assert!(matches!(
        decide_at(&ticket, &here, &pay(5_00)),
        Err(Refusal::HeldElsewhere { .. })
    ));
}

#[test]
fn a_removed_article_leaves_the_total() {
    // The seed's applyTicketEvent ignored ARTICLE_RETIRE: 3 × 2.00 € stayed 6.00 €.
    let (ticket, _) = run(&[
        open(false),
        article("A", 3, 2_00, VatRate::NORMAL),
        remove("A", 2),
    ]);
    assert_eq!(ticket.totals().unwrap().ttc(), Cents::new(2_00));
    // And a close with the seed's total is refused.
    assert_eq!(
        decide(&ticket, &close(6_00, 1_00)),
        Err(Refusal::TotalMismatch {
            sent: Cents::new(6_00),
            computed: Cents::new(2_00),
        })
    );
}

#[test]
fn a_removal_takes_the_latest_scan_of_that_article_first() {
    let (ticket, _) = run(&[
        open(false),
        article("A", 1, 1_00, VatRate::NORMAL),
        article("A", 1, 3_00, VatRate::NORMAL),
        remove("A", 1),
    ]);
    assert_eq!(ticket.totals().unwrap().ttc(), Cents::new(1_00));
}

#[test]
fn a_percentage_discount_is_rounded_to_the_cent() {
    // 15 % of 3 × 0.99 € = 44.55 cents → 45 (half away from zero).
    let (ticket, _) = run(&[
        open(false),
        article("A", 3, 99, VatRate::REDUCED),
        TicketCommand::ApplyDiscount {
            discount: Discount::Percent { basis_points: 1500 },
            reason: "promo".into(),
        },
    ]);
    let totals = ticket.totals().unwrap();
    assert_eq!(totals.discount, Cents::new(45));
    assert_eq!(totals.ttc(), Cents::new(2_52));
    // 2.52 € at 5.5 %: 13.13… cents.
    assert_eq!(totals.tva().unwrap(), Cents::new(13));
    // A later removal: the percentage applies to what is left (2 × 0.99 €
    // − 15 % = 1.98 − 0.297 → 0.30 = 1.68 €).
    let ticket = apply(
        ticket,
        &TicketEvent::ArticleRemoved(ArticleRemoved {
            code_ean: "A".into(),
            quantity: 1,
        }),
    );
    assert_eq!(ticket.totals().unwrap().ttc(), Cents::new(1_68));
}

#[test]
fn the_refusals() {
    let (open_ticket, _) = run(&[open(false), article("A", 2, 5_00, VatRate::NORMAL)]);
    let cases: Vec<(&Ticket, TicketCommand, Refusal)> = vec![
        (&open_ticket, open(false), Refusal::AlreadyOpened),
        (
            &open_ticket,
            remove("B", 1),
            Refusal::ArticleNotOnTicket {
                code_ean: "B".into(),
                on_ticket: 0,
                asked: 1,
            },
        ),
        (
            &open_ticket,
            remove("A", 3),
            Refusal::ArticleNotOnTicket {
                code_ean: "A".into(),
                on_ticket: 2,
                asked: 3,
            },
        ),
        (
            &open_ticket,
            article("A", 0, 5_00, VatRate::NORMAL),
            Refusal::ZeroQuantity,
        ),
        (
            &open_ticket,
            article("A", 1, -5_00, VatRate::NORMAL),
            Refusal::NegativePrice {
                price: Cents::new(-5_00),
            },
        ),
        (
            &open_ticket,
            pay(10_01),
            Refusal::PaymentAboveDue {
                amount: Cents::new(10_01),
                due: Cents::new(10_00),
            },
        ),
        (
            &open_ticket,
            pay(0),
            Refusal::PaymentNotPositive {
                amount: Cents::ZERO,
            },
        ),
        (
            &open_ticket,
            TicketCommand::ApplyDiscount {
                discount: Discount::Amount {
                    cents: Cents::new(10_01),
                },
                reason: "trop".into(),
            },
            Refusal::DiscountAboveDue {
                discount: Cents::new(10_01),
                due: Cents::new(10_00),
            },
        ),
        (
            &open_ticket,
            TicketCommand::ApplyDiscount {
                discount: Discount::Percent {
                    basis_points: 10_001,
                },
                reason: "trop".into(),
            },
            Refusal::PercentOutOfRange {
                basis_points: 10_001,
            },
        ),
        (
            &open_ticket,
            close(10_00, 1_67),
            Refusal::NotFullyPaid {
                paid: Cents::ZERO,
                total: Cents::new(10_00),
            },
        ),
        (
            &open_ticket,
            close(10_00, 1_66),
            Refusal::VatMismatch {
                sent: Cents::new(1_66),
                computed: Cents::new(1_67),
            },
        ),
        (
            &open_ticket,
            TicketCommand::Resume {
                register_id: "caisse-02".into(),
            },
            Refusal::NotSuspended,
        ),
    ];
    for (state, command, refusal) in cases {
        assert_eq!(decide(state, &command), Err(refusal), "{command:?}");
    }
    let new = Ticket::new();
    assert_eq!(decide(&new, &pay(1)), Err(Refusal::NotOpened));
    // A refusal says what is wrong and what to do, in euros.
    let message = decide(&open_ticket, &pay(10_01)).unwrap_err().to_string();
    assert_eq!(
        message,
        "payment of 10.01 € is above the 10.00 € left to pay (keep only the amount due; change is not part of it)"
    );
    let message = decide(&open_ticket, &remove("B", 1))
        .unwrap_err()
        .to_string();
    assert_eq!(message, "cannot remove 1 × B: the ticket has 0");
}

#[test]
fn nothing_goes_on_a_closed_ticket() {
    let (closed, _) = run(&[
        open(false),
        article("A", 1, 5_00, VatRate::NORMAL),
        pay(5_00),
        close(5_00, 83),
    ]);
    for command in [
        article("B", 1, 1_00, VatRate::NORMAL),
        remove("A", 1),
        pay(1),
        close(5_00, 83),
        TicketCommand::Suspend {
            register_id: "caisse-01".into(),
        },
    ] {
        assert_eq!(
            decide(&closed, &command),
            Err(Refusal::Closed),
            "{command:?}"
        );
    }
}

#[test]
fn a_suspended_ticket_only_accepts_a_resume() {
    let (parked, _) = run(&[
        open(false),
        article("A", 1, 5_00, VatRate::NORMAL),
        TicketCommand::Suspend {
            register_id: "caisse-01".into(),
        },
    ]);
    assert_eq!(
        decide(&parked, &article("B", 1, 1_00, VatRate::NORMAL)),
        Err(Refusal::Suspended)
    );
    assert_eq!(decide(&parked, &pay(1_00)), Err(Refusal::Suspended));
}

#[test]
fn a_change_below_what_is_paid_is_refused() {
    let (paid, _) = run(&[
        open(false),
        article("A", 2, 5_00, VatRate::NORMAL),
        pay(8_00),
    ]);
    assert_eq!(
        decide(&paid, &remove("A", 1)),
        Err(Refusal::BelowPaid {
            total: Cents::new(5_00),
            paid: Cents::new(8_00),
        })
    );
}

#[test]
fn an_empty_ticket_closes_at_zero() {
    let (ticket, _) = run(&[open(false), close(0, 0)]);
    assert_eq!(ticket.status, TicketStatus::Closed);
}

#[test]
fn training_mode_travels_to_the_close() {
    let (ticket, log) = run(&[
        open(true),
        article("A", 1, 5_00, VatRate::NORMAL),
        pay(5_00),
        close(5_00, 83),
    ]);
    assert!(ticket.training);
    let TicketEvent::Closed(closed) = log.last().unwrap() else {
        panic!("last event is not a close")
    };
    assert!(closed.training);
}

#[test]
fn events_keep_the_seed_names_on_the_wire() {
    let (_, log) = run(&[
        open(false),
        article("3017620422003", 2, 4_99, VatRate::REDUCED),
        remove("3017620422003", 1),
        pay(4_99),
        close(4_99, 26),
    ]);
    let json = serde_json::to_value(&log).unwrap();
    assert_eq!(json[0]["type"], "TICKET_OUVERT");
    assert_eq!(json[0]["payload"]["caissierId"], "caissier-7");
    assert_eq!(json[1]["payload"]["prixUnitaire"], 4_99);
    assert_eq!(json[1]["payload"]["tauxTva"], 550);
    assert_eq!(json[2]["type"], "ARTICLE_RETIRE");
    assert_eq!(json[3]["payload"]["mode"], "CB");
    assert_eq!(json[4]["payload"]["montantTotal"], 4_99);
    assert_eq!(json[4]["payload"]["montantTVA"], 26);
    let back: Vec<TicketEvent> = serde_json::from_value(json).unwrap();
    assert_eq!(back, log);
}

fn command() -> impl Strategy<Value = TicketCommand> {
    let ean = prop_oneof![Just("A"), Just("B"), Just("C")];
    let rate = prop_oneof![Just(VatRate::NORMAL), Just(VatRate::REDUCED)];
    prop_oneof![
        (ean.clone(), 0u32..4, -100i64..2_000, rate).prop_map(|(e, q, p, r)| article(e, q, p, r)),
        (ean, 0u32..4).prop_map(|(e, q)| remove(e, q)),
        (0u32..12_000).prop_map(|basis_points| TicketCommand::ApplyDiscount {
            discount: Discount::Percent { basis_points },
            reason: "p".into(),
        }),
        (-100i64..3_000).prop_map(|cents| TicketCommand::ApplyDiscount {
            discount: Discount::Amount {
                cents: Cents::new(cents)
            },
            reason: "m".into(),
        }),
        (-100i64..5_000).prop_map(pay),
        Just(TicketCommand::Suspend {
            register_id: "caisse-01".into()
        }),
        Just(TicketCommand::Resume {
            register_id: "caisse-02".into()
        }),
        (0i64..5_000, 0i64..1_000).prop_map(|(t, v)| close(t, v)),
    ]
}

proptest! {
    /// Whatever a register asks, the recorded history keeps the invariants:
    /// paid never above the total, a close only when paid and with the
    /// computed figures, and the fold of the log is the state.
    #[test]
    fn accepted_histories_keep_the_invariants(commands in prop::collection::vec(command(), 0..40)) {
        let mut ticket = Ticket::new();
        let mut log = Vec::new();
        for event in decide(&ticket, &open(false)).unwrap() {
            ticket = apply(ticket, &event);
            log.push(event);
        }
        for command in &commands {
            // Close with the figures the ticket shows, half of the time.
            let command = match command {
                TicketCommand::Close { expected_total, .. } if expected_total.get() % 2 == 0 => {
                    let t = ticket.totals().unwrap();
                    close(t.ttc().get(), t.tva().unwrap().get())
                }
                other => other.clone(),
            };
            if let Ok(events) = decide(&ticket, &command) {
                for event in events {
                    ticket = apply(ticket, &event);
                    log.push(event);
                }
            }
            let totals = ticket.totals().unwrap();
            prop_assert!(ticket.paid().unwrap() <= totals.ttc());
            prop_assert!(totals.ttc() >= Cents::ZERO);
            if let Some(closed) = &ticket.closed {
                prop_assert_eq!(closed.total, totals.ttc());
                prop_assert_eq!(closed.total, ticket.paid().unwrap());
                prop_assert_eq!(&closed.breakdown, &totals.breakdown);
            }
        }
        prop_assert_eq!(Ticket::replay(&log), ticket);
    }
}
