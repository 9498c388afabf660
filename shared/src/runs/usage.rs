//! Usage: one record per finished run (duration, steps, tool calls, tokens), summed by day
//! and by agent for `GET /usage`.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::ids::{AgentId, TeamId};

/// Sums over some runs.
#[derive(Debug, Default, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Totals {
    /// Finished runs.
    pub runs: i64,
    /// Summed run time.
    pub duration_ms: i64,
    /// Steps written.
    pub steps: i64,
    /// Tool calls made.
    pub tool_calls: i64,
    /// Input tokens (runtimes that report them).
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
}

/// Sums for one day (UTC).
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DayTotals {
    /// The day.
    pub date: NaiveDate,
    #[sqlx(flatten)]
    #[serde(flatten)]
    /// Its sums.
    pub totals: Totals,
}

/// Sums for one agent.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AgentTotals {
    /// The agent.
    pub agent_id: AgentId,
    #[sqlx(flatten)]
    #[serde(flatten)]
    /// Its sums.
    pub totals: Totals,
}

/// The usage report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = UsageReport)]
pub struct Report {
    /// Start of the range.
    pub from: DateTime<Utc>,
    /// End of the range (exclusive).
    pub to: DateTime<Utc>,
    /// Over the whole range.
    pub totals: Totals,
    /// Per day, oldest first.
    pub by_day: Vec<DayTotals>,
    /// Per agent.
    pub by_agent: Vec<AgentTotals>,
}

const SUMS: &str = "count(*)::bigint AS runs, coalesce(sum(duration_ms), 0)::bigint AS duration_ms, \
    coalesce(sum(steps), 0)::bigint AS steps, coalesce(sum(tool_calls), 0)::bigint AS tool_calls, \
    coalesce(sum(input_tokens), 0)::bigint AS input_tokens, coalesce(sum(output_tokens), 0)::bigint AS output_tokens";

const SCOPE: &str = "team_id = $1 AND created_at >= $2 AND created_at < $3 \
    AND ($4::uuid IS NULL OR agent_id = $4) AND ($5::uuid[] IS NULL OR agent_id = ANY($5))";

/// Sums a team's usage in `[from, to)`, optionally for one agent or a set of agents.
pub async fn report<'c, E>(
    db: E,
    team: TeamId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    agent: Option<AgentId>,
    only: Option<&[Uuid]>,
) -> Result<Report, sqlx::Error>
where
    E: PgExecutor<'c> + Copy,
{
    let totals: Totals = sqlx::query_as(&format!("SELECT {SUMS} FROM usage_records WHERE {SCOPE}"))
        .bind(team)
        .bind(from)
        .bind(to)
        .bind(agent)
        .bind(only)
        .fetch_one(db)
        .await?;
    let by_day: Vec<DayTotals> = sqlx::query_as(&format!(
        "SELECT (created_at AT TIME ZONE 'UTC')::date AS date, {SUMS} FROM usage_records WHERE {SCOPE}
         GROUP BY 1 ORDER BY 1"
    ))
    .bind(team)
    .bind(from)
    .bind(to)
    .bind(agent)
    .bind(only)
    .fetch_all(db)
    .await?;
    let by_agent: Vec<AgentTotals> = sqlx::query_as(&format!(
        "SELECT agent_id, {SUMS} FROM usage_records WHERE {SCOPE} GROUP BY agent_id ORDER BY agent_id"
    ))
    .bind(team)
    .bind(from)
    .bind(to)
    .bind(agent)
    .bind(only)
    .fetch_all(db)
    .await?;
    Ok(Report {
        from,
        to,
        totals,
        by_day,
        by_agent,
    })
}
