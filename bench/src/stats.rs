//! Server-side counters read before and after a phase: Redis `INFO commandstats`, Postgres
//! `pg_stat_database`, and `pg_stat_statements` when the server has it loaded.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use sqlx::{Connection, PgConnection, Row};

/// Redis commands executed so far, by name, server-wide (all clients, all databases;
/// commands run inside Lua scripts are counted too).
pub(crate) async fn redis_commandstats(
    conn: &mut redis::aio::MultiplexedConnection,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .context("INFO commandstats")?;
    Ok(parse_commandstats(&info))
}

fn parse_commandstats(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("cmdstat_")?;
            let (name, fields) = rest.split_once(':')?;
            let calls = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// `after - before` per command, without zeros.
pub(crate) fn delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// The `n` largest entries, largest first.
pub(crate) fn top(map: &BTreeMap<String, u64>, n: usize) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

/// Counters of one database from `pg_stat_database`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PgDbStats {
    /// `xact_commit + xact_rollback`.
    pub(crate) transactions: i64,
    pub(crate) tup_inserted: i64,
    pub(crate) tup_updated: i64,
    pub(crate) tup_deleted: i64,
}

impl PgDbStats {
    pub(crate) fn since(self, earlier: PgDbStats) -> PgDbStats {
        PgDbStats {
            transactions: self.transactions - earlier.transactions,
            tup_inserted: self.tup_inserted - earlier.tup_inserted,
            tup_updated: self.tup_updated - earlier.tup_updated,
            tup_deleted: self.tup_deleted - earlier.tup_deleted,
        }
    }
}

/// Reads `pg_stat_database` for `db_name` over `admin` (a connection to another database,
/// so reading does not count in the figures). Backends report their counters late: at the
/// next transaction a second after the last report, or, once idle, up to 10 s later
/// (PGSTAT_IDLE_INTERVAL); read [`PG_STATS_SETTLE`] after the activity to see all of it.
pub(crate) async fn pg_db_stats(
    admin: &mut PgConnection,
    db_name: &str,
) -> anyhow::Result<PgDbStats> {
    read_db_stats(admin, db_name).await
}

/// How long after activity `pg_stat_database` is complete (see [`pg_db_stats`]).
pub(crate) const PG_STATS_SETTLE: Duration = Duration::from_secs(11);

async fn read_db_stats(conn: &mut PgConnection, db_name: &str) -> anyhow::Result<PgDbStats> {
    let row = sqlx::query(
        "SELECT (xact_commit + xact_rollback)::int8, tup_inserted::int8, tup_updated::int8, tup_deleted::int8
         FROM pg_stat_database WHERE datname = $1",
    )
    .bind(db_name)
    .fetch_one(conn)
    .await
    .context("reading pg_stat_database")?;
    Ok(PgDbStats {
        transactions: row.try_get(0)?,
        tup_inserted: row.try_get(1)?,
        tup_updated: row.try_get(2)?,
        tup_deleted: row.try_get(3)?,
    })
}

/// Whether `pg_stat_statements` can be used in the bench database, and why not.
pub(crate) enum PgStatStatements {
    Usable,
    Unavailable(String),
}

/// Looks for the extension in the (throwaway) bench database; if it is not there, tries to
/// create it there, then checks that its view can be read (it needs
/// `shared_preload_libraries`).
pub(crate) async fn probe_pg_stat_statements(conn: &mut PgConnection) -> PgStatStatements {
    let installed: Result<Option<i32>, _> =
        sqlx::query_scalar("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'")
            .fetch_optional(&mut *conn)
            .await;
    match installed {
        Ok(Some(_)) => {}
        Ok(None) => {
            if let Err(e) = sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                .execute(&mut *conn)
                .await
            {
                return PgStatStatements::Unavailable(format!(
                    "not installed, and CREATE EXTENSION failed: {}",
                    db_message(&e)
                ));
            }
        }
        Err(e) => return PgStatStatements::Unavailable(db_message(&e)),
    }
    match sqlx::query("SELECT calls FROM pg_stat_statements LIMIT 1")
        .fetch_optional(&mut *conn)
        .await
    {
        Ok(_) => PgStatStatements::Usable,
        Err(e) => PgStatStatements::Unavailable(db_message(&e)),
    }
}

/// Calls per statement in the bench database from `pg_stat_statements` (top-level
/// statements; a plpgsql function call counts once).
pub(crate) async fn pg_statement_calls(
    conn: &mut PgConnection,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let rows = sqlx::query(
        "SELECT query, sum(calls)::int8 FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
         GROUP BY query",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out = BTreeMap::new();
    for row in rows {
        let query: String = row.try_get(0)?;
        let calls: i64 = row.try_get(1)?;
        let label = query.split_whitespace().collect::<Vec<_>>().join(" ");
        *out.entry(label.chars().take(90).collect()).or_default() += calls as u64;
    }
    Ok(out)
}

/// The server's message of a database error, or the error itself.
pub(crate) fn db_message(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.message().to_owned(),
        other => other.to_string(),
    }
}

/// A plain connection to the stack's database.
pub(crate) async fn connect(url: &str) -> anyhow::Result<PgConnection> {
    PgConnection::connect(url)
        .await
        .with_context(|| format!("cannot connect to {url}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commandstats_are_parsed_and_subtracted() {
        let before = parse_commandstats(
            "# Commandstats\r\ncmdstat_xadd:calls=10,usec=5,usec_per_call=0.5,rejected_calls=0,failed_calls=0\r\ncmdstat_xgroup|create:calls=2,usec=1\r\n",
        );
        assert_eq!(before["xadd"], 10);
        assert_eq!(before["xgroup|create"], 2);
        let after = parse_commandstats("cmdstat_xadd:calls=15,usec=9\r\ncmdstat_xack:calls=4,usec=1\r\ncmdstat_xgroup|create:calls=2,usec=1\r\n");
        let d = delta(&before, &after);
        assert_eq!(d.len(), 2);
        assert_eq!(d["xadd"], 5);
        assert_eq!(top(&d, 1), vec![("xadd".to_owned(), 5)]);
    }
}
