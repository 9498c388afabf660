//! The step loop: ask the runtime for the next action, persist it under the lease, ring the
//! run's doorbell, repeat; stop at the end, on cancel, at the deadline, when the lease is
//! lost, or at a tool call that needs a person's approval (the run then waits durably and
//! the job ends; the decision puts it back on the queue and this loop resumes it, recording
//! the call's result once). A heartbeat keeps the lease alive through long sleeps and slow
//! agents.

use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use tokio::sync::watch;

use agentq_shared::agents::Agent;
use agentq_shared::approvals::policy::Policy;
use agentq_shared::ids::RunId;
use agentq_shared::runs::lifecycle::wait::{self, ApprovalRequest};
use agentq_shared::runs::lifecycle::{Ending, Lease, NewStep, StepWrite, Written};
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
    agent: Agent,
) -> Result<(), JobError> {
    let (tx, mut signal) = watch::channel(Signal::Go);
    let beat = tokio::spawn(heartbeat(ctx.clone(), lease, tx));
    let result = run_steps(ctx, &lease, run, &agent, &mut signal).await;
    beat.abort();
    // A store failure leaves the job pending: it is redelivered and the run resumed from
    // its last persisted step.
    match result? {
        End::Lost => tracing::info!("lease lost; another worker owns the run now"),
        End::Waiting => tracing::info!("run waits for approval"),
        End::Finished(status, output, error) => {
            let ending = Ending::finish(&lease, status, output, error);
            if ctx.lifecycle.finish(ending).await? {
                tracing::info!(status = %status, "run finished");
            }
        }
    }
    Ok(())
}

async fn heartbeat(ctx: Ctx, lease: Lease, tx: watch::Sender<Signal>) {
    let mut tick = tokio::time::interval(ctx.config.heartbeat_every);
    tick.tick().await;
    loop {
        tick.tick().await;
        match ctx.lifecycle.heartbeat(lease).await {
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

fn input_text(input: &Value) -> Option<String> {
    match input {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The loop's state: where the run is and what it said last.
struct Cursor {
    position: i32,
    last_reply: Option<String>,
    history: Vec<Step>,
    reads_history: bool,
}

impl Cursor {
    async fn refresh(&mut self, ctx: &Ctx, run: RunId) -> Result<(), sqlx::Error> {
        if self.reads_history {
            self.history = steps::after(&ctx.db, run, 0, i64::from(i32::MAX)).await?;
        }
        Ok(())
    }
}

async fn run_steps(
    ctx: &Ctx,
    lease: &Lease,
    mut run: Run,
    agent: &Agent,
    signal: &mut watch::Receiver<Signal>,
) -> Result<End, JobError> {
    // The run as read before the lease was taken; only the lease changed it since.
    run.attempts = lease.attempt;
    run.status = RunStatus::Running;
    let policy: Policy = agent.policy();
    let mut runtime = match AnyRuntime::for_agent(agent, &ctx.http) {
        Ok(r) => r,
        Err(e) => return Ok(End::Finished(RunStatus::Failed, None, Some(e.0))),
    };
    let mut cur = Cursor {
        position: run.script_pos,
        last_reply: run.output.clone(),
        history: Vec::new(),
        reads_history: runtime.reads_history(),
    };
    if run.next_seq == 1 {
        let first = step(StepKind::Input, Role::User, input_text(&run.input));
        if let Flow::Stop(end) = write(ctx, lease, cur.position, None, vec![first]).await? {
            return Ok(end);
        }
    }
    // Back from a person's decision: record the call's result before going on. (A fresh
    // run cannot have one, so it skips the lookup.)
    let resumed = run.next_seq > 1;
    let decided = if resumed {
        wait::decided_approval(&ctx.db, run.id).await?
    } else {
        None
    };
    if let Some(decided) = decided {
        match wait::apply_decision(&ctx.db, lease, &decided).await? {
            Written::Lost => return Ok(End::Lost),
            Written::Ok {
                cancel_requested, ..
            } => {
                ctx.lifecycle.doorbell().ring(lease.run);
                if cancel_requested {
                    return Ok(cancelled(cur.last_reply));
                }
                cur.position = decided.position + 1;
            }
        }
    }
    cur.refresh(ctx, run.id).await?;
    loop {
        match *signal.borrow() {
            Signal::Cancel => return Ok(cancelled(cur.last_reply)),
            Signal::Lost => return Ok(End::Lost),
            Signal::Go => {}
        }
        let progress = Progress {
            run: &run,
            agent,
            steps: &cur.history,
            position: cur.position as usize,
        };
        let action = match until_deadline(lease, signal, runtime.next(&progress)).await {
            Wait::Done(Ok(a)) => a,
            Wait::Done(Err(e)) => {
                let err_step = step(StepKind::Error, Role::System, Some(e.0.clone()));
                let _ = write(ctx, lease, cur.position, None, vec![err_step]).await?;
                return Ok(End::Finished(RunStatus::Failed, cur.last_reply, Some(e.0)));
            }
            Wait::Interrupted(end) => return Ok(end.with_output(cur.last_reply)),
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
                        result: &result,
                        policy: &policy,
                    };
                    let waiting = wait::wait_for_approval(&ctx.db, &ctx.queues, lease, req).await?;
                    if waiting {
                        ctx.lifecycle.doorbell().ring(lease.run);
                        return Ok(End::Waiting);
                    }
                    return Ok(End::Lost);
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
            Action::Sleep(d) => {
                if let Wait::Interrupted(end) =
                    until_deadline(lease, signal, tokio::time::sleep(d)).await
                {
                    return Ok(end.with_output(cur.last_reply));
                }
                vec![]
            }
            Action::Fail(reason) => {
                let err_step = step(StepKind::Error, Role::System, Some(reason.clone()));
                return Ok(
                    match write(ctx, lease, cur.position + 1, None, vec![err_step]).await? {
                        Flow::Go => End::Finished(RunStatus::Failed, cur.last_reply, Some(reason)),
                        Flow::Stop(end) => end,
                    },
                );
            }
            Action::Done { output } => {
                return Ok(End::Finished(
                    RunStatus::Succeeded,
                    output.or(cur.last_reply),
                    None,
                ));
            }
        };
        cur.position += 1;
        let reply = cur.last_reply.clone();
        if let Flow::Stop(end) =
            write(ctx, lease, cur.position, reply.as_deref(), new_steps).await?
        {
            return Ok(end.with_output(cur.last_reply));
        }
        cur.refresh(ctx, run.id).await?;
    }
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
) -> Result<Flow, JobError> {
    let w = StepWrite {
        lease: *lease,
        position,
        output: output.map(str::to_owned),
        steps: new,
    };
    match ctx.lifecycle.write(w).await? {
        Written::Lost => Ok(Flow::Stop(End::Lost)),
        Written::Ok {
            cancel_requested: true,
            ..
        } => Ok(Flow::Stop(cancelled(None))),
        Written::Ok { .. } => Ok(Flow::Go),
    }
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
