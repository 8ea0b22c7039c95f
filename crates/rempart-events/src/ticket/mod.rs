//! The ticket aggregate of seed 001 case 3: its events, its state and the
//! validation of the register's commands.
//!
//! - [`decide`]`(&state, &command)` validates a command and returns the
//!   events to record, or a [`Refusal`].
//! - [`decide_at`] does the same for a command made on a given register,
//!   refusing it when another register holds the ticket.
//! - [`apply`]`(state, &event)` folds an event into the state.
//!
//! Both are pure. What the seed got wrong and this gets right: a removed
//! article leaves the total, money is integer cents, a close is checked
//! against the total computed from the events, and the store id lives in
//! the metadata ([`TicketMeta`]).
//!
//! ```
//! use rempart_events::money::{Cents, VatRate};
//! use rempart_events::ticket::*;
//! let mut ticket = Ticket::new();
//! let commands = [
//!     TicketCommand::Open {
//!         ticket_id: "t-1".into(),
//!         cashier_id: "c-7".into(),
//!         register_id: "caisse-01".into(),
//!         training: false,
//!     },
//!     TicketCommand::AddArticle(ArticleAdded {
//!         code_ean: "3017620422003".into(),
//!         label: "Pâte à tartiner".into(),
//!         quantity: 2,
//!         unit_price: Cents::new(4_99),
//!         vat_rate: VatRate::REDUCED,
//!     }),
//!     TicketCommand::RemoveArticle(ArticleRemoved { code_ean: "3017620422003".into(), quantity: 1 }),
//!     TicketCommand::ReceivePayment { mode: PaymentMode::Card, amount: Cents::new(4_99) },
//!     TicketCommand::Close {
//!         expected_total: Cents::new(4_99),
//!         expected_vat: Cents::new(26),
//!         ticket_number: "0001".into(),
//!     },
//! ];
//! for command in &commands {
//!     for event in decide(&ticket, command).unwrap() {
//!         ticket = apply(ticket, &event);
//!     }
//! }
//! assert_eq!(ticket.status, TicketStatus::Closed);
//! ```

mod decide;
mod event;
mod meta;
mod state;

pub use decide::{Refusal, TicketCommand, decide, decide_at};
pub use event::{
    ArticleAdded, ArticleRemoved, DiscountApplied, PaymentMode, PaymentReceived, TicketCancelled,
    TicketClosed, TicketEvent, TicketOpened, TicketResumed, TicketSuspended,
};
pub use meta::{BusinessDate, CashierId, DateError, RegisterId, StoreId, TicketId, TicketMeta};
pub use state::{Line, Ticket, TicketStatus, apply};
