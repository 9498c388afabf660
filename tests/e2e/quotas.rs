//! Floors and quotas (issue 14, item 9): a schedule may not fire more often than the
//! operator's minimum interval, and a team may not have more live agents than its quota.

use std::time::Duration;

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{assert_envelope, send, TestApp};

fn scheduled(schedule: &str) -> serde_json::Value {
    json!({"name": "cron", "runtime": "scripted", "config": {"steps": []}, "schedule": schedule})
}

async fn agent_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM agents")
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn schedules_faster_than_the_floor_are_refused_naming_schedule() {
    let app = TestApp::spawn_with(|c| c.min_schedule_interval = Duration::from_secs(60)).await;
    for fast in ["* * * * * *", "*/30 * * * * *", "0,1 * * * * *"] {
        let (s, b) = app.post("/api/v1/agents", scheduled(fast)).await;
        assert_envelope(s, &b, 400, "validation_failed");
        assert_eq!(b["details"]["field"], "schedule", "{b}");
    }
    assert_eq!(agent_count(&app).await, 0, "nothing was written");

    let agent = app.create_agent(scheduled("* * * * *")).await;
    let (s, b) = send(
        app.req(Method::PATCH, &format!("/api/v1/agents/{agent}"))
            .json(&json!({"schedule": "*/5 * * * * *"})),
    )
    .await;
    assert_envelope(s, &b, 400, "validation_failed");
    assert_eq!(b["details"]["field"], "schedule", "{b}");
    let (_, shown) = app.get(&format!("/api/v1/agents/{agent}")).await;
    assert_eq!(shown["schedule"], "* * * * *", "unchanged");
}

#[tokio::test]
async fn a_team_cannot_have_more_agents_than_its_quota() {
    let app = TestApp::spawn_with(|c| c.max_agents_per_team = 3).await;
    let body = json!({"name": "a", "runtime": "scripted", "config": {"steps": []}});
    let answers = join_all((0..6).map(|_| app.post("/api/v1/agents", body.clone()))).await;
    let created: Vec<_> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .collect();
    assert_eq!(created.len(), 3, "{answers:?}");
    for (s, b) in answers.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
        assert_envelope(*s, b, 409, "agent_quota_exceeded");
    }
    assert_eq!(agent_count(&app).await, 3);

    // Deleting one frees its place; another team has its own quota.
    let id = created[0].1["id"].as_str().unwrap();
    let (s, _) = send(app.req(Method::DELETE, &format!("/api/v1/agents/{id}"))).await;
    assert!(s.is_success(), "{s}");
    let (s, b) = app.post("/api/v1/agents", body.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let other = crate::common::create_tenant(&app.db.pool, "other").await;
    let (s, b) = send(
        app.req_as(&other.key, Method::POST, "/api/v1/agents")
            .json(&body),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}
