//! The checks that end `rempart demo registers`: each prints its figures
//! and a verdict, and says whether it holds.

use std::collections::{BTreeMap, HashSet};

use rempart_events::money::Cents;
use rempart_events::revenue::RevenueTable;
use rempart_events::store::{EventStore, RecordedEvent};
use rempart_events::sync::Central;
use rempart_events::ticket::BusinessDate;
use rempart_events::verify::{VerifyOptions, open_for_verify, verify};

use super::{Failure, Register, fail};
use crate::EXIT_FAILURE;

pub(super) async fn all_events(store: &EventStore) -> Result<Vec<RecordedEvent>, Failure> {
    let mut out: Vec<RecordedEvent> = Vec::new();
    loop {
        let page = store
            .read_all(out.len() as u64 + 1, 1_000)
            .await
            .map_err(fail("read"))?;
        if page.is_empty() {
            return Ok(out);
        }
        out.extend(page);
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "OK" } else { "FAILED" }
}

pub(super) async fn check_exactly_once(
    central: &Central,
    registers: &[Register],
) -> Result<bool, Failure> {
    let on_central = all_events(central.store()).await?;
    let ids: HashSet<_> = on_central.iter().map(|e| e.event_id).collect();
    let mut ok = ids.len() == on_central.len();
    let mut own_total = 0;
    for r in registers {
        let own: Vec<_> = all_events(r.store())
            .await?
            .into_iter()
            .filter(|e| e.metadata.register_id == r.id)
            .collect();
        own_total += own.len();
        ok &= own.iter().all(|e| ids.contains(&e.event_id));
        let acked = central.acked_seq(&r.id).await.map_err(fail("acked"))?;
        ok &= own.is_empty() || acked == Some(own.len() as u64);
    }
    ok &= own_total == on_central.len();
    println!(
        "central holds each event exactly once ({} events on central, {own_total} recorded by the registers): {}",
        on_central.len(),
        verdict(ok)
    );
    Ok(ok)
}

pub(super) async fn check_revenue(
    central: &Central,
    today: BusinessDate,
    closures: &BTreeMap<String, (Cents, Cents, u64)>,
) -> Result<bool, Failure> {
    let table = RevenueTable::open(central.store().db().clone())
        .await
        .map_err(fail("projection"))?;
    table
        .catch_up(central.store())
        .await
        .map_err(fail("projection"))?;
    let mut projected: BTreeMap<String, (Cents, Cents, u64)> = BTreeMap::new();
    for row in table.rows().await.map_err(fail("projection"))? {
        if row.date == today {
            let r = row.revenue;
            projected.insert(row.store_id.0, (r.total_ht, r.total_tva, r.ticket_count));
        }
    }
    for (shop, (ht, tva, n)) in &projected {
        println!("  chiffre_affaires {today} {shop}: HT {ht} TVA {tva}, {n} tickets");
    }
    let ok = &projected == closures;
    println!(
        "the projection's totals equal the registers' day closures to the cent: {}",
        verdict(ok)
    );
    if !ok {
        println!("  closures: {closures:?}");
    }
    Ok(ok)
}

pub(super) async fn check_intact(
    central: &Central,
    registers: &[Register],
) -> Result<bool, Failure> {
    let mut ok = true;
    let stores = std::iter::once(("central", central.store()))
        .chain(registers.iter().map(|r| (r.id.as_str(), r.store())));
    for (name, store) in stores {
        let report = verify(store.db(), &VerifyOptions::default())
            .await
            .map_err(fail("verify"))?;
        if let Some(f) = report.findings.first() {
            println!("  {name} fails verify: {f}");
            ok = false;
        }
    }
    println!("central and every register verify intact: {}", verdict(ok));
    Ok(ok)
}

/// Copies the first register's store, changes one digit of a closed
/// ticket's total in the file, and verifies the copy.
pub(super) async fn check_tamper(registers: &[Register]) -> Result<bool, Failure> {
    let Some(r) = registers.iter().find(|r| r.sold > 0) else {
        println!("no register sold anything: nothing to tamper with");
        return Ok(false);
    };
    let target = all_events(r.store())
        .await?
        .into_iter()
        .find(|e| e.event_type == "TICKET_CLOS" && e.metadata.register_id == r.id)
        .ok_or((EXIT_FAILURE, format!("{} has no closed ticket", r.id)))?;
    let dir = tempfile::tempdir().map_err(fail("temporary directory"))?;
    let copy = dir.path().join(format!("{}-tampered.sqlite", r.id));
    rempart_db::with_pool!(r.store().db(), pool => {
        sqlx::query(&format!("VACUUM INTO '{}'", copy.display()))
            .execute(pool).await.map_err(fail("copy the register's file"))?;
    });
    let path = copy.display().to_string();
    let original = std::fs::read(&copy).map_err(fail("read the copy"))?;
    // The payload text may also sit in freed space of a page: change the
    // copy whose change shows in the row.
    let text = target.payload.to_string();
    let needle = b"\"montantTotal\":";
    let Some(digit) = text
        .find("\"montantTotal\":")
        .map(|p| p + needle.len())
        .filter(|&p| text.as_bytes().get(p).is_some_and(u8::is_ascii_digit))
    else {
        println!(
            "{}'s close at position {} has no total",
            r.id, target.position
        );
        return Ok(false);
    };
    let mut changed = None;
    let mut from = 0;
    while let Some(hit) = original[from..]
        .windows(text.len())
        .position(|w| w == text.as_bytes())
    {
        let at = from + hit + digit;
        from = at;
        let mut bytes = original.clone();
        let was = bytes[at];
        bytes[at] = if was == b'9' { b'1' } else { was + 1 };
        std::fs::write(&copy, &bytes).map_err(fail("write the copy"))?;
        let db = open_for_verify(&path)
            .await
            .map_err(fail("open the copy"))?;
        let now: Option<String> = rempart_db::with_pool!(&db, pool => {
            sqlx::query_scalar("SELECT payload FROM events WHERE global_position = $1")
                .bind(target.position as i64).fetch_optional(pool).await.ok().flatten()
        });
        db.close().await;
        if now.is_some_and(|p| p != text) {
            changed = Some((at, was, bytes[at]));
            break;
        }
    }
    let Some((at, was, now)) = changed else {
        println!(
            "the close at position {} was not found in {}'s file",
            target.position, r.id
        );
        return Ok(false);
    };
    println!(
        "  {}'s file copied; byte {at} changed from '{}' to '{}' (the total of the ticket closed at position {})",
        r.id, was as char, now as char, target.position
    );
    let db = open_for_verify(&path)
        .await
        .map_err(fail("open the copy"))?;
    let report = verify(&db, &VerifyOptions::default())
        .await
        .map_err(fail("verify the copy"))?;
    db.close().await;
    let ok = match report.findings.first() {
        Some(f) => {
            println!("  verify on the copy: {f}");
            f.position == Some(target.position)
        }
        None => {
            println!("  verify on the copy: intact");
            false
        }
    };
    println!(
        "a tampered copy fails verify at that record: {}",
        verdict(ok)
    );
    Ok(ok)
}
