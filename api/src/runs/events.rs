//! Server-sent events of a run: every step after `Last-Event-ID` (`event: step`,
//! `id: <seq>`, `data: <step>`), read from Postgres whenever the run's doorbell rings (and
//! every second regardless), then `event: done` with the outcome. While the model of an llm
//! agent writes, `event: token` (`data: {"run_id", "delta"}`, no id) carries its text as it
//! arrives: best-effort and never replayed; the whole message follows as a step. Steps written by a worker in
//! any process arrive, in order, without gaps or repeats across reconnects.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::json;

use agentq_shared::ids::RunId;
use agentq_shared::runs::{self, steps};

use crate::state::AppState;

const BATCH: i64 = 200;

/// The SSE response for a run, starting after step `after`.
pub(crate) fn stream(
    state: AppState,
    run: RunId,
    after: i32,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let body = async_stream::stream! {
        let mut sub = state.hub.subscribe(run).await;
        let mut stopping = state.stopping.subscribe();
        let mut last = after;
        loop {
            let batch = match steps::after(&state.db, run, last, BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(run_id = %run, error = %e, "event stream read failed");
                    yield Ok(Event::default().event("error").data("temporarily unavailable; reconnect with Last-Event-ID"));
                    break;
                }
            };
            let full = batch.len() as i64 == BATCH;
            for step in batch {
                last = step.seq;
                let data = serde_json::to_string(&step).unwrap_or_default();
                yield Ok(Event::default().event("step").id(step.seq.to_string()).data(data));
            }
            if full {
                continue;
            }
            // Ended? Steps are all committed before the run ends, so one more read after
            // seeing the end catches any written since the read above.
            let finished = match runs::get_any(&state.db, run).await {
                Ok(Some(r)) if r.status.is_terminal() => Some(r),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(run_id = %run, error = %e, "event stream read failed");
                    None
                }
            };
            if let Some(r) = finished {
                if let Ok(rest) = steps::after(&state.db, run, last, i64::from(i32::MAX)).await {
                    for step in rest {
                        let data = serde_json::to_string(&step).unwrap_or_default();
                        yield Ok(Event::default().event("step").id(step.seq.to_string()).data(data));
                    }
                }
                let done = json!({"run_id": r.id, "conversation_id": crate::triggers::conversation_of(&r),
                    "status": r.status, "output": r.output, "error": r.error});
                yield Ok(Event::default().event("done").data(done.to_string()));
                break;
            }
            if *stopping.borrow() {
                break;
            }
            // Token deltas are passed on as they come until the next ring or second.
            let until = tokio::time::Instant::now() + Duration::from_secs(1);
            let mut stop = false;
            loop {
                tokio::select! {
                    _ = sub.rx.changed() => break,
                    _ = tokio::time::sleep_until(until) => break,
                    _ = stopping.changed() => {
                        stop = true;
                        break;
                    }
                    t = sub.tokens.recv() => match t {
                        Ok(delta) => {
                            let data = json!({"run_id": run, "delta": &*delta});
                            yield Ok(Event::default().event("token").data(data.to_string()));
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                }
            }
            if stop {
                break;
            }
        }
    };
    Sse::new(body).keep_alive(KeepAlive::default())
}
