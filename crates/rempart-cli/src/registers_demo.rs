//! `rempart demo registers`: seed 001 case 3, live. Simulated cash registers
//! (each its own SQLite file and Ed25519 key) ring up tickets through the
//! ticket aggregate while their links to central come and go (seeded).
//! Some tickets are parked on one register and taken up on another; now and
//! then both take the same parked ticket up while apart, and central records
//! the concurrency. Central runs in this process (SQLite, fed through
//! [`Central`] directly: the same calls `events serve` makes).
//!
//! The run ends by checking what case 3 promises: central holds each event
//! exactly once; the `chiffre_affaires` projection equals the registers' own
//! day closures to the cent; a copy of a register's file with one byte
//! changed fails `verify`, naming the first bad record. Exit 0 only if all hold.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rempart::clock::{Clock, UnixClock};
use rempart::rng::{Rng, SplitMix64};
use rempart_events::calendar::date_at;
use rempart_events::clock::RegisterNo;
use rempart_events::closure::Period;
use rempart_events::money::{Cents, Discount, VatRate};
use rempart_events::signing::RegisterKey;
use rempart_events::store::EventStore;
use rempart_events::sync::{Central, RegisterSync};
use rempart_events::ticket::{
    ArticleAdded, ArticleRemoved, BusinessDate, PaymentMode, TicketCommand, TicketMeta,
    TicketStatus,
};
use rempart_events::till::ticket_stream;

mod checks;

use checks::{check_exactly_once, check_intact, check_revenue, check_tamper};

use crate::saga::runtime;
use crate::{EXIT_FAILURE, EXIT_USAGE};

/// The demo's options.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistersDemoArgs {
    /// How many stores (shops).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=80))]
    pub stores: u32,
    /// Registers in each store.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub registers_per_store: u32,
    /// Tickets rung up in all.
    #[arg(long, default_value_t = 150, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    pub tickets: u32,
    /// The seed of the partitions, baskets and parked tickets.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Keep central.sqlite and `<register-id>.sqlite` here (an empty or new
    /// directory); default: a temporary directory, removed at the end.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
}

type Failure = (u8, String);

fn fail<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> Failure + '_ {
    move |e| (EXIT_FAILURE, format!("{what}: {e}"))
}

/// Runs the demo; returns the exit code.
pub(crate) fn run(args: RegistersDemoArgs) -> u8 {
    let runtime = match runtime(2) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(demo(args)) {
        Ok(true) => 0,
        Ok(false) => EXIT_FAILURE,
        Err((code, msg)) => {
            eprintln!("error: {msg}");
            code
        }
    }
}

/// The articles on sale: one per French VAT rate.
const CATALOGUE: [(&str, &str, i64, VatRate); 4] = [
    ("3017620422003", "baguette", 1_20, VatRate::REDUCED),
    (
        "3560070976478",
        "café en salle",
        2_40,
        VatRate::INTERMEDIATE,
    ),
    ("3700123456789", "chargeur USB", 19_99, VatRate::NORMAL),
    ("9771234567003", "quotidien", 2_90, VatRate::SUPER_REDUCED),
];

struct Register {
    id: String,
    shop: String,
    sync: RegisterSync,
    /// Linked to central now.
    up: bool,
    /// Tickets this register closed.
    sold: u32,
}

impl Register {
    fn meta(&self, date: BusinessDate) -> TicketMeta {
        TicketMeta {
            store_id: self.shop.as_str().into(),
            register_id: self.id.as_str().into(),
            business_date: date,
        }
    }

    fn store(&self) -> &EventStore {
        self.sync.store()
    }

    async fn command(
        &self,
        stream: &str,
        date: BusinessDate,
        command: TicketCommand,
    ) -> Result<(), Failure> {
        self.store()
            .run_ticket_command(stream, &self.meta(date), &command)
            .await
            .map(|_| ())
            .map_err(|e| (EXIT_FAILURE, format!("{} on {stream}: {e}", self.id)))
    }

    /// Pays what is due (sometimes card then cash) and closes with the
    /// figures the register computed; the aggregate checks them.
    async fn pay_and_close(
        &mut self,
        stream: &str,
        date: BusinessDate,
        rng: &mut SplitMix64,
    ) -> Result<(), Failure> {
        let (ticket, _) = self.store().ticket(stream).await.map_err(fail("ticket"))?;
        let totals = ticket.totals().map_err(fail("totals"))?;
        let due = totals.ttc();
        let card = if rng.next_f64() < 0.3 {
            Cents::new(due.get() / 2)
        } else {
            Cents::ZERO
        };
        for (mode, amount) in [
            (PaymentMode::Card, card),
            (
                PaymentMode::Cash,
                due.checked_sub(card).map_err(fail("payment"))?,
            ),
        ] {
            if amount > Cents::ZERO {
                let pay = TicketCommand::ReceivePayment { mode, amount };
                self.command(stream, date, pay).await?;
            }
        }
        let close = TicketCommand::Close {
            expected_total: due,
            expected_vat: totals.tva().map_err(fail("VAT"))?,
            ticket_number: format!("{}-{}", self.id, self.sold + 1),
        };
        self.command(stream, date, close).await?;
        self.sold += 1;
        Ok(())
    }

    async fn resume_and_close(
        &mut self,
        stream: &str,
        date: BusinessDate,
        rng: &mut SplitMix64,
    ) -> Result<(), Failure> {
        let resume = TicketCommand::Resume {
            register_id: self.id.as_str().into(),
        };
        self.command(stream, date, resume).await?;
        self.pay_and_close(stream, date, rng).await
    }

    async fn suspended_here(&self, stream: &str) -> Result<bool, Failure> {
        let (t, _) = self.store().ticket(stream).await.map_err(fail("ticket"))?;
        Ok(t.status == TicketStatus::Suspended)
    }
}

/// Pushes every unsynced event, then pulls the shop's streams.
async fn sync(central: &Central, r: &Register) -> Result<(), Failure> {
    while let Some(batch) = r.sync.outbox(200).await.map_err(fail("outbox"))? {
        let ack = central
            .receive(batch)
            .await
            .map_err(fail("central refused a batch"))?;
        r.sync.record_ack(&ack).await.map_err(fail("ack"))?;
    }
    loop {
        let (_, from) = r.sync.progress().await.map_err(fail("progress"))?;
        let page = central
            .pull(&r.shop, from, 500)
            .await
            .map_err(fail("pull"))?;
        if page.next_position <= from {
            return Ok(());
        }
        r.sync.apply_pull(&page).await.map_err(fail("apply pull"))?;
    }
}

async fn table(central: &Central, registers: &[Register], title: &str) -> Result<(), Failure> {
    println!("\n{title}");
    println!(
        "{:<14} {:<10} {:<5} {:>5} {:>9} {:>7}",
        "register", "store", "link", "sold", "unsynced", "synced"
    );
    for r in registers {
        let (acked, _) = r.sync.progress().await.map_err(fail("progress"))?;
        let unsynced = r
            .store()
            .read_chain(&r.id, acked, u32::MAX)
            .await
            .map_err(fail("read"))?
            .len();
        let link = if r.up { "up" } else { "DOWN" };
        println!(
            "{:<14} {:<10} {:<5} {:>5} {:>9} {:>7}",
            r.id, r.shop, link, r.sold, unsynced, acked
        );
    }
    let events = central
        .store()
        .head_position()
        .await
        .map_err(fail("read"))?;
    let conflicts = central.conflicts().await.map_err(fail("conflicts"))?.len();
    println!("central: {events} events, {conflicts} conflicts");
    Ok(())
}

/// Where the files go, and the temporary directory to drop at the end.
fn data_dir(data: Option<&Path>) -> Result<(PathBuf, Option<tempfile::TempDir>), Failure> {
    let Some(dir) = data else {
        let t = tempfile::tempdir().map_err(fail("temporary directory"))?;
        return Ok((t.path().to_owned(), Some(t)));
    };
    std::fs::create_dir_all(dir).map_err(|e| {
        (
            EXIT_USAGE,
            format!(
                "--data {}: {e}: give a directory that can be created",
                dir.display()
            ),
        )
    })?;
    if dir.join("central.sqlite").exists() {
        return Err((
            EXIT_USAGE,
            format!(
                "--data {}: it holds a central.sqlite from an earlier run: give an empty or new directory",
                dir.display()
            ),
        ));
    }
    Ok((dir.to_owned(), None))
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

async fn demo(args: RegistersDemoArgs) -> Result<bool, Failure> {
    let (dir, _temp) = data_dir(args.data.as_deref())?;
    let mut rng = SplitMix64::seeded(args.seed);
    let central = Central::open(&sqlite_url(&dir.join("central.sqlite")))
        .await
        .map_err(fail("central"))?;
    let mut registers = Vec::new();
    for s in 1..=args.stores {
        for c in 1..=args.registers_per_store {
            let id = format!("m{s}-caisse{c}");
            let mut secret = [0u8; 32];
            for chunk in secret.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
            let url = sqlite_url(&dir.join(format!("{id}.sqlite")));
            let sync = RegisterSync::open(
                &url,
                RegisterKey::from_secret(&id, secret),
                &format!("magasin-{s}"),
                RegisterNo(s * 100 + c),
            )
            .await
            .map_err(fail("register store"))?;
            registers.push(Register {
                id,
                shop: format!("magasin-{s}"),
                sync,
                up: true,
                sold: 0,
            });
        }
    }
    let today = date_at(now_ms());
    println!(
        "{} stores x {} registers, {} tickets, seed {}, business day {today}; central in process (SQLite), fed through Central directly",
        args.stores, args.registers_per_store, args.tickets, args.seed
    );
    println!("files in {}", dir.display());

    // (stream, register index that parked it)
    let mut parked: Vec<(String, usize)> = Vec::new();
    let mut concurrent: Vec<String> = Vec::new();
    let mut started = 0u32;
    while started < args.tickets {
        let i = (rng.next_u64() % registers.len() as u64) as usize;
        if rng.next_f64() < 0.08 {
            registers[i].up = !registers[i].up;
            let r = &registers[i];
            let what = if r.up {
                "link back up"
            } else {
                "cut off from central (keeps selling)"
            };
            println!("  partition: {} {what}", r.id);
            continue;
        }
        if registers[i].up {
            sync(&central, &registers[i]).await?;
        }
        // Take up a ticket parked on another register of the shop, if known here.
        let mut taken = None;
        for (k, (stream, origin)) in parked.iter().enumerate() {
            if *origin != i
                && registers[*origin].shop == registers[i].shop
                && registers[i].suspended_here(stream).await?
            {
                taken = Some(k);
                break;
            }
        }
        if let Some(k) = taken {
            let (stream, origin) = parked.remove(k);
            take_up(
                &mut registers,
                &stream,
                origin,
                i,
                &mut concurrent,
                today,
                &mut rng,
            )
            .await?;
            continue;
        }
        started += 1;
        let stream = ticket_stream(&format!("{}-{started}", registers[i].id));
        // The first ticket is always parked, so every run shows a take-up.
        let park = args.registers_per_store > 1 && (started == 1 || rng.next_f64() < 0.12);
        ring_up(&mut registers[i], &stream, today, &mut rng).await?;
        if park {
            let r = &registers[i];
            let suspend = TicketCommand::Suspend {
                register_id: r.id.as_str().into(),
            };
            r.command(&stream, today, suspend).await?;
            parked.push((stream, i));
        } else {
            registers[i].pay_and_close(&stream, today, &mut rng).await?;
        }
        if started == args.tickets / 2 {
            table(&central, &registers, "midway (links as they are now):").await?;
        }
    }

    println!("\nthe network heals: every register syncs");
    for r in &mut registers {
        r.up = true;
    }
    for _ in 0..2 {
        for r in &registers {
            sync(&central, r).await?;
        }
    }
    // Every register knows the tickets still parked: another register of
    // the shop takes each up (and, if no run showed it yet, the one that
    // parked it too, before they sync: concurrent).
    for (stream, origin) in std::mem::take(&mut parked) {
        let other = (0..registers.len())
            .find(|&j| j != origin && registers[j].shop == registers[origin].shop);
        let taker = match other {
            Some(j) if registers[j].suspended_here(&stream).await? => j,
            _ => origin,
        };
        take_up(
            &mut registers,
            &stream,
            origin,
            taker,
            &mut concurrent,
            today,
            &mut rng,
        )
        .await?;
    }
    println!("each register closes the day {today}");
    let mut closures: BTreeMap<String, (Cents, Cents, u64)> = BTreeMap::new();
    for r in &registers {
        sync(&central, r).await?;
        if r.sold == 0 {
            println!("  {}: no sale, nothing to close", r.id);
            continue;
        }
        let (closure, _) = r
            .store()
            .close_period(&r.id, Period::Day { date: today }, today)
            .await
            .map_err(fail("close the day"))?;
        let sum = closure.sales.breakdown.total().map_err(fail("closure"))?;
        println!(
            "  {}: {} tickets, HT {} TVA {} TTC {}, grand total {}",
            r.id, closure.sales.ticket_count, sum.ht, sum.tva, sum.ttc, closure.grand_total
        );
        let row = closures.entry(r.shop.clone()).or_default();
        row.0 = row.0.checked_add(sum.ht).map_err(fail("sum"))?;
        row.1 = row.1.checked_add(sum.tva).map_err(fail("sum"))?;
        row.2 += closure.sales.ticket_count;
    }
    for r in &registers {
        sync(&central, r).await?;
    }
    table(&central, &registers, "after sync:").await?;
    show_concurrency(&central, &registers, &concurrent).await?;

    println!("\nchecks");
    let once = check_exactly_once(&central, &registers).await?;
    let revenue = check_revenue(&central, today, &closures).await?;
    let intact = check_intact(&central, &registers).await?;
    let tamper = check_tamper(&registers).await?;
    let all = once && revenue && intact && tamper;
    // Closing the pools folds the WAL back: DIR keeps one file per store.
    for r in &registers {
        r.store().db().close().await;
    }
    central.store().db().close().await;
    println!(
        "{}",
        if all {
            "all checks hold"
        } else {
            "SOME CHECKS FAILED"
        }
    );
    Ok(all)
}

/// `taker` resumes and closes `stream`, parked on `origin`. Now and then
/// (always, until one was shown) `origin`, which has not heard of it yet,
/// does the same: two closes of one ticket, concurrent.
async fn take_up(
    registers: &mut [Register],
    stream: &str,
    origin: usize,
    taker: usize,
    concurrent: &mut Vec<String>,
    today: BusinessDate,
    rng: &mut SplitMix64,
) -> Result<(), Failure> {
    registers[taker]
        .resume_and_close(stream, today, rng)
        .await?;
    let both = taker != origin && (concurrent.is_empty() || rng.next_f64() < 0.4);
    if both && registers[origin].suspended_here(stream).await? {
        registers[origin]
            .resume_and_close(stream, today, rng)
            .await?;
        println!(
            "  concurrent: {stream} parked on {} was resumed and closed on both {} and {} before either heard of the other",
            registers[origin].id, registers[taker].id, registers[origin].id
        );
        concurrent.push(stream.to_owned());
    } else {
        println!(
            "  {stream} parked on {} taken up and closed on {}",
            registers[origin].id, registers[taker].id
        );
    }
    Ok(())
}

fn now_ms() -> i64 {
    i64::try_from(UnixClock::new().now().as_nanos() / 1_000_000).unwrap_or(0)
}

/// Opens a ticket and scans one to four articles; sometimes takes one
/// back, sometimes grants 10 %.
async fn ring_up(
    r: &mut Register,
    stream: &str,
    date: BusinessDate,
    rng: &mut SplitMix64,
) -> Result<(), Failure> {
    let ticket_id = stream.trim_start_matches("ticket-");
    let open = TicketCommand::Open {
        ticket_id: ticket_id.into(),
        cashier_id: "caissier-1".into(),
        register_id: r.id.as_str().into(),
        training: false,
    };
    r.command(stream, date, open).await?;
    let lines = 1 + rng.next_u64() % 4;
    let mut first = None;
    for _ in 0..lines {
        let (ean, label, cents, rate) = CATALOGUE[(rng.next_u64() % 4) as usize];
        first.get_or_insert(ean);
        let add = TicketCommand::AddArticle(ArticleAdded {
            code_ean: ean.into(),
            label: label.into(),
            quantity: 1 + (rng.next_u64() % 3) as u32,
            unit_price: Cents::new(cents),
            vat_rate: rate,
        });
        r.command(stream, date, add).await?;
    }
    if let Some(ean) = first.filter(|_| rng.next_f64() < 0.15) {
        let remove = TicketCommand::RemoveArticle(ArticleRemoved {
            code_ean: ean.into(),
            quantity: 1,
        });
        r.command(stream, date, remove).await?;
    }
    if rng.next_f64() < 0.15 {
        let discount = TicketCommand::ApplyDiscount {
            discount: Discount::Percent { basis_points: 1000 },
            reason: "carte fidélité".into(),
        };
        r.command(stream, date, discount).await?;
    }
    Ok(())
}

async fn show_concurrency(
    central: &Central,
    registers: &[Register],
    concurrent: &[String],
) -> Result<(), Failure> {
    let by_no: HashMap<u32, &str> = registers
        .iter()
        .map(|r| {
            let no = r.store().register_no(&r.id).map_or(0, |n| n.0);
            (no, r.id.as_str())
        })
        .collect();
    for stream in concurrent {
        let review = central
            .review_ticket(stream)
            .await
            .map_err(fail("review"))?;
        let winner = review
            .decision
            .map_or("none", |d| by_no.get(&d.origin.0).copied().unwrap_or("?"));
        println!(
            "{stream}: {} concurrent pairs; the first close wins ({winner}), {} later events flagged for review (both closes are kept, and count until reviewed)",
            review.conflicts.len(),
            review.for_review.len()
        );
    }
    Ok(())
}
