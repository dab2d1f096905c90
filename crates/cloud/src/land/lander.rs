//! One batch, one transaction: partitions it needs, its fixes, its events,
//! the coverage and the latest positions, then COMMIT. Only a committed
//! batch is landed; an error anywhere rolls all of it back.

use std::collections::HashSet;
use std::sync::Mutex;

use deadpool_postgres::{Pool, PoolError, Transaction};
use tokio_postgres::error::SqlState;

use super::rows::{Month, Rows};
use super::sql;

/// What a committed batch brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Landed {
    /// Records inserted.
    pub new: u64,
    /// Records already in the database.
    pub duplicates: u64,
}

/// Why a batch did not land. Every case may succeed when tried again.
#[derive(Debug, thiserror::Error)]
pub enum LandError {
    /// No connection from the pool (the database is down or refuses us).
    #[error("no database connection: {0}")]
    Connect(#[from] PoolError),
    /// A statement failed; the transaction is rolled back.
    #[error("database error: {0}")]
    Query(#[source] tokio_postgres::Error),
    /// COMMIT did not answer: the batch may or may not be in.
    #[error("commit outcome unknown: {0}")]
    Commit(#[source] tokio_postgres::Error),
}

impl LandError {
    /// The label of `fixgate_receive_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Query(_) => "query",
            Self::Commit(_) => "commit",
        }
    }
}

/// Lands batches through a pool; share it behind an `Arc`.
pub struct Lander {
    pool: Pool,
    /// Months whose partition is known to exist (committed).
    months: Mutex<HashSet<Month>>,
}

impl Lander {
    /// A lander on `pool` (the schema already migrated).
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            months: Mutex::new(HashSet::new()),
        }
    }

    /// The pool, for health checks.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Lands one checked batch of `gateway` in one transaction.
    pub async fn land(&self, gateway: &str, rows: &Rows) -> Result<Landed, LandError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await.map_err(LandError::Query)?;
        let missing: Vec<Month> = {
            let known = self.months.lock().unwrap_or_else(|e| e.into_inner());
            rows.months
                .iter()
                .filter(|m| !known.contains(m))
                .copied()
                .collect()
        };
        for &month in &missing {
            ensure_partition(&tx, month)
                .await
                .map_err(LandError::Query)?;
        }
        let new = match insert(&tx, gateway, rows).await {
            Ok(new) => new,
            Err(err) => {
                if err.code() == Some(&SqlState::CHECK_VIOLATION) {
                    // "No partition of relation found for row": a month
                    // dropped or detached by the operator since it was
                    // made; check every month again on the retry.
                    self.months
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clear();
                }
                return Err(LandError::Query(err));
            }
        };
        tx.commit().await.map_err(LandError::Commit)?;
        if !missing.is_empty() {
            let mut known = self.months.lock().unwrap_or_else(|e| e.into_inner());
            known.extend(missing);
        }
        let total = rows.records() as u64;
        Ok(Landed {
            new,
            duplicates: total.saturating_sub(new),
        })
    }
}

/// Creates `month`'s partition unless it exists. The transaction lock on
/// the month makes receivers landing the same new month take turns: the
/// second sees the first's committed table and creates nothing.
async fn ensure_partition(tx: &Transaction<'_>, month: Month) -> Result<(), tokio_postgres::Error> {
    tx.execute(sql::LOCK_MONTH, &[&sql::PARTITION_LOCK, &month.key()])
        .await?;
    let table = month.table();
    let exists: bool = tx
        .query_one(sql::TABLE_EXISTS, &[&format!("fixgate.{table}")])
        .await?
        .get(0);
    if !exists {
        // Names and bounds come from numbers, never from input text.
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS fixgate.{table} PARTITION OF fixgate.fix \
             FOR VALUES FROM ('{}') TO ('{}')",
            month.start(),
            month.end()
        ))
        .await?;
    }
    Ok(())
}

/// The batch's statements; returns the records inserted.
async fn insert(
    tx: &Transaction<'_>,
    gateway: &str,
    rows: &Rows,
) -> Result<u64, tokio_postgres::Error> {
    let statement = tx.prepare_cached(sql::LOCK_COVERAGE).await?;
    tx.execute(&statement, &[&gateway]).await?;
    let mut new = 0;
    let f = &rows.fixes;
    if !f.is_empty() {
        let statement = tx.prepare_cached(sql::INSERT_FIXES).await?;
        new += tx
            .execute(
                &statement,
                &[
                    &gateway,
                    &f.seq,
                    &f.device,
                    &f.time,
                    &f.lat,
                    &f.lon,
                    &f.alt,
                    &f.speed,
                    &f.course,
                    &f.hdop,
                    &f.sats,
                    &f.mode,
                    &f.accuracy,
                    &f.historic,
                    &rows.batch,
                ],
            )
            .await?;
    }
    let e = &rows.events;
    if !e.is_empty() {
        let statement = tx.prepare_cached(sql::INSERT_EVENTS).await?;
        new += tx
            .execute(
                &statement,
                &[
                    &gateway,
                    &e.seq,
                    &e.device,
                    &e.time,
                    &e.kind,
                    &e.data,
                    &e.lat,
                    &e.lon,
                    &rows.batch,
                ],
            )
            .await?;
    }
    // Before the coverage grows by this batch: the latest positions take
    // only numbers not covered before it.
    let l = &rows.live;
    if !l.is_empty() {
        let statement = tx.prepare_cached(sql::UPDATE_LATEST).await?;
        tx.execute(
            &statement,
            &[
                &gateway, &l.device, &l.seq, &l.time, &l.lat, &l.lon, &l.alt, &l.speed, &l.course,
            ],
        )
        .await?;
    }
    if !rows.covered.0.is_empty() {
        let statement = tx.prepare_cached(sql::ADD_COVERAGE).await?;
        tx.execute(&statement, &[&gateway, &rows.covered.0, &rows.covered.1])
            .await?;
    }
    Ok(new)
}
