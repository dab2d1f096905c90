//! The schema, embedded: each migration applied once, in order, in its own
//! transaction, while this session holds the receivers' migration lock, so
//! that receivers starting together neither race nor apply one twice.

use tokio_postgres::Client;

/// The session advisory lock every receiver takes to migrate ("fixgate" in
/// ASCII, as a number).
pub const MIGRATION_LOCK: i64 = 0x0066_6978_6761_7465;

/// The migrations, by version.
pub const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("migrations/0001_schema.sql"))];

/// Brings the database's schema up to date; returns the versions it applied
/// (none when another receiver had already done it).
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, tokio_postgres::Error> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let applied = apply(client).await;
    // A lost connection releases the lock anyway.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let applied = applied?;
    unlocked?;
    Ok(applied)
}

async fn apply(client: &mut Client) -> Result<Vec<i32>, tokio_postgres::Error> {
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS fixgate;
             CREATE TABLE IF NOT EXISTS fixgate.schema_migrations (
                 version    integer     PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );",
        )
        .await?;
    let done: Vec<i32> = client
        .query("SELECT version FROM fixgate.schema_migrations", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut applied = Vec::new();
    for &(version, sql) in MIGRATIONS {
        if done.contains(&version) {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO fixgate.schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version, "schema migration applied");
        applied.push(version);
    }
    Ok(applied)
}
