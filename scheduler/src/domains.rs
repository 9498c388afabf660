//! Custom-domain verification: pending domains whose last check is older than
//! `AGENTQ_DOMAIN_CHECK_SECONDS` are looked up again (TXT `_agentq.{domain}`, through
//! `AGENTQ_DNS_RESOLVER` or the system's resolvers), a batch at a time and concurrently, so
//! a slow DNS server costs one lookup timeout per tick, not one per domain. A domain whose
//! record holds its token becomes `verified` (audited as the system's act) and routes from
//! the API's next cache refresh on.

use futures::future::join_all;
use serde_json::json;
use sqlx::PgPool;

use agentq_shared::agents::domains::{self, Check, TxtChecker};
use agentq_shared::audit::{self, Actor, AuditEntry, RequestMeta};

use crate::SchedulerConfig;

const BATCH: i64 = 50;

/// Checks the pending domains that are due; returns how many were verified.
pub(crate) async fn verify(db: &PgPool, config: &SchedulerConfig) -> Result<usize, String> {
    let due = domains::due(db, config.domain_check_every, BATCH)
        .await
        .map_err(|e| e.to_string())?;
    if due.is_empty() {
        return Ok(0);
    }
    let checker = TxtChecker::new(config.dns_resolver).map_err(|e| e.to_string())?;
    let checks = join_all(
        due.iter()
            .map(|d| checker.check(&d.domain, &d.verification_token)),
    )
    .await;
    let mut verified = 0;
    for (d, check) in due.iter().zip(checks) {
        if let Check::Failed(e) = &check {
            tracing::warn!(domain = %d.domain, error = %e, "domain check failed");
        }
        let mut tx = db.begin().await.map_err(|e| e.to_string())?;
        let done = domains::record_check(&mut *tx, d, &check)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(v) = done.filter(|v| v.is_verified()) {
            audit::record(
                &mut *tx,
                AuditEntry {
                    team_id: v.team_id,
                    actor: Actor::System,
                    action: "agent.domain_verified",
                    target_type: "agent",
                    target_id: v.agent_id.to_string(),
                    meta: RequestMeta::default(),
                    details: json!({"domain": v.domain}),
                },
            )
            .await
            .map_err(|e| e.to_string())?;
            tracing::info!(domain = %v.domain, agent_id = %v.agent_id, "domain verified");
            verified += 1;
        }
        tx.commit().await.map_err(|e| e.to_string())?;
    }
    Ok(verified)
}
