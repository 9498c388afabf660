//! Step: what a running run did, appended under its lease. One statement writes the steps
//! of many runs (and moves each run's resume point, next sequence number and tool-call
//! count, and model token counts), so both or neither happen for each run; heartbeats are batched the same way.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::Lease;
use crate::batch::BatchError;
use crate::ids::RunId;
use crate::runs::steps::{Role, StepKind};

/// A step about to be written.
#[derive(Clone, Debug)]
pub struct NewStep {
    /// What it is.
    pub kind: StepKind,
    /// Who it speaks for.
    pub role: Role,
    /// Text, if any.
    pub content: Option<String>,
    /// Tool name.
    pub tool_name: Option<String>,
    /// Links a result to its call.
    pub tool_call_id: Option<String>,
    /// Tool arguments.
    pub arguments: Option<Value>,
    /// Tool result.
    pub result: Option<Value>,
}

impl NewStep {
    /// A step with only a kind, a role and maybe text.
    pub fn new(kind: StepKind, role: Role, content: Option<String>) -> Self {
        Self {
            kind,
            role,
            content,
            tool_name: None,
            tool_call_id: None,
            arguments: None,
            result: None,
        }
    }
}

/// Steps of one run to append (possibly none: then only the resume point moves).
#[derive(Clone, Debug)]
pub struct StepWrite {
    /// The writer's lease.
    pub lease: Lease,
    /// The runtime's resume point after these steps.
    pub position: i32,
    /// The run's latest reply, if it changed.
    pub output: Option<String>,
    /// The steps, in order.
    pub steps: Vec<NewStep>,
    /// Model tokens these steps consumed (prompt), added to the run's count.
    pub input_tokens: i64,
    /// Model tokens these steps produced (completion), added to the run's count.
    pub output_tokens: i64,
}

impl StepWrite {
    /// How many of its steps are tool calls (runs count them for their usage).
    pub(crate) fn tool_calls(&self) -> i32 {
        self.steps
            .iter()
            .filter(|s| s.kind == StepKind::ToolCall)
            .count() as i32
    }
}

/// The steps of some writes as the ten arrays a statement inserts from, bound last (after
/// `first` other parameters), in the order `INSERT_STEPS` expects.
pub(crate) struct StepRows<'a> {
    ids: Vec<Uuid>,
    runs: Vec<RunId>,
    idx: Vec<i32>,
    kinds: Vec<StepKind>,
    roles: Vec<Role>,
    contents: Vec<Option<&'a str>>,
    tools: Vec<Option<&'a str>>,
    call_ids: Vec<Option<&'a str>>,
    args: Vec<Option<&'a Value>>,
    results: Vec<Option<&'a Value>>,
}

impl<'a> StepRows<'a> {
    pub(crate) fn of(writes: impl Iterator<Item = &'a StepWrite>) -> Self {
        let steps: Vec<(RunId, i32, &NewStep)> = writes
            .flat_map(|w| {
                w.steps
                    .iter()
                    .enumerate()
                    .map(move |(i, s)| (w.lease.run, i as i32, s))
            })
            .collect();
        Self {
            ids: steps.iter().map(|_| Uuid::now_v7()).collect(),
            runs: steps.iter().map(|s| s.0).collect(),
            idx: steps.iter().map(|s| s.1).collect(),
            kinds: steps.iter().map(|s| s.2.kind).collect(),
            roles: steps.iter().map(|s| s.2.role).collect(),
            contents: steps.iter().map(|s| s.2.content.as_deref()).collect(),
            tools: steps.iter().map(|s| s.2.tool_name.as_deref()).collect(),
            call_ids: steps.iter().map(|s| s.2.tool_call_id.as_deref()).collect(),
            args: steps.iter().map(|s| s.2.arguments.as_ref()).collect(),
            results: steps.iter().map(|s| s.2.result.as_ref()).collect(),
        }
    }

    pub(crate) fn bind<'q, O>(
        &'q self,
        q: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
        q.bind(&self.ids)
            .bind(&self.runs)
            .bind(&self.idx)
            .bind(&self.kinds)
            .bind(&self.roles)
            .bind(&self.contents)
            .bind(&self.tools)
            .bind(&self.call_ids)
            .bind(&self.args)
            .bind(&self.results)
    }
}

/// The steps' rows, from the arrays [`StepRows`] binds at `$n..$n+9`, as
/// `s(id, run_id, idx, kind, role, content, tool_name, tool_call_id, arguments, result)`.
pub(crate) fn step_rows_sql(n: usize) -> String {
    let types = [
        "uuid[]", "uuid[]", "int[]", "text[]", "text[]", "text[]", "text[]", "text[]", "jsonb[]",
        "jsonb[]",
    ];
    let args: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}", n + i))
        .collect();
    format!(
        "unnest({}) AS s(id, run_id, idx, kind, role, content, tool_name, tool_call_id, arguments, result)",
        args.join(", ")
    )
}

/// Outcome of a write under a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// Written; the first new step's sequence number, and whether a cancel was requested.
    Ok {
        /// Sequence number of the first step written.
        first_seq: i32,
        /// A cancel was requested meanwhile.
        cancel_requested: bool,
    },
    /// The lease is gone: another worker holds the run, or it ended.
    Lost,
}

/// Writes a batch; a run that appears twice is written in a second round, after the first.
pub(super) async fn write_batch(
    conn: &mut PgConnection,
    writes: &[StepWrite],
) -> Result<Vec<Written>, BatchError> {
    let all: Vec<&StepWrite> = writes.iter().collect();
    Ok(write_rounds(conn, &all).await?)
}

/// [`write_in`] for writes that may name a run more than once: in rounds of distinct runs,
/// in order.
pub(crate) async fn write_rounds(
    conn: &mut PgConnection,
    writes: &[&StepWrite],
) -> Result<Vec<Written>, sqlx::Error> {
    let mut out = vec![Written::Lost; writes.len()];
    let mut todo: Vec<usize> = (0..writes.len()).collect();
    while !todo.is_empty() {
        let mut seen = HashSet::new();
        let (round, later): (Vec<usize>, Vec<usize>) = todo
            .into_iter()
            .partition(|i| seen.insert(writes[*i].lease.run));
        let batch: Vec<&StepWrite> = round.iter().map(|i| writes[*i]).collect();
        let written = write_in(conn, &batch).await?;
        for (i, w) in round.into_iter().zip(written) {
            out[i] = w;
        }
        todo = later;
    }
    Ok(out)
}

/// The write statement, on a given connection or transaction; runs must be distinct.
pub(crate) async fn write_in(
    conn: &mut PgConnection,
    writes: &[&StepWrite],
) -> Result<Vec<Written>, sqlx::Error> {
    let runs: Vec<RunId> = writes.iter().map(|w| w.lease.run).collect();
    let attempts: Vec<i32> = writes.iter().map(|w| w.lease.attempt).collect();
    let counts: Vec<i32> = writes.iter().map(|w| w.steps.len() as i32).collect();
    let positions: Vec<i32> = writes.iter().map(|w| w.position).collect();
    let outputs: Vec<Option<&str>> = writes.iter().map(|w| w.output.as_deref()).collect();
    let input_tokens: Vec<i64> = writes.iter().map(|w| w.input_tokens).collect();
    let output_tokens: Vec<i64> = writes.iter().map(|w| w.output_tokens).collect();
    let tool_calls: Vec<i32> = writes.iter().map(|w| w.tool_calls()).collect();
    let rows_of_steps = StepRows::of(writes.iter().copied());
    let sql = format!(
        "WITH d AS (
            SELECT * FROM unnest($1::uuid[], $2::int[], $3::int[], $4::int[], $5::text[], $6::int[],
                                 $17::bigint[], $18::bigint[])
                AS d(id, attempt, n, position, output, tool_calls, input_tokens, output_tokens)
         ), r AS (
            UPDATE runs SET next_seq = runs.next_seq + d.n, script_pos = d.position, heartbeat_at = now(),
                   output = coalesce(d.output, runs.output), tool_calls = runs.tool_calls + d.tool_calls,
                   input_tokens = runs.input_tokens + d.input_tokens,
                   output_tokens = runs.output_tokens + d.output_tokens
            FROM d
            WHERE runs.id = d.id AND runs.attempts = d.attempt AND runs.status = 'running'
            RETURNING runs.id, runs.team_id, runs.agent_id, runs.next_seq - d.n AS first_seq, runs.cancel_requested
         ), ins AS (
            INSERT INTO run_steps (id, run_id, seq, team_id, agent_id, kind, role, content, tool_name, tool_call_id, arguments, result)
            SELECT s.id, r.id, r.first_seq + s.idx, r.team_id, r.agent_id, s.kind, s.role, s.content,
                   s.tool_name, s.tool_call_id, s.arguments, s.result
            FROM {steps}
            JOIN r ON r.id = s.run_id
         )
         SELECT id, first_seq, cancel_requested FROM r",
        steps = step_rows_sql(7)
    );
    let query = sqlx::query_as(&sql)
        .bind(&runs)
        .bind(&attempts)
        .bind(&counts)
        .bind(&positions)
        .bind(&outputs)
        .bind(&tool_calls);
    let rows: Vec<(RunId, i32, bool)> = rows_of_steps
        .bind(query)
        .bind(&input_tokens)
        .bind(&output_tokens)
        .fetch_all(&mut *conn)
        .await?;
    let by_run: HashMap<RunId, (i32, bool)> =
        rows.into_iter().map(|(id, s, c)| (id, (s, c))).collect();
    Ok(runs
        .iter()
        .map(|r| match by_run.get(r) {
            Some(&(first_seq, cancel_requested)) => Written::Ok {
                first_seq,
                cancel_requested,
            },
            None => Written::Lost,
        })
        .collect())
}

/// Shows life for many runs at once. Rows another statement holds right now (a step write or
/// an ending of the same run, which set `heartbeat_at` themselves) are skipped, not waited
/// for: a batch of thousands of heartbeats must never lock rows in an order that deadlocks
/// with the writers. A skipped lease is classified by a plain read.
pub(super) async fn heartbeat_batch(
    conn: &mut PgConnection,
    leases: &[Lease],
) -> Result<Vec<Written>, BatchError> {
    let runs: Vec<RunId> = leases.iter().map(|l| l.run).collect();
    let attempts: Vec<i32> = leases.iter().map(|l| l.attempt).collect();
    let beat: Vec<(RunId, i32, bool)> = sqlx::query_as(
        "UPDATE runs SET heartbeat_at = now()
         WHERE id IN (
            SELECT r.id FROM runs r JOIN unnest($1::uuid[], $2::int[]) AS d(id, attempt)
              ON r.id = d.id AND r.attempts = d.attempt
            WHERE r.status = 'running'
            ORDER BY r.id FOR NO KEY UPDATE OF r SKIP LOCKED)
         RETURNING id, attempts, cancel_requested",
    )
    .bind(&runs)
    .bind(&attempts)
    .fetch_all(&mut *conn)
    .await?;
    let mut alive: HashMap<(RunId, i32), bool> =
        beat.into_iter().map(|(r, a, c)| ((r, a), c)).collect();
    let skipped: Vec<RunId> = leases
        .iter()
        .filter(|l| !alive.contains_key(&(l.run, l.attempt)))
        .map(|l| l.run)
        .collect();
    if !skipped.is_empty() {
        let rows: Vec<(RunId, i32, bool)> = sqlx::query_as(
            "SELECT id, attempts, cancel_requested FROM runs WHERE id = ANY($1) AND status = 'running'",
        )
        .bind(&skipped)
        .fetch_all(&mut *conn)
        .await?;
        alive.extend(rows.into_iter().map(|(r, a, c)| ((r, a), c)));
    }
    Ok(leases
        .iter()
        .map(|l| match alive.get(&(l.run, l.attempt)) {
            Some(&cancel_requested) => Written::Ok {
                first_seq: 0,
                cancel_requested,
            },
            None => Written::Lost,
        })
        .collect())
}
