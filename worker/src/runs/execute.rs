//! The step loop: ask the runtime for the next action, persist it under the lease, ring the
//! run's doorbell, repeat; stop at the end, on cancel, at the deadline, or when the lease is
//! lost. A heartbeat keeps the lease alive through long sleeps and slow agents.

use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use tokio::sync::watch;

use agentq_shared::agents::Agent;
use agentq_shared::runs::steps::{self, Step};
use agentq_shared::runs::{self, doorbell, RunStatus};

use super::store::{self, Ending, Lease, NewStep, Written};
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
    Lost,
}

pub(super) async fn execute(ctx: &Ctx, lease: Lease, agent: Agent) -> Result<(), JobError> {
    let (tx, mut signal) = watch::channel(Signal::Go);
    let beat = tokio::spawn(heartbeat(ctx.clone(), lease, tx));
    let result = run_steps(ctx, &lease, &agent, &mut signal).await;
    beat.abort();
    let end = match result {
        Ok(end) => end,
        Err(e) => {
            // The store failed mid-run: leave the job pending; it is redelivered and the run
            // resumed from its last persisted step.
            return Err(e);
        }
    };
    let End::Finished(status, output, error) = end else {
        tracing::info!("lease lost; another worker owns the run now");
        return Ok(());
    };
    let ending = Ending {
        status,
        output: output.as_deref(),
        error: error.as_deref(),
    };
    let finished = store::finish(&ctx.db, &lease, ending).await?;
    if finished.applied {
        metrics::counter!("agentq_runs_finished_total", "status" => status.as_str()).increment(1);
        tracing::info!(status = %status, "run finished");
    }
    if let Some(next) = finished.next {
        // If this enqueue is lost, the reconciler finds the unparked run still queued.
        agentq_shared::runs::create::enqueue(&ctx.runs, next).await;
    }
    doorbell::ring(&mut ctx.redis.clone(), &ctx.keys, lease.run).await;
    Ok(())
}

async fn heartbeat(ctx: Ctx, lease: Lease, tx: watch::Sender<Signal>) {
    let mut tick = tokio::time::interval(ctx.config.heartbeat_every);
    tick.tick().await;
    loop {
        tick.tick().await;
        match store::heartbeat(&ctx.db, &lease).await {
            Ok(Written::Ok {
                cancel_requested: true,
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

fn step(kind: &'static str, role: &'static str, content: Option<String>) -> NewStep {
    NewStep {
        kind,
        role,
        content,
        tool_name: None,
        tool_call_id: None,
        arguments: None,
        result: None,
    }
}

fn input_text(input: &Value) -> Option<String> {
    match input {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

async fn run_steps(
    ctx: &Ctx,
    lease: &Lease,
    agent: &Agent,
    signal: &mut watch::Receiver<Signal>,
) -> Result<End, JobError> {
    let Some(run) = runs::get_any(&ctx.db, lease.run).await? else {
        return Ok(End::Lost);
    };
    // Only whether the run has steps matters to every runtime; http agents get them all.
    let mut history: Vec<Step> = steps::after(&ctx.db, run.id, 0, i64::from(i32::MAX)).await?;
    let mut position = run.script_pos;
    let mut last_reply = run.output.clone();
    let mut runtime = match AnyRuntime::for_agent(agent, &ctx.http) {
        Ok(r) => r,
        Err(e) => return Ok(End::Finished(RunStatus::Failed, None, Some(e.0))),
    };
    let reads_history = runtime.reads_history();
    if history.is_empty() {
        let first = step("input", "user", input_text(&run.input));
        match write(ctx, lease, position, None, vec![first]).await? {
            Flow::Go => {}
            Flow::Stop(end) => return Ok(end),
        }
        if reads_history {
            history = steps::after(&ctx.db, run.id, 0, i64::from(i32::MAX)).await?;
        }
    }
    loop {
        match *signal.borrow() {
            Signal::Cancel => return Ok(cancelled(last_reply)),
            Signal::Lost => return Ok(End::Lost),
            Signal::Go => {}
        }
        let progress = Progress {
            run: &run,
            agent,
            steps: &history,
            position: position as usize,
        };
        let action = match until_deadline(lease, signal, runtime.next(&progress)).await {
            Wait::Done(Ok(a)) => a,
            Wait::Done(Err(e)) => {
                let err_step = step("error", "system", Some(e.0.clone()));
                let _ = write(ctx, lease, position, None, vec![err_step]).await?;
                return Ok(End::Finished(RunStatus::Failed, last_reply, Some(e.0)));
            }
            Wait::Interrupted(end) => return Ok(end.with_output(last_reply)),
        };
        position += 1;
        let new_steps = match action {
            Action::Reply(text) => {
                last_reply = Some(text.clone());
                vec![step("message", "assistant", Some(text))]
            }
            Action::Tool {
                name,
                arguments,
                result,
            } => {
                let call_id = format!("call_{}", uuid::Uuid::now_v7().simple());
                vec![
                    NewStep {
                        tool_name: Some(name.clone()),
                        tool_call_id: Some(call_id.clone()),
                        arguments: Some(arguments),
                        ..step("tool_call", "assistant", None)
                    },
                    NewStep {
                        tool_name: Some(name),
                        tool_call_id: Some(call_id),
                        result: Some(result),
                        ..step("tool_result", "tool", None)
                    },
                ]
            }
            Action::Sleep(d) => {
                if let Wait::Interrupted(end) =
                    until_deadline(lease, signal, tokio::time::sleep(d)).await
                {
                    return Ok(end.with_output(last_reply));
                }
                vec![]
            }
            Action::Fail(reason) => {
                let err_step = step("error", "system", Some(reason.clone()));
                match write(ctx, lease, position, None, vec![err_step]).await? {
                    Flow::Go => {
                        return Ok(End::Finished(RunStatus::Failed, last_reply, Some(reason)))
                    }
                    Flow::Stop(end) => return Ok(end),
                }
            }
            Action::Done { output } => {
                return Ok(End::Finished(
                    RunStatus::Succeeded,
                    output.or(last_reply),
                    None,
                ));
            }
        };
        let reply = last_reply.clone();
        match write(ctx, lease, position, reply.as_deref(), new_steps).await? {
            Flow::Go => {}
            Flow::Stop(end) => return Ok(end.with_output(last_reply)),
        }
        if reads_history {
            history = steps::after(&ctx.db, run.id, 0, i64::from(i32::MAX)).await?;
        }
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

/// Writes steps (possibly none: then only the resume point moves) and rings the doorbell.
async fn write(
    ctx: &Ctx,
    lease: &Lease,
    position: i32,
    output: Option<&str>,
    new: Vec<NewStep>,
) -> Result<Flow, JobError> {
    let has_steps = !new.is_empty();
    match store::write_steps(&ctx.db, lease, position, output, &new).await? {
        Written::Lost => Ok(Flow::Stop(End::Lost)),
        Written::Ok { cancel_requested } => {
            if has_steps {
                doorbell::ring(&mut ctx.redis.clone(), &ctx.keys, lease.run).await;
            }
            if cancel_requested {
                Ok(Flow::Stop(cancelled(None)))
            } else {
                Ok(Flow::Go)
            }
        }
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
