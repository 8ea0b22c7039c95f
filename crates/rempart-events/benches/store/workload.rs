//! The ticket workload every ticket bench runs: a ticket opened, `n`
//! articles scanned, paid in full and closed, made of the register's real
//! commands and validated by the real `decide`.

use rempart_events::envelope::encode;
use rempart_events::money::{Cents, VatRate};
use rempart_events::store::{Checkpoint, NewEvent};
use rempart_events::ticket::{
    ArticleAdded, PaymentMode, Ticket, TicketCommand, TicketEvent, TicketMeta, apply, decide,
};

/// The register and day every bench ticket is rung up on.
pub(crate) fn meta() -> TicketMeta {
    TicketMeta {
        store_id: "store-12".into(),
        register_id: "register-12-3".into(),
        business_date: "2026-11-29".parse().unwrap(),
    }
}

/// The commands of ticket `id` with `articles` scanned: `articles + 3`
/// events once decided (open, the articles, the payment, the close).
pub(crate) fn ticket_commands(id: &str, articles: u32) -> Vec<TicketCommand> {
    let mut commands = vec![TicketCommand::Open {
        ticket_id: id.into(),
        cashier_id: "caissier-7".into(),
        register_id: meta().register_id,
        training: false,
    }];
    let mut ticket = Ticket::new();
    for i in 0..articles {
        commands.push(TicketCommand::AddArticle(ArticleAdded {
            code_ean: format!("30176204{:05}", i % 40),
            label: "pate a tartiner".into(),
            quantity: 1 + i % 3,
            unit_price: Cents::new(1_29 + i64::from(i % 17) * 10),
            vat_rate: if i % 4 == 0 {
                VatRate::NORMAL
            } else {
                VatRate::REDUCED
            },
        }));
    }
    for c in &commands {
        ticket = decide(&ticket, c).unwrap().iter().fold(ticket, apply);
    }
    let totals = ticket.totals().unwrap();
    commands.push(TicketCommand::ReceivePayment {
        mode: PaymentMode::Card,
        amount: totals.ttc(),
    });
    commands.push(TicketCommand::Close {
        expected_total: totals.ttc(),
        expected_vat: totals.tva().unwrap(),
        ticket_number: id.into(),
    });
    commands
}

/// Validates `commands` in order from a new ticket: the events to record.
pub(crate) fn decide_all(commands: &[TicketCommand]) -> Vec<TicketEvent> {
    let mut ticket = Ticket::new();
    let mut events = Vec::with_capacity(commands.len());
    for c in commands {
        let new = decide(&ticket, c).unwrap();
        ticket = new.iter().fold(ticket, apply);
        events.extend(new);
    }
    events
}

/// The store's envelopes for `events`, the close signed as the till does.
pub(crate) fn envelopes(events: &[TicketEvent]) -> Vec<NewEvent> {
    let meta = meta();
    events
        .iter()
        .map(|e| {
            let n = encode(&meta, e);
            if matches!(e, TicketEvent::Closed(_)) {
                n.signed(Checkpoint::Ticket)
            } else {
                n
            }
        })
        .collect()
}
