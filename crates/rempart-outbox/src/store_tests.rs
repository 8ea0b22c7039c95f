//! The PostgreSQL claim's cost follows the rows it claims, not the backlog
//! (real PostgreSQL; counts rows read in the executed plan, not time).

use rempart_db::test_support::TestDb;
use rempart_db::with_pool;
use serde_json::Value;

use super::CLAIM_POSTGRES;
use crate::schema::OUTBOX_SCHEMA;

const BACKLOG: u64 = 2_000;
const HEADS: u64 = 10;

/// Rows every node of an executed plan produced or threw away, over all
/// its loops: the work a claim did.
fn rows_read(node: &Value) -> f64 {
    let n = |k: &str| node.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let loops = n("Actual Loops").max(1.0);
    let own =
        (n("Actual Rows") + n("Rows Removed by Filter") + n("Rows Removed by Join Filter")) * loops;
    let children = node
        .get("Plans")
        .and_then(Value::as_array)
        .map_or(0.0, |p| p.iter().map(rows_read).sum());
    own + children
}

/// `BACKLOG` pending rows, one aggregate each, created a millisecond apart.
fn backlog_sql() -> String {
    format!(
        "INSERT INTO outbox (id, aggregate_type, aggregate_id, seq, event_type, payload, created_at)
         SELECT gen_random_uuid(), 'order', 'o' || g, 1, 'OrderCreated', '{{}}',
                now() + g * interval '1 millisecond'
         FROM generate_series(1, {BACKLOG}) g"
    )
}

/// The claim for `HEADS` aggregates on `db`'s outbox, run under EXPLAIN
/// ANALYZE on one connection after `setup`; `prepared`: through a prepared
/// statement whose plan was cached while the table was drained (what a
/// running relay's connection holds when a backlog forms).
async fn claim_rows_read(setup: &str, prepared: bool) -> f64 {
    let t = TestDb::postgres().await.expect("PostgreSQL on 5432");
    t.db.migrate(&OUTBOX_SCHEMA).await.unwrap();
    let plan: Value = with_pool!(t.db, pool => {
        let mut conn = pool.acquire().await.unwrap();
        sqlx::raw_sql(setup).execute(&mut *conn).await.unwrap();
        let claim = CLAIM_POSTGRES
            .replace("$1", "9000000000000")
            .replace("$2", &HEADS.to_string())
            .replace("$3", "16");
        let explained = if prepared {
            let prepare = format!(
                "PREPARE claim(bigint, bigint, bigint) AS {CLAIM_POSTGRES}"
            );
            sqlx::raw_sql(&prepare).execute(&mut *conn).await.unwrap();
            // Past the first five runs PostgreSQL may keep a generic plan.
            for _ in 0..8 {
                sqlx::raw_sql("EXECUTE claim(9000000000000, 10, 16)")
                    .execute(&mut *conn)
                    .await
                    .unwrap();
            }
            sqlx::raw_sql(&backlog_sql()).execute(&mut *conn).await.unwrap();
            "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE claim(9000000000000, 10, 16)".to_owned()
        } else {
            sqlx::raw_sql(&backlog_sql()).execute(&mut *conn).await.unwrap();
            format!("EXPLAIN (ANALYZE, FORMAT JSON) {claim}")
        };
        sqlx::query_scalar(&explained).fetch_one(&mut *conn).await.unwrap()
    });
    let root = &plan[0]["Plan"];
    let claimed = root["Actual Rows"].as_f64().unwrap();
    assert_eq!(claimed, HEADS as f64, "one row per head claimed");
    rows_read(root)
}

/// A claim of 10 heads reads a few rows per head, never the whole backlog
/// per head: the join-shaped claim (`NOT EXISTS` and a window) read the
/// 2,000 pending rows for each head here (82,060 rows counted), and at
/// 1,000 heads a backlog of 4,000 cost it 2 s a claim.
async fn assert_claim_stays_small(setup: &str, prepared: bool) {
    let read = claim_rows_read(setup, prepared).await;
    assert!(
        read < (BACKLOG / 4) as f64,
        "a claim of {HEADS} heads read {read} rows of a {BACKLOG}-row backlog"
    );
}

#[tokio::test]
async fn a_claim_on_a_new_table_reads_its_heads_not_the_backlog() {
    assert_claim_stays_small("SELECT 1", false).await;
    assert_claim_stays_small("SELECT 1", true).await;
}

#[tokio::test]
async fn a_claim_on_a_table_analyzed_while_drained_reads_its_heads_not_the_backlog() {
    // The usual state: much history, statistics saying nothing is pending.
    let history =
        "INSERT INTO outbox (id, aggregate_type, aggregate_id, seq, event_type, payload, state)
         SELECT gen_random_uuid(), 'order', 'h' || g, 1, 'OrderCreated', '{}', 'published'
         FROM generate_series(1, 20000) g;
         ANALYZE outbox;";
    assert_claim_stays_small(history, false).await;
    assert_claim_stays_small(history, true).await;
}
