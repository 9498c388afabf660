//! Postgres: the system of record. Pools and the embedded migrations.

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};

/// The migrations in `migrations/`, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Opens a pool. Connecting is lazy-checked once here so a wrong URL fails at start-up.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    connect_with(url, max_connections, Duration::from_secs(10)).await
}

/// Opens a pool whose checkouts give up after `acquire_timeout` (the API keeps it short, so
/// a database at its connection limit answers 503 quickly instead of holding requests).
pub async fn connect_with(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        // A ping before every checkout doubles the round trips; a broken connection is found
        // by the statement itself and replaced.
        .test_before_acquire(false)
        .connect(url)
        .await
}

/// The SQL functions, defined once (see the file's header).
pub const FUNCTIONS: &str = include_str!("../sql/functions.sql");

/// Applies pending migrations, then (re)defines the SQL functions. Safe to run from several
/// processes at once (sqlx takes an advisory lock; the functions are applied in one
/// transaction under another) and idempotent.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await?;
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('agentq_functions'))")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(FUNCTIONS).execute(&mut *tx).await?;
    tx.commit().await?;
    // The partitions of the coming weeks, so writes never lack one even before a scheduler
    // has run (the scheduler keeps them ahead from then on).
    sqlx::query(
        "SELECT agentq_ensure_partitions(t, now(), now() + interval '8 weeks')
         FROM unnest(ARRAY['run_steps', 'request_logs', 'webhook_attempts', 'audit_logs']) t",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Whether an error is the unique violation of the named constraint.
pub fn is_unique_violation(err: &sqlx::Error, constraint: &str) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.is_unique_violation() && db.constraint() == Some(constraint))
}
