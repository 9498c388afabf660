//! The step loop: ask the runtime for the next action, persist it under the lease, ring the
//! run's doorbell, repeat; stop at the end, on cancel, at the deadline, when the lease is
//! lost, or at a tool call that needs a person's approval (the run then waits durably and
//! the job ends; the decision puts it back on the queue and this loop resumes it, recording
//! the call's result once). A heartbeat keeps the lease alive through long sleeps and slow
//! agents.

use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tracing::Instrument;

use agentq_shared::agents::Agent;
use agentq_shared::approvals::policy::Policy;
use agentq_shared::ids::RunId;
use agentq_shared::runs::lifecycle::start::input_text;
use agentq_shared::runs::lifecycle::wait::{self, ApprovalRequest};
use agentq_shared::runs::lifecycle::{Ending, Lease, Lifecycle, NewStep, StepWrite, Written};
use agentq_shared::runs::steps::{self, Role, Step, StepKind};
use agentq_shared::runs::{Run, RunStatus};

use super::JobError;
use crate::context::Ctx;
use crate::runtime::{Action, AnyRuntime, Progress, Runtime};

/// What the heartbeat learned.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Signal {
    Go,
    Cancel,
    Lost,
}

/// How the loop ended.
enum End {
    Finished(RunStatus, Option<String>, Option<String>),
    /// Waiting for a person (the wait handed the agent slot on).
    Waiting,
    Lost,
}

pub(super) async fn execute(
    ctx: &Ctx,
    lease: Lease,
    run: Run,
    agent: std::sync::Arc<Agent>,
) -> Result<(), JobError> {
    if lease.attempt == 1 {
        agentq_shared::metrics::run_started(&agent.runtime, &run);
    }
    let started_at = run.started_at;
    let (tx, mut signal) = watch::channel(Signal::Go);
    let beat = tokio::spawn(heartbeat(
        ctx.lifecycle.clone(),
        ctx.config.heartbeat_every,
        lease,
        tx,
    ));
    let mut tail = None;
    let result = run_steps(ctx, &lease, run, &agent, &mut signal, &mut tail).await;
    beat.abort();
    // A store failure leaves the job pending: it is redelivered and the run resumed from
    // its last persisted step.
    match result? {
        End::Lost => tracing::info!("lease lost; another worker owns the run now"),
        End::Waiting => tracing::info!("run waits for approval"),
        End::Finished(status, output, error) => {
            let mut ending = Ending::finish(&lease, status, output, error);
            ending.steps = tail;
            let finish = ctx
                .lifecycle
                .finish(ending)
                .instrument(tracing::info_span!("run.finish", run_status = %status));
            if Box::pin(finish).await? {
                agentq_shared::metrics::run_finished(&agent.runtime, status, started_at);
                tracing::info!(run_status = %status, "run finished");
            }
        }
    }
    Ok(())
}

/// Keeps the lease alive; a task of its own per run, so it holds only what it needs (not the
/// whole context), and its store call is boxed (it lives only while the beat is written).
async fn heartbeat(lifecycle: Lifecycle, every: Duration, lease: Lease, tx: watch::Sender<Signal>) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let beat = Box::pin(lifecycle.heartbeat(lease));
        match beat.await {
            Ok(Written::Ok {
                cancel_requested: true,
                ..
            }) => {
                let _ = tx.send(Signal::Cancel);
            }
            Ok(Written::Ok { .. }) => {}
            Ok(Written::Lost) => {
                let _ = tx.send(Signal::Lost);
                return;
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

fn step(kind: StepKind, role: Role, content: Option<String>) -> NewStep {
    NewStep::new(kind, role, content)
}

/// The loop's state: where the run is and what it said last.
struct Cursor {
    position: i32,
    last_reply: Option<String>,
    history: Vec<Step>,
    reads_history: bool,
    /// Steps not yet written: a runtime that does not read its history decides its next
    /// action at once, so its steps are written with the next write that must happen anyway
    /// (a sleep, an approval, the finish) instead of one write each.
    pending: Vec<NewStep>,
    /// Model tokens of the pending steps (input, output).
    tokens: (i64, i64),
}

impl Cursor {
    /// The pending steps as a write at the current position, if there are any.
    fn take_pending(&mut self, lease: &Lease) -> Option<StepWrite> {
        if self.pending.is_empty() {
            return None;
        }
        let (input_tokens, output_tokens) = std::mem::take(&mut self.tokens);
        Some(StepWrite {
            lease: *lease,
            position: self.position,
            output: self.last_reply.clone(),
            steps: std::mem::take(&mut self.pending),
            input_tokens,
            output_tokens,
        })
    }
}

impl Cursor {
    async fn refresh(&mut self, ctx: &Ctx, run: RunId) -> Result<(), sqlx::Error> {
        if self.reads_history {
            self.history = steps::after(&ctx.db, run, 0, i64::from(i32::MAX)).await?;
        }
        Ok(())
    }
}

/// Runs the step loop; steps still pending when it finishes are left in `tail`, to be written
/// with the run's ending.
async fn run_steps(
    ctx: &Ctx,
    lease: &Lease,
    run: Run,
    agent: &Agent,
    signal: &mut watch::Receiver<Signal>,
    tail: &mut Option<StepWrite>,
) -> Result<End, JobError> {
    let mut cur = Cursor {
        position: run.script_pos,
        last_reply: run.output.clone(),
        history: Vec::new(),
        reads_history: true,
        pending: Vec::new(),
        tokens: (0, 0),
    };
    let end = step_loop(ctx, lease, run, agent, signal, &mut cur).await;
    *tail = cur.take_pending(lease);
    end
}

async fn step_loop(
    ctx: &Ctx,
    lease: &Lease,
    mut run: Run,
    agent: &Agent,
    signal: &mut watch::Receiver<Signal>,
    cur: &mut Cursor,
) -> Result<End, JobError> {
    // The run as read before the lease was taken; only the lease changed it since.
    run.attempts = lease.attempt;
    run.status = RunStatus::Running;
    let policy: Policy = agent.policy();
    let mut runtime = match AnyRuntime::for_agent(agent, ctx) {
        Ok(r) => r,
        Err(e) => return Ok(End::Finished(RunStatus::Failed, None, Some(e.0))),
    };
    cur.reads_history = runtime.reads_history();
    // The start wrote the input step of a fresh run; a run started before that existed may
    // still lack it.
    if run.next_seq == 1 {
        let first = step(StepKind::Input, Role::User, input_text(&run.input));
        if let Flow::Stop(end) =
            Box::pin(write(ctx, lease, cur.position, None, vec![first], (0, 0))).await?
        {
            return Ok(end);
        }
    }
    // Back from a person's decision: record the call's result before going on. (A run's
    // first execution cannot have one, so it skips the lookup.)
    let resumed = lease.attempt > 1;
    let decided = if resumed {
        Box::pin(wait::decided_approval(&ctx.db, run.id)).await?
    } else {
        None
    };
    if let Some(mut decided) = decided {
        if decided.status == "approved" && decided.result.is_none() {
            // A call recorded without a result (llm): made now that a person said yes, and
            // recorded with the decision, once.
            let call = Box::pin(
                runtime
                    .call_tool(&decided.tool, &decided.arguments)
                    .instrument(tool_span(&decided.tool)),
            );
            match until_deadline(lease, signal, call).await {
                Wait::Done(Ok(r)) => decided.result = Some(r),
                Wait::Done(Err(e)) => return Ok(failed(cur, e.0)),
                Wait::Interrupted(end) => return Ok(end.with_output(cur.last_reply.clone())),
            }
        }
        match Box::pin(wait::apply_decision(&ctx.db, lease, &decided)).await? {
            Written::Lost => return Ok(End::Lost),
            Written::Ok {
                cancel_requested, ..
            } => {
                ctx.lifecycle.doorbell().ring(lease.run);
                if cancel_requested {
                    return Ok(cancelled(cur.last_reply.clone()));
                }
                cur.position = decided.position + 1;
            }
        }
    }
    Box::pin(cur.refresh(ctx, run.id)).await?;
    loop {
        match *signal.borrow() {
            Signal::Cancel => return Ok(cancelled(cur.last_reply.clone())),
            Signal::Lost => return Ok(End::Lost),
            Signal::Go => {}
        }
        let progress = Progress {
            run: &run,
            agent,
            steps: &cur.history,
            position: cur.position as usize,
        };
        // One span per step the runtime takes (a model call of `llm` is its child).
        let next = runtime.next(&progress).instrument(tracing::info_span!(
            "step",
            runtime = %agent.runtime,
            position = cur.position
        ));
        let action = match until_deadline(lease, signal, next).await {
            Wait::Done(Ok(a)) => a,
            Wait::Done(Err(e)) => return Ok(failed(cur, e.0)),
            Wait::Interrupted(end) => return Ok(end.with_output(cur.last_reply.clone())),
        };
        let new_steps = match action {
            Action::Reply(text) => {
                cur.last_reply = Some(text.clone());
                vec![step(StepKind::Message, Role::Assistant, Some(text))]
            }
            Action::Tool {
                name,
                arguments,
                result,
                requires_approval,
            } => {
                if requires_approval || policy.requires(&name, &arguments) {
                    let req = ApprovalRequest {
                        position: cur.position,
                        tool: &name,
                        arguments: &arguments,
                        result: Some(&result),
                        call_id: None,
                        policy: &policy,
                    };
                    return Box::pin(wait_for_person(ctx, lease, cur, req)).await;
                }
                let call_id = format!("call_{}", uuid::Uuid::now_v7().simple());
                vec![
                    NewStep {
                        tool_name: Some(name.clone()),
                        tool_call_id: Some(call_id.clone()),
                        arguments: Some(arguments),
                        ..step(StepKind::ToolCall, Role::Assistant, None)
                    },
                    NewStep {
                        tool_name: Some(name),
                        tool_call_id: Some(call_id),
                        result: Some(result),
                        ..step(StepKind::ToolResult, Role::Tool, None)
                    },
                ]
            }
            Action::Model {
                text,
                calls,
                input_tokens,
                output_tokens,
            } => {
                cur.tokens.0 += input_tokens;
                cur.tokens.1 += output_tokens;
                let mut v = Vec::with_capacity(calls.len() + 1);
                if let Some(text) = text {
                    if calls.is_empty() {
                        cur.last_reply = Some(text.clone());
                    }
                    v.push(step(StepKind::Message, Role::Assistant, Some(text)));
                }
                v.extend(calls.into_iter().map(|c| NewStep {
                    tool_name: Some(c.name),
                    tool_call_id: Some(c.id),
                    arguments: Some(c.arguments),
                    ..step(StepKind::ToolCall, Role::Assistant, None)
                }));
                v
            }
            Action::CallTool {
                call_id,
                name,
                arguments,
                requires_approval,
            } => {
                if requires_approval || policy.requires(&name, &arguments) {
                    // The call is a step already; only the approval is added. The tool is
                    // called by the worker that resumes the run after a yes.
                    let req = ApprovalRequest {
                        position: cur.position,
                        tool: &name,
                        arguments: &arguments,
                        result: None,
                        call_id: Some(&call_id),
                        policy: &policy,
                    };
                    return Box::pin(wait_for_person(ctx, lease, cur, req)).await;
                }
                // Boxed, like the runtime's `next`: the call's state lives only while it runs.
                let call = Box::pin(
                    runtime
                        .call_tool(&name, &arguments)
                        .instrument(tool_span(&name)),
                );
                let result = match until_deadline(lease, signal, call).await {
                    Wait::Done(Ok(r)) => r,
                    Wait::Done(Err(e)) => return Ok(failed(cur, e.0)),
                    Wait::Interrupted(end) => return Ok(end.with_output(cur.last_reply.clone())),
                };
                vec![NewStep {
                    tool_name: Some(name),
                    tool_call_id: Some(call_id),
                    result: Some(result),
                    ..step(StepKind::ToolResult, Role::Tool, None)
                }]
            }
            Action::Sleep(d) => {
                // Whatever happened before the pause is shown during it.
                if let Flow::Stop(end) = Box::pin(flush(ctx, lease, cur)).await? {
                    return Ok(end.with_output(cur.last_reply.clone()));
                }
                if let Wait::Interrupted(end) =
                    until_deadline(lease, signal, tokio::time::sleep(d)).await
                {
                    return Ok(end.with_output(cur.last_reply.clone()));
                }
                vec![]
            }
            Action::Fail(reason) => {
                cur.position += 1;
                cur.pending
                    .push(step(StepKind::Error, Role::System, Some(reason.clone())));
                return Ok(End::Finished(
                    RunStatus::Failed,
                    cur.last_reply.clone(),
                    Some(reason),
                ));
            }
            Action::Done { output } => {
                return Ok(End::Finished(
                    RunStatus::Succeeded,
                    output.or(cur.last_reply.clone()),
                    None,
                ));
            }
        };
        cur.position += 1;
        cur.pending.extend(new_steps);
        if cur.reads_history || cur.pending.is_empty() {
            // A runtime that reads its history needs its steps in Postgres before it goes
            // on; a sleep moves the resume point.
            if let Flow::Stop(end) = Box::pin(flush_always(ctx, lease, cur)).await? {
                return Ok(end.with_output(cur.last_reply.clone()));
            }
            Box::pin(cur.refresh(ctx, run.id)).await?;
        }
    }
}

/// The run fails with `why`, recorded as its last step.
fn failed(cur: &mut Cursor, why: String) -> End {
    cur.pending
        .push(step(StepKind::Error, Role::System, Some(why.clone())));
    End::Finished(RunStatus::Failed, cur.last_reply.clone(), Some(why))
}

/// Writes what is pending, then running → waiting_approval with the call's approval.
async fn wait_for_person(
    ctx: &Ctx,
    lease: &Lease,
    cur: &mut Cursor,
    req: ApprovalRequest<'_>,
) -> Result<End, JobError> {
    if let Flow::Stop(end) = flush(ctx, lease, cur).await? {
        return Ok(end);
    }
    if wait::wait_for_approval(&ctx.db, &ctx.queues, lease, req).await? {
        ctx.lifecycle.doorbell().ring(lease.run);
        return Ok(End::Waiting);
    }
    Ok(End::Lost)
}

/// Writes the pending steps, if any.
async fn flush(ctx: &Ctx, lease: &Lease, cur: &mut Cursor) -> Result<Flow, JobError> {
    if cur.pending.is_empty() {
        return Ok(Flow::Go);
    }
    flush_always(ctx, lease, cur).await
}

/// Writes the pending steps (possibly none: then only the resume point moves).
async fn flush_always(ctx: &Ctx, lease: &Lease, cur: &mut Cursor) -> Result<Flow, JobError> {
    let steps = std::mem::take(&mut cur.pending);
    let output = cur.last_reply.clone();
    let tokens = std::mem::take(&mut cur.tokens);
    write(ctx, lease, cur.position, output.as_deref(), steps, tokens).await
}

fn cancelled(output: Option<String>) -> End {
    End::Finished(
        RunStatus::Cancelled,
        output,
        Some("cancelled on request".into()),
    )
}

impl End {
    fn with_output(self, output: Option<String>) -> End {
        match self {
            End::Finished(s, None, e) => End::Finished(s, output, e),
            other => other,
        }
    }
}

enum Flow {
    Go,
    Stop(End),
}

/// Writes steps (possibly none: then only the resume point moves); the lifecycle rings the
/// doorbell of a watched run.
async fn write(
    ctx: &Ctx,
    lease: &Lease,
    position: i32,
    output: Option<&str>,
    new: Vec<NewStep>,
    (input_tokens, output_tokens): (i64, i64),
) -> Result<Flow, JobError> {
    let w = StepWrite {
        lease: *lease,
        position,
        output: output.map(str::to_owned),
        steps: new,
        input_tokens,
        output_tokens,
    };
    let span = tracing::info_span!("step.write", position, steps = w.steps.len());
    match ctx.lifecycle.write(w).instrument(span).await? {
        Written::Lost => Ok(Flow::Stop(End::Lost)),
        Written::Ok {
            cancel_requested: true,
            ..
        } => Ok(Flow::Stop(cancelled(None))),
        Written::Ok { .. } => Ok(Flow::Go),
    }
}

/// The span of one tool call (a child of the run's span).
fn tool_span(tool: &str) -> tracing::Span {
    tracing::info_span!("tool.call", tool = %tool)
}

enum Wait<T> {
    Done(T),
    Interrupted(End),
}

/// Awaits `fut` unless the run's deadline passes, a cancel arrives, or the lease is lost.
async fn until_deadline<T>(
    lease: &Lease,
    signal: &mut watch::Receiver<Signal>,
    fut: impl std::future::Future<Output = T>,
) -> Wait<T> {
    let left = (lease.deadline - Utc::now())
        .to_std()
        .unwrap_or(Duration::ZERO);
    let timed_out = || {
        Wait::Interrupted(End::Finished(
            RunStatus::TimedOut,
            None,
            Some("run exceeded its max duration".into()),
        ))
    };
    if left.is_zero() {
        return timed_out();
    }
    tokio::pin!(fut);
    let deadline = tokio::time::sleep(left);
    tokio::pin!(deadline);
    let mut listening = true;
    loop {
        tokio::select! {
            v = &mut fut => return Wait::Done(v),
            _ = &mut deadline => return timed_out(),
            changed = signal.changed(), if listening => {
                if changed.is_err() {
                    listening = false;
                    continue;
                }
                match *signal.borrow() {
                    Signal::Cancel => return Wait::Interrupted(cancelled(None)),
                    Signal::Lost => return Wait::Interrupted(End::Lost),
                    Signal::Go => {}
                }
            }
        }
    }
}
