//! The platform server's own tools (`/mcp`): agents, signals, runs and approvals, each
//! through the function its REST twin uses, so the team and agent-restriction filters are
//! the same ones.

use axum::http::HeaderMap;
use serde_json::{json, Value};

use agentq_shared::approvals::{self, ApprovalFilter, Decided, Decision};
use agentq_shared::ids::AgentId;
use agentq_shared::pagination::Cursor;
use agentq_shared::runs::create::TriggerType;
use agentq_shared::runs::{self, RunFilter, RunStatus};

use super::jsonrpc::RpcError;
use super::tools::{acting, json_result, Args};
use super::Caller;
use crate::error::ApiError;
use crate::triggers::{self, Trigger};

pub(super) async fn list_agents(c: &Caller, cursor: Cursor) -> Result<Value, ApiError> {
    let page = agentq_shared::agents::list(
        &c.state.db,
        c.auth.team_id(),
        c.auth.agent_restriction(),
        &cursor,
    )
    .await?;
    let agents: Vec<Value> = page.data.iter().map(|a| json!(a.view())).collect();
    Ok(json_result(
        json!({"agents": agents, "next_cursor": page.next_cursor}),
    ))
}

pub(super) async fn send_signal(
    c: &Caller,
    a: &Args<'_>,
) -> Result<Result<Value, ApiError>, RpcError> {
    let agent: AgentId = a.id("agent_id")?;
    let kind = a.string("type")?.trim().to_owned();
    if kind.len() > 200 {
        return Err(RpcError::invalid_params("type must be 1 to 200 characters"));
    }
    let payload = a.0.get("payload").cloned().unwrap_or(Value::Null);
    let signal = json!({"type": kind, "payload": payload});
    let t = Trigger {
        kind: TriggerType::Signal,
        body: signal.clone(),
        trigger: json!({"signal": signal, "via": "mcp"}),
        input: signal,
        audit_action: Some("signal.received"),
    };
    let created = triggers::trigger(&c.state, &acting(c), agent, &HeaderMap::new(), t).await;
    Ok(created.map(|r| json_result(json!(r.run()))))
}

pub(super) async fn list_runs(
    c: &Caller,
    a: &Args<'_>,
) -> Result<Result<Value, ApiError>, RpcError> {
    let agent: AgentId = a.id("agent_id")?;
    let status = match a.opt_string("status")? {
        None => None,
        Some(s) => Some(
            s.parse::<RunStatus>()
                .map_err(|_| RpcError::invalid_params("status is not a run status"))?,
        ),
    };
    let cursor = a.cursor()?;
    let filter = RunFilter {
        status,
        trigger: None,
        from: None,
        to: None,
    };
    let found = async {
        if !c.auth.can_access_agent(agent)
            || !agentq_shared::agents::exists_including_deleted(
                &c.state.db,
                c.auth.team_id(),
                agent,
            )
            .await?
        {
            return Err(ApiError::not_found("Agent"));
        }
        let page =
            runs::list_for_agent(&c.state.db, c.auth.team_id(), agent, &filter, &cursor).await?;
        Ok(json_result(
            json!({"runs": page.data, "next_cursor": page.next_cursor}),
        ))
    };
    Ok(found.await)
}

pub(super) async fn list_approvals(
    c: &Caller,
    a: &Args<'_>,
) -> Result<Result<Value, ApiError>, RpcError> {
    let agent = match a.opt_string("agent_id")? {
        None => None,
        Some(_) => Some(a.id::<AgentId>("agent_id")?),
    };
    let filter = ApprovalFilter {
        status: Some(
            a.opt_string("status")?
                .unwrap_or_else(|| "pending".to_owned()),
        ),
        agent_id: agent,
        run_id: None,
    };
    let cursor = a.cursor()?;
    let page = approvals::list(
        &c.state.db,
        c.auth.team_id(),
        c.auth.agent_restriction(),
        &filter,
        &cursor,
    )
    .await;
    Ok(page
        .map(|p| json_result(json!({"approvals": p.data, "next_cursor": p.next_cursor})))
        .map_err(ApiError::from))
}

pub(super) async fn decide(
    c: &Caller,
    a: &Args<'_>,
    decision: Decision,
) -> Result<Result<Value, ApiError>, RpcError> {
    let id: uuid::Uuid = a.id("approval_id")?;
    let comment = a.opt_string("comment")?;
    if comment.as_ref().is_some_and(|c| c.chars().count() > 2000) {
        return Err(RpcError::invalid_params(
            "comment must be at most 2000 characters",
        ));
    }
    let done = async {
        let found = approvals::get(&c.state.db, c.auth.team_id(), id).await?;
        if !found.is_some_and(|ap| c.auth.can_access_agent(ap.agent_id)) {
            return Err(ApiError::not_found("Approval"));
        }
        let decided = approvals::decide(
            &c.state.db,
            &c.state.queues,
            c.auth.team_id(),
            id,
            decision,
            c.auth.key.id,
            comment.as_deref(),
            c.auth.meta(),
        )
        .await?;
        match decided {
            Decided::Done(ap) => {
                let _ = runs::doorbell::ring_watched(
                    &mut c.state.redis.clone(),
                    &c.state.keys,
                    &[ap.run_id],
                )
                .await;
                Ok(json_result(json!(ap)))
            }
            Decided::NotFound => Err(ApiError::not_found("Approval")),
            Decided::NotPending(ap) => Err(ApiError::conflict(
                "approval_not_pending",
                format!(
                    "This approval is {}; it cannot be decided again.",
                    ap.status
                ),
            )),
        }
    };
    Ok(done.await)
}
