//! The run lifecycle module against real Postgres and Redis: every transition, through the
//! batched paths the workers and the API use, with duplicate deliveries and two workers (two
//! `Lifecycle`s on two pools) racing. After each test the agent's slot counter must equal the
//! number of its running runs.

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;

use agentq_shared::approvals::policy::Policy;
use agentq_shared::ids::{AgentId, RunId};
use agentq_shared::queues::Queues;
use agentq_shared::redis_conn::{self, Keys};
use agentq_shared::runs::create::{self, Created, NewRun, TriggerType};
use agentq_shared::runs::doorbell::Doorbell;
use agentq_shared::runs::lifecycle::cancel::{self, CancelOutcome};
use agentq_shared::runs::lifecycle::wait::{self, ApprovalRequest};
use agentq_shared::runs::lifecycle::{
    Ending, Lanes, Lease, Lifecycle, NewStep, Start, StepWrite, Written,
};
use agentq_shared::runs::steps::{Role, StepKind};
use agentq_shared::runs::RunStatus;

use crate::common::{self, redis_url, TestApp, TestDb};

struct Fixture {
    app: TestApp,
    queues: Queues,
}

impl Fixture {
    async fn new() -> Self {
        let app = TestApp::spawn().await;
        let redis = redis_conn::connect(&redis_url()).await.unwrap();
        let queues = Queues::new(redis, &Keys::new(app.prefix.clone())).unwrap();
        Self { app, queues }
    }

    /// A worker's lifecycle, on a pool of its own.
    async fn worker(&self) -> Lifecycle {
        let pool = agentq_shared::db::connect(&self.app.db.url, 8)
            .await
            .unwrap();
        let redis = redis_conn::connect(&redis_url()).await.unwrap();
        let bell = Doorbell::new(redis, Keys::new(self.app.prefix.clone()));
        Lifecycle::new(pool, self.queues.clone(), bell, Lanes::for_pool(8))
    }

    fn pool(&self) -> &PgPool {
        &self.app.db.pool
    }

    async fn agent(&self, max: i32) -> AgentId {
        let id = self
            .app
            .create_agent(json!({
                "name": "lifecycle",
                "runtime": "scripted",
                "config": {"steps": [{"reply": "hi"}]},
                "limits": {"max_concurrent_runs": max, "max_run_seconds": 600},
            }))
            .await;
        id.parse().unwrap()
    }

    async fn runs(&self, agent: AgentId, n: usize) -> Vec<RunId> {
        let mut ids = Vec::new();
        for i in 0..n {
            let new = NewRun {
                team_id: self.app.tenant.team_id,
                agent_id: agent,
                trigger_type: TriggerType::Api,
                trigger: json!({}),
                input: json!(i),
                idempotency: None,
                audit: None,
                traceparent: None,
            };
            match create::create_run(self.pool(), &self.queues, new)
                .await
                .unwrap()
            {
                Created::New(run) => ids.push(run.id),
                Created::Replayed(_) => panic!("no idempotency key, no replay"),
            }
        }
        ids
    }

    /// (the slot counter, the running runs counted).
    async fn slots(&self, agent: AgentId) -> (i32, i64) {
        sqlx::query_as(
            "SELECT a.running_runs, (SELECT count(*) FROM runs r WHERE r.agent_id = a.id AND r.status = 'running')
             FROM agents a WHERE a.id = $1",
        )
        .bind(agent)
        .fetch_one(self.pool())
        .await
        .unwrap()
    }

    async fn assert_counter_exact(&self, agent: AgentId) -> i32 {
        let (counter, real) = self.slots(agent).await;
        assert_eq!(i64::from(counter), real, "slot counter drifted");
        counter
    }

    async fn status(&self, run: RunId) -> (RunStatus, bool, i32) {
        sqlx::query_as("SELECT status, parked, attempts FROM runs WHERE id = $1")
            .bind(run)
            .fetch_one(self.pool())
            .await
            .unwrap()
    }
}

async fn start_all(life: &Lifecycle, runs: &[RunId]) -> Vec<Start> {
    let calls = runs.iter().map(|r| life.start(*r));
    futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

fn leases(starts: &[Start]) -> Vec<Lease> {
    starts
        .iter()
        .filter_map(|s| match s {
            Start::Started { lease, .. } => Some(*lease),
            _ => None,
        })
        .collect()
}

fn reply(lease: Lease, text: &str) -> StepWrite {
    StepWrite {
        lease,
        position: 1,
        output: Some(text.to_owned()),
        input_tokens: 0,
        output_tokens: 0,
        steps: vec![NewStep::new(
            StepKind::Message,
            Role::Assistant,
            Some(text.to_owned()),
        )],
    }
}

#[tokio::test]
async fn a_batch_starts_runs_up_to_the_limit_and_parks_the_rest() {
    let f = Fixture::new().await;
    let agent = f.agent(3).await;
    let runs = f.runs(agent, 10).await;
    let life = f.worker().await;
    let starts = start_all(&life, &runs).await;
    let started = leases(&starts);
    let busy = starts.iter().filter(|s| matches!(s, Start::Busy)).count();
    assert_eq!((started.len(), busy), (3, 7), "{starts:?}");
    assert_eq!(f.assert_counter_exact(agent).await, 3);
    // The started ones carry their run and agent, as of the start.
    for s in &starts {
        if let Start::Started { run, agent: a, .. } = s {
            assert_eq!(run.status, RunStatus::Running);
            assert_eq!(a.id, agent);
        }
    }
    let parked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM runs WHERE agent_id = $1 AND parked")
            .bind(agent)
            .fetch_one(f.pool())
            .await
            .unwrap();
    assert_eq!(parked, 7);
    // The batch first started all ten and counted them after (the agent was not known to be
    // full); over the limit, that transaction rolled back whole before the batch was started
    // counted first: the parked runs keep no attempt and no input step of it.
    let (attempts, steps): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(attempts), 0)::int8,
                (SELECT count(*) FROM run_steps s JOIN runs r ON r.id = s.run_id
                 WHERE r.agent_id = $1 AND r.parked)
         FROM runs WHERE agent_id = $1 AND parked",
    )
    .bind(agent)
    .fetch_one(f.pool())
    .await
    .unwrap();
    assert_eq!((attempts, steps), (0, 0));
    // The next run parks too.
    let more = f.runs(agent, 1).await;
    assert!(matches!(life.start(more[0]).await.unwrap(), Start::Busy));
    assert_eq!(f.assert_counter_exact(agent).await, 3);
}

#[tokio::test]
async fn a_batch_within_the_limit_is_counted_after_its_runs_started() {
    // A roomy agent: the batch starts its runs and then adds them to the counter (the
    // agent's lock is held for that statement and the commit only); the counter is exact,
    // each run started once, with its input step.
    let f = Fixture::new().await;
    let agent = f.agent(1000).await;
    let runs = f.runs(agent, 50).await;
    let (a, b) = (f.worker().await, f.worker().await);
    let (sa, sb) = tokio::join!(start_all(&a, &runs[..30]), start_all(&b, &runs[20..]));
    assert_eq!(leases(&sa).len() + leases(&sb).len(), 50, "{sa:?} {sb:?}");
    assert_eq!(f.assert_counter_exact(agent).await, 50);
    let (attempts, inputs): (i64, i64) = sqlx::query_as(
        "SELECT max(attempts)::int8,
                (SELECT count(*) FROM run_steps s JOIN runs r ON r.id = s.run_id
                 WHERE r.agent_id = $1 AND s.kind = 'input')
         FROM runs WHERE agent_id = $1",
    )
    .bind(agent)
    .fetch_one(f.pool())
    .await
    .unwrap();
    assert_eq!((attempts, inputs), (1, 50));
    // Paused after the run was queued: its batch rolls back the start, finding the agent
    // paused under its lock, and holds the run instead.
    let held = f.runs(agent, 1).await;
    sqlx::query("UPDATE agents SET status = 'paused' WHERE id = $1")
        .bind(agent)
        .execute(f.pool())
        .await
        .unwrap();
    assert!(matches!(a.start(held[0]).await.unwrap(), Start::Held));
    assert_eq!(
        f.status(held[0]).await.2,
        0,
        "the rolled-back start left no attempt"
    );
    assert_eq!(f.assert_counter_exact(agent).await, 50);
}

#[tokio::test]
async fn a_run_delivered_twice_starts_once() {
    let f = Fixture::new().await;
    let agent = f.agent(10).await;
    let run = f.runs(agent, 1).await[0];
    let life = f.worker().await;
    let starts = start_all(&life, &[run, run, run]).await;
    assert_eq!(leases(&starts).len(), 1, "{starts:?}");
    assert!(starts
        .iter()
        .any(|s| matches!(s, Start::NotQueued(Some((RunStatus::Running, 1))))));
    // A later duplicate finds it running too.
    let again = life.start(run).await.unwrap();
    assert!(matches!(
        again,
        Start::NotQueued(Some((RunStatus::Running, 1)))
    ));
    assert_eq!(f.status(run).await.2, 1, "one attempt");
    assert_eq!(f.assert_counter_exact(agent).await, 1);
}

#[tokio::test]
async fn two_workers_racing_start_each_run_once_and_keep_the_counter_exact() {
    let f = Fixture::new().await;
    let agent = f.agent(20).await;
    let runs = f.runs(agent, 60).await;
    let (a, b) = (f.worker().await, f.worker().await);
    let (sa, sb) = tokio::join!(start_all(&a, &runs), start_all(&b, &runs));
    let started = leases(&sa).len() + leases(&sb).len();
    assert_eq!(started, 20, "the limit holds across workers");
    assert_eq!(f.assert_counter_exact(agent).await, 20);
    let max_attempts: i32 =
        sqlx::query_scalar("SELECT max(attempts) FROM runs WHERE agent_id = $1")
            .bind(agent)
            .fetch_one(f.pool())
            .await
            .unwrap();
    assert_eq!(max_attempts, 1, "no run started twice");
    // Both finish their runs at once; every slot comes back.
    let ends_a = leases(&sa)
        .into_iter()
        .map(|l| a.finish(Ending::finish(&l, RunStatus::Succeeded, None, None)));
    let ends_b = leases(&sb)
        .into_iter()
        .map(|l| b.finish(Ending::finish(&l, RunStatus::Succeeded, None, None)));
    let (ra, rb) = tokio::join!(
        futures::future::join_all(ends_a),
        futures::future::join_all(ends_b)
    );
    assert!(ra.into_iter().chain(rb).all(|r| r.unwrap()));
    assert_eq!(f.assert_counter_exact(agent).await, 0);
}

#[tokio::test]
async fn finishing_hands_the_freed_slots_to_the_oldest_parked_runs() {
    let f = Fixture::new().await;
    let agent = f.agent(2).await;
    let runs = f.runs(agent, 5).await;
    let life = f.worker().await;
    let starts = start_all(&life, &runs).await;
    let started = leases(&starts);
    assert_eq!(started.len(), 2);
    let ended = life
        .finish(Ending::finish(
            &started[0],
            RunStatus::Succeeded,
            Some("done".into()),
            None,
        ))
        .await
        .unwrap();
    assert!(ended);
    // The oldest parked run is unparked (and enqueued); the others wait.
    let parked: Vec<(RunId, bool)> = sqlx::query_as(
        "SELECT id, parked FROM runs WHERE agent_id = $1 AND status = 'queued' ORDER BY id",
    )
    .bind(agent)
    .fetch_all(f.pool())
    .await
    .unwrap();
    assert_eq!(parked.len(), 3);
    assert!(!parked[0].1 && parked[1].1 && parked[2].1, "{parked:?}");
    assert_eq!(f.assert_counter_exact(agent).await, 1);
    // It starts now; the next one is still busy.
    assert!(matches!(
        life.start(parked[0].0).await.unwrap(),
        Start::Started { .. }
    ));
    assert!(matches!(
        life.start(parked[1].0).await.unwrap(),
        Start::Busy
    ));
    // The finished run has its usage, and the ending is not applied twice.
    let usage: (i64, i32) = sqlx::query_as(
        "SELECT count(*), coalesce(max(steps), -1) FROM usage_records WHERE run_id = $1",
    )
    .bind(started[0].run)
    .fetch_one(f.pool())
    .await
    .unwrap();
    assert_eq!(usage, (1, 1), "the input step, written by the start");
    let twice = life
        .finish(Ending::finish(
            &started[0],
            RunStatus::Failed,
            None,
            Some("x".into()),
        ))
        .await
        .unwrap();
    assert!(!twice, "a run ends once");
    assert_eq!(f.status(started[0].run).await.0, RunStatus::Succeeded);
    assert_eq!(f.assert_counter_exact(agent).await, 2);
}

#[tokio::test]
async fn writes_keep_order_and_a_lost_lease_changes_nothing() {
    let f = Fixture::new().await;
    let agent = f.agent(5).await;
    let run = f.runs(agent, 1).await[0];
    let life = f.worker().await;
    let lease = leases(&start_all(&life, &[run]).await)[0];
    // Two writes for the same run in one batch are applied one after the other.
    let (w1, w2) = tokio::join!(
        life.write(reply(lease, "one")),
        life.write(reply(lease, "two"))
    );
    let seqs: Vec<i32> = [w1.unwrap(), w2.unwrap()]
        .iter()
        .map(|w| match w {
            Written::Ok { first_seq, .. } => *first_seq,
            Written::Lost => panic!("written under a live lease"),
        })
        .collect();
    let mut sorted = seqs.clone();
    sorted.sort();
    assert_eq!(sorted, vec![2, 3], "after the input step the start wrote");
    // A stale lease (another worker took over) writes, beats and finishes nothing.
    let stale = Lease {
        attempt: lease.attempt + 1,
        ..lease
    };
    assert_eq!(
        life.write(reply(stale, "ghost")).await.unwrap(),
        Written::Lost
    );
    assert_eq!(life.heartbeat(stale).await.unwrap(), Written::Lost);
    assert!(!life
        .finish(Ending::finish(&stale, RunStatus::Succeeded, None, None))
        .await
        .unwrap());
    let steps: i64 = sqlx::query_scalar("SELECT count(*) FROM run_steps WHERE run_id = $1")
        .bind(run)
        .fetch_one(f.pool())
        .await
        .unwrap();
    assert_eq!(steps, 3);
    // The live lease finishes, with the step count in its usage.
    assert!(life
        .finish(Ending::finish(&lease, RunStatus::Succeeded, None, None))
        .await
        .unwrap());
    let usage: serde_json::Value = sqlx::query_scalar("SELECT usage FROM runs WHERE id = $1")
        .bind(run)
        .fetch_one(f.pool())
        .await
        .unwrap();
    assert_eq!(usage["steps"], 3);
    assert_eq!(f.assert_counter_exact(agent).await, 0);
}

#[tokio::test]
async fn cancel_ends_waiting_work_at_once_and_flags_running_work() {
    let f = Fixture::new().await;
    let agent = f.agent(1).await;
    let runs = f.runs(agent, 3).await;
    let team = f.app.tenant.team_id;
    let life = f.worker().await;
    let lease = leases(&start_all(&life, &runs[..1]).await)[0];
    // queued → cancelled at once.
    let out = cancel::cancel(f.pool(), &f.queues, team, runs[1])
        .await
        .unwrap();
    assert!(matches!(out, CancelOutcome::Cancelled(r) if r.status == RunStatus::Cancelled));
    assert!(matches!(
        life.start(runs[1]).await.unwrap(),
        Start::NotQueued(Some((RunStatus::Cancelled, _)))
    ));
    // running → flagged; the worker learns it from its next heartbeat or write.
    let out = cancel::cancel(f.pool(), &f.queues, team, runs[0])
        .await
        .unwrap();
    assert!(matches!(out, CancelOutcome::Requested(_)));
    assert_eq!(
        life.heartbeat(lease).await.unwrap(),
        Written::Ok {
            first_seq: 0,
            cancel_requested: true
        }
    );
    assert!(life
        .finish(Ending::finish(
            &lease,
            RunStatus::Cancelled,
            None,
            Some("cancelled on request".into())
        ))
        .await
        .unwrap());
    // Finished → refused; another team's run → not found.
    let out = cancel::cancel(f.pool(), &f.queues, team, runs[0])
        .await
        .unwrap();
    assert!(matches!(out, CancelOutcome::AlreadyFinished(_)));
    let other = agentq_shared::ids::TeamId::new();
    let out = cancel::cancel(f.pool(), &f.queues, other, runs[2])
        .await
        .unwrap();
    assert!(matches!(out, CancelOutcome::NotFound));
    assert_eq!(f.assert_counter_exact(agent).await, 0);
}

#[tokio::test]
async fn waiting_for_approval_frees_the_slot_and_a_decision_resumes_or_fails_the_run() {
    let f = Fixture::new().await;
    let agent = f.agent(1).await;
    let runs = f.runs(agent, 3).await;
    let life = f.worker().await;
    let lease = leases(&start_all(&life, &runs[..1]).await)[0];
    assert!(matches!(life.start(runs[1]).await.unwrap(), Start::Busy));
    let policy = Policy::default();
    let args = json!({"to": "ceo"});
    let result = json!("sent");
    let req = ApprovalRequest {
        position: 0,
        tool: "send_email",
        arguments: &args,
        result: Some(&result),
        call_id: None,
        policy: &policy,
    };
    assert!(wait::wait_for_approval(f.pool(), &f.queues, &lease, req)
        .await
        .unwrap());
    assert_eq!(f.status(runs[0]).await.0, RunStatus::WaitingApproval);
    // The slot went to the parked run, which now starts.
    assert_eq!(f.assert_counter_exact(agent).await, 0);
    assert!(!f.status(runs[1]).await.1, "unparked");
    let second = leases(&start_all(&life, &runs[1..2]).await)[0];
    // A waiting run cannot be finished by a worker, nor requeued twice.
    assert!(!life
        .finish(Ending::finish(&lease, RunStatus::Succeeded, None, None))
        .await
        .unwrap());
    let mut tx = f.pool().begin().await.unwrap();
    assert_eq!(
        wait::requeue(&mut tx, runs[0])
            .await
            .unwrap()
            .map(|j| j.run_id),
        Some(runs[0])
    );
    assert_eq!(wait::requeue(&mut tx, runs[0]).await.unwrap(), None);
    tx.commit().await.unwrap();
    assert_eq!(f.status(runs[0]).await.0, RunStatus::Queued);
    // Resumed, it waits for a slot like any queued run.
    assert!(matches!(life.start(runs[0]).await.unwrap(), Start::Busy));
    assert!(life
        .finish(Ending::finish(&second, RunStatus::Succeeded, None, None))
        .await
        .unwrap());
    let resumed = leases(&start_all(&life, &runs[..1]).await)[0];
    assert_eq!(resumed.attempt, 2, "a resumed run's second execution");
    // Failing a waiting run: only from waiting_approval.
    let mut tx = f.pool().begin().await.unwrap();
    let outbox = wait::fail_waiting(&mut tx, runs[0], "rejected")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(outbox.0.is_empty(), "no endpoint, no delivery");
    assert_eq!(
        f.status(runs[0]).await.0,
        RunStatus::Running,
        "a running run is not failed as waiting"
    );
    assert_eq!(f.assert_counter_exact(agent).await, 1);
}

#[tokio::test]
async fn a_rejected_waiting_run_fails_with_usage_and_a_notification() {
    let f = Fixture::new().await;
    let agent = f.agent(2).await;
    let run = f.runs(agent, 1).await[0];
    let life = f.worker().await;
    let lease = leases(&start_all(&life, &[run]).await)[0];
    life.write(reply(lease, "thinking")).await.unwrap();
    let policy = Policy::default();
    let (args, result) = (json!({}), json!(null));
    let req = ApprovalRequest {
        position: 1,
        tool: "delete_everything",
        arguments: &args,
        result: Some(&result),
        call_id: None,
        policy: &policy,
    };
    assert!(wait::wait_for_approval(f.pool(), &f.queues, &lease, req)
        .await
        .unwrap());
    let mut tx = f.pool().begin().await.unwrap();
    let outbox = wait::fail_waiting(&mut tx, run, "approval rejected")
        .await
        .unwrap();
    assert!(outbox.0.is_empty(), "no endpoint, no delivery");
    tx.commit().await.unwrap();
    let (status, error, steps, tool_calls): (RunStatus, Option<String>, i32, i32) = sqlx::query_as(
        "SELECT r.status, r.error, u.steps, u.tool_calls FROM runs r JOIN usage_records u ON u.run_id = r.id WHERE r.id = $1",
    )
    .bind(run)
    .fetch_one(f.pool())
    .await
    .unwrap();
    assert_eq!(status, RunStatus::Failed);
    assert_eq!(error.as_deref(), Some("approval rejected"));
    assert_eq!(
        (steps, tool_calls),
        (4, 1),
        "input, reply, tool call, approval request"
    );
    let notes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notifications WHERE run_id = $1 AND kind = 'run.failed'",
    )
    .bind(run)
    .fetch_one(f.pool())
    .await
    .unwrap();
    assert_eq!(notes, 1);
    assert_eq!(f.assert_counter_exact(agent).await, 0);
}

#[tokio::test]
async fn a_paused_agent_holds_runs_and_resuming_releases_them_into_free_slots() {
    let f = Fixture::new().await;
    let agent = f.agent(2).await;
    let (s, _) = f
        .app
        .post(&format!("/api/v1/agents/{agent}/pause"), json!({}))
        .await;
    assert!(s.is_success());
    let runs = f.runs(agent, 3).await;
    let life = f.worker().await;
    // Created while paused: held at once, and a start leaves them held.
    let starts = start_all(&life, &runs).await;
    assert!(
        starts
            .iter()
            .all(|s| matches!(s, Start::NotQueued(Some((RunStatus::Queued, 0))))),
        "{starts:?}"
    );
    let (s, _) = f
        .app
        .post(&format!("/api/v1/agents/{agent}/resume"), json!({}))
        .await;
    assert!(s.is_success());
    let released: Vec<(bool, bool)> =
        sqlx::query_as("SELECT held, parked FROM runs WHERE agent_id = $1 ORDER BY id")
            .bind(agent)
            .fetch_all(f.pool())
            .await
            .unwrap();
    assert_eq!(
        released,
        vec![(false, false), (false, false), (false, true)]
    );
    let starts = start_all(&life, &runs).await;
    assert_eq!(leases(&starts).len(), 2);
    assert_eq!(f.assert_counter_exact(agent).await, 2);
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn a_group_commit_answers_each_trigger_on_its_own() {
    use agentq_shared::audit::Actor;
    use agentq_shared::runs::create::{AuditInfo, CreateError, Creator, Idempotency};
    let f = Fixture::new().await;
    let agent = f.agent(5).await;
    let creator = Creator::new(f.pool().clone(), f.queues.clone(), 1);
    let new = |agent: AgentId, key: Option<&str>, body: serde_json::Value| NewRun {
        team_id: f.app.tenant.team_id,
        agent_id: agent,
        trigger_type: TriggerType::Signal,
        trigger: json!({}),
        input: body.clone(),
        idempotency: key.map(|k| Idempotency {
            key: k.to_owned(),
            request_hash: create::fingerprint(TriggerType::Signal, agent, &body),
        }),
        audit: Some(AuditInfo {
            actor: Actor::System,
            request_id: Some("req".into()),
            ip: None,
            action: "signal.received",
        }),
        traceparent: None,
    };
    let mut batch = Vec::new();
    for _ in 0..10 {
        batch.push(new(agent, Some("same"), json!("a")));
    }
    batch.push(new(agent, Some("same"), json!("different")));
    for i in 0..5 {
        batch.push(new(agent, None, json!(i)));
    }
    batch.push(new(AgentId::new(), None, json!("nobody")));
    let answers = futures::future::join_all(batch.into_iter().map(|n| creator.create(n))).await;
    let new_runs: Vec<RunId> = answers
        .iter()
        .filter_map(|a| match a {
            Ok(Created::New(r)) => Some(r.id),
            _ => None,
        })
        .collect();
    let replayed: Vec<RunId> = answers
        .iter()
        .filter_map(|a| match a {
            Ok(Created::Replayed(r)) => Some(r.id),
            _ => None,
        })
        .collect();
    let reused = answers
        .iter()
        .filter(|a| matches!(a, Err(CreateError::KeyReused)))
        .count();
    let missing = answers
        .iter()
        .filter(|a| matches!(a, Err(CreateError::AgentNotFound)))
        .count();
    // Which of the "same" requests wins depends on the batch; exactly one does.
    assert_eq!(new_runs.len(), 6, "{answers:?}");
    assert_eq!(replayed.len() + reused, 10, "{answers:?}");
    assert!(replayed.iter().all(|r| new_runs.contains(r)));
    assert_eq!(missing, 1);
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_logs WHERE action = 'signal.received' AND target_id = ANY($1)",
    )
    .bind(new_runs.iter().map(|r| r.to_string()).collect::<Vec<_>>())
    .fetch_one(f.pool())
    .await
    .unwrap();
    assert_eq!(audited, 6, "one audit entry per new run, none for repeats");
    let queued: i64 = redis::cmd("XLEN")
        .arg(f.queues.runs.stream_key())
        .query_async(&mut redis_conn::connect(&redis_url()).await.unwrap())
        .await
        .unwrap();
    assert_eq!(queued, 6, "every new run enqueued once");
}

/// A lane of a held batcher keeps its connection while batches keep coming (so sqlx never
/// checks it on the way back to the pool), gives it back once idle, and never keeps one a
/// failed batch used.
#[tokio::test]
async fn a_batch_lane_keeps_its_connection_while_busy_and_gives_it_back_when_idle() {
    use agentq_shared::batch::{BatchError, Batcher, HOLD_IDLE};
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let batcher: Batcher<i32, i32> = Batcher::spawn_held(
        "test",
        1,
        16,
        pool.clone(),
        |mut conn, reqs: Vec<i32>| async move {
            if reqs.contains(&-1) {
                return (Some(conn), Err(BatchError::Closed));
            }
            let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            (Some(conn), Ok(reqs.iter().map(|_| pid).collect()))
        },
    );
    let in_use = |pool: &PgPool| pool.size() - pool.num_idle() as u32;
    let first = batcher.call(1).await.unwrap();
    for i in 0..5 {
        // The lane holds it between batches: out of the pool, the same backend each time.
        assert_eq!(batcher.call(i).await.unwrap(), first, "same backend");
        // Long enough for a connection given back to be checked and idle again.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(in_use(&pool), 1, "held by the lane");
    }
    tokio::time::sleep(HOLD_IDLE + Duration::from_millis(500)).await;
    assert_eq!(in_use(&pool), 0, "given back when idle");
    batcher.call(2).await.unwrap();
    assert_eq!(in_use(&pool), 1);
    assert!(batcher.call(-1).await.is_err());
    // A failed batch's connection goes back to the pool (which checks it) at once.
    let back = common::eventually(Duration::from_secs(2), || {
        let pool = pool.clone();
        async move { (pool.size() == pool.num_idle() as u32).then_some(()) }
    })
    .await;
    assert!(back.is_some(), "a failed batch's connection was kept");
}
