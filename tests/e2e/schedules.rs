//! Cron schedules end to end with real `agentq scheduler` processes: each fire time makes one
//! run even with two schedulers racing, pausing stops the schedule and resuming does not
//! replay the paused period, an edit takes effect without a restart, downtime is caught up
//! with one run (or none, with `AGENTQ_CATCH_UP=skip`), and `next_run_at` is shown in the
//! agent's own time zone. The DST arithmetic itself is unit-tested in `shared/src/schedule.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Datelike, Duration as Span, NaiveDate, Timelike, Utc, Weekday};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{eventually, send, Stack, TestApp};

const EVERY_TWO_SECONDS: &str = "*/2 * * * * *";

async fn scheduled_agent(app: &TestApp, schedule: &str, timezone: &str) -> String {
    app.create_agent(json!({
        "name": "cron",
        "runtime": "scripted",
        "config": {"steps": [{"reply": "tick"}]},
        "schedule": schedule,
        "timezone": timezone,
    }))
    .await
}

/// The agent's scheduled runs, grouped by the fire time in their trigger.
async fn runs_by_fire_time(app: &TestApp, agent: &str) -> BTreeMap<DateTime<Utc>, Vec<String>> {
    let (s, page) = app
        .get(&format!(
            "/api/v1/agents/{agent}/runs?trigger=schedule&limit=200"
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let mut by_time: BTreeMap<DateTime<Utc>, Vec<String>> = BTreeMap::new();
    for run in page["data"].as_array().unwrap() {
        assert_eq!(run["trigger"]["type"], "schedule", "{run}");
        let at = run["trigger"]["fire_time"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("a fire time in the trigger: {run}"));
        by_time
            .entry(at)
            .or_default()
            .push(run["id"].as_str().unwrap().to_owned());
    }
    by_time
}

async fn show_agent(app: &TestApp, id: &str) -> Value {
    let (s, a) = app.get(&format!("/api/v1/agents/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{a}");
    a
}

fn next_run_at(agent: &Value) -> Option<DateTime<Utc>> {
    agent["next_run_at"].as_str().map(|t| {
        t.parse()
            .unwrap_or_else(|_| panic!("next_run_at is a time: {agent}"))
    })
}

/// Waits until the agent has at least `n` scheduled runs.
async fn wait_for_fires(
    app: &TestApp,
    agent: &str,
    n: usize,
    timeout: Duration,
) -> BTreeMap<DateTime<Utc>, Vec<String>> {
    eventually(timeout, || async {
        let fired = runs_by_fire_time(app, agent).await;
        (fired.len() >= n).then_some(fired)
    })
    .await
    .unwrap_or_else(|| panic!("{n} scheduled runs within {timeout:?}"))
}

fn start_of_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_second(0).unwrap().with_nanosecond(0).unwrap()
}

/// Tests whose expectations name "this minute" start early enough to finish inside it.
async fn early_in_a_minute() {
    let second = Utc::now().second();
    if second >= 45 {
        tokio::time::sleep(Duration::from_secs(u64::from(61 - second))).await;
    }
}

async fn set_status(app: &TestApp, agent: &str, action: &str) -> Value {
    let (s, a) = send(app.req(Method::POST, &format!("/api/v1/agents/{agent}/{action}"))).await;
    assert_eq!(s, StatusCode::OK, "{action}: {a}");
    a
}

#[tokio::test]
async fn two_schedulers_make_exactly_one_run_per_fire_time() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.scheduler().scheduler();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let agent = scheduled_agent(&app, EVERY_TWO_SECONDS, "UTC").await;

    tokio::time::sleep(Duration::from_secs(7)).await;
    for scheduler in &mut stack.schedulers {
        scheduler.kill();
    }
    let fired = runs_by_fire_time(&app, &agent).await;
    assert!(fired.len() >= 3, "a fire every 2 s for 7 s: {fired:?}");
    for (at, runs) in &fired {
        assert_eq!(runs.len(), 1, "one run for the fire at {at}: {runs:?}");
        assert_eq!(
            (at.timestamp() % 2, at.timestamp_subsec_nanos()),
            (0, 0),
            "fire times are the schedule's own instants: {at}"
        );
    }
    let times: Vec<&DateTime<Utc>> = fired.keys().collect();
    for pair in times.windows(2) {
        assert_eq!(
            *pair[1] - *pair[0],
            Span::seconds(2),
            "no fire time skipped or doubled: {times:?}"
        );
    }
    let dupes: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT trigger->>'fire_time', count(*) FROM runs WHERE trigger_type = 'schedule'
         GROUP BY 1 HAVING count(*) > 1",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert!(dupes.is_empty(), "{dupes:?}");
}

#[tokio::test]
async fn pausing_stops_the_schedule_and_resuming_does_not_replay_the_pause() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.scheduler();
    let agent = scheduled_agent(&app, EVERY_TWO_SECONDS, "UTC").await;
    wait_for_fires(&app, &agent, 1, Duration::from_secs(8)).await;

    let paused = set_status(&app, &agent, "pause").await;
    let paused_at = Utc::now();
    assert_eq!(paused["status"], "paused");
    assert_eq!(paused["next_run_at"], Value::Null, "{paused}");
    assert_eq!(next_run_at(&show_agent(&app, &agent).await), None);
    // A fire already under way when the pause landed may still finish; then nothing more.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = runs_by_fire_time(&app, &agent).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        runs_by_fire_time(&app, &agent).await,
        before,
        "no scheduled runs while paused"
    );

    let resumed_at = Utc::now();
    let resumed = set_status(&app, &agent, "resume").await;
    let next = next_run_at(&resumed).expect("a resumed schedule has a next fire time");
    assert!(
        next > resumed_at - Span::seconds(1) && next <= resumed_at + Span::seconds(2),
        "the next fire after the resume, not one from the pause: {next} (resumed {resumed_at})"
    );
    assert_eq!(next_run_at(&show_agent(&app, &agent).await), Some(next));

    let after = wait_for_fires(&app, &agent, before.len() + 1, Duration::from_secs(6)).await;
    let missed: Vec<_> = after
        .keys()
        .filter(|t| **t > paused_at && **t < resumed_at)
        .collect();
    assert!(
        missed.is_empty(),
        "the paused period is not caught up: {missed:?}"
    );
    let first_after = after.keys().find(|t| **t > resumed_at - Span::seconds(1));
    assert_eq!(first_after, Some(&next), "{after:?}");
}

#[tokio::test]
async fn a_schedule_edit_takes_effect_without_restarting_the_scheduler() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.scheduler();
    let agent = scheduled_agent(&app, "0 0 1 1 *", "UTC").await;
    let new_year = NaiveDate::from_ymd_opt(Utc::now().year() + 1, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    assert_eq!(next_run_at(&show_agent(&app, &agent).await), Some(new_year));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(runs_by_fire_time(&app, &agent).await.is_empty());

    let edited_at = Utc::now();
    let (s, edited) = send(
        app.req(Method::PATCH, &format!("/api/v1/agents/{agent}"))
            .json(&json!({"schedule": EVERY_TWO_SECONDS})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{edited}");
    let next = next_run_at(&edited).expect("an edited schedule has a next fire time");
    assert!(
        next > edited_at - Span::seconds(1) && next <= edited_at + Span::seconds(2),
        "{next} (edited {edited_at})"
    );
    assert_eq!(next_run_at(&show_agent(&app, &agent).await), Some(next));

    let fired = wait_for_fires(&app, &agent, 2, Duration::from_secs(8)).await;
    assert_eq!(fired.keys().next(), Some(&next), "{fired:?}");

    // Clearing the schedule stops it the same way.
    let (s, cleared) = send(
        app.req(Method::PATCH, &format!("/api/v1/agents/{agent}"))
            .json(&json!({"schedule": null})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{cleared}");
    assert_eq!(cleared["schedule"], Value::Null);
    assert_eq!(next_run_at(&show_agent(&app, &agent).await), None);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = runs_by_fire_time(&app, &agent).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(runs_by_fire_time(&app, &agent).await, before);
}

/// Puts an agent's pending fire ten minutes in the past, as if no scheduler ran since.
async fn miss_ten_minutes(app: &TestApp, agent: &str) -> DateTime<Utc> {
    let id: uuid::Uuid = agent.parse().unwrap();
    let this_minute = start_of_minute(Utc::now());
    sqlx::query("UPDATE agents SET next_run_at = $2 WHERE id = $1")
        .bind(id)
        .bind(this_minute - Span::minutes(10))
        .execute(&app.db.pool)
        .await
        .unwrap();
    this_minute
}

#[tokio::test]
async fn after_downtime_one_catch_up_run_is_made_for_the_latest_missed_fire() {
    let app = TestApp::spawn().await;
    let agent = scheduled_agent(&app, "* * * * *", "UTC").await;
    early_in_a_minute().await;
    let this_minute = miss_ten_minutes(&app, &agent).await;

    let mut stack = Stack::new(&app);
    stack.scheduler();
    wait_for_fires(&app, &agent, 1, Duration::from_secs(8)).await;
    // A few more ticks: the other nine missed fire times stay missed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fired = runs_by_fire_time(&app, &agent).await;
    assert_eq!(
        fired.keys().collect::<Vec<_>>(),
        [&this_minute],
        "one run, for the latest missed fire time"
    );
    assert_eq!(
        next_run_at(&show_agent(&app, &agent).await),
        Some(this_minute + Span::minutes(1))
    );
}

#[tokio::test]
async fn with_catch_up_skip_missed_fires_are_dropped() {
    let app = TestApp::spawn().await;
    let agent = scheduled_agent(&app, "* * * * *", "UTC").await;
    early_in_a_minute().await;
    let this_minute = miss_ten_minutes(&app, &agent).await;

    let mut stack = Stack::new(&app);
    stack.scheduler_with(&[("AGENTQ_CATCH_UP", "skip")]);
    let next = eventually(Duration::from_secs(8), || async {
        next_run_at(&show_agent(&app, &agent).await).filter(|t| *t > Utc::now())
    })
    .await
    .expect("the scheduler moves the missed fire to the next one");
    assert_eq!(next, this_minute + Span::minutes(1));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        runs_by_fire_time(&app, &agent).await.is_empty(),
        "no run for the missed period"
    );
}

fn last_sunday(year: i32, month: u32) -> NaiveDate {
    let mut day = NaiveDate::from_ymd_opt(year, month + 1, 1).unwrap() - Span::days(1);
    while day.weekday() != Weekday::Sun {
        day -= Span::days(1);
    }
    day
}

/// The first instant after `after` at which the wall clock shows `hh:mm` in a zone that is
/// `offset(day)` hours ahead of UTC on that day (a morning time: same date in UTC).
fn next_local(
    after: DateTime<Utc>,
    hh: i64,
    mm: i64,
    offset_minutes: impl Fn(NaiveDate) -> i64,
) -> DateTime<Utc> {
    (-1..3)
        .map(|d| after.date_naive() + Span::days(d))
        .map(|day| {
            day.and_hms_opt(0, 0, 0).unwrap().and_utc()
                + Span::minutes(hh * 60 + mm - offset_minutes(day))
        })
        .find(|t| *t > after)
        .unwrap()
}

#[tokio::test]
async fn next_run_at_is_the_wall_clock_time_of_the_agents_zone() {
    let app = TestApp::spawn().await;
    // EU rules: summer time from the last Sunday of March to the last Sunday of October,
    // switching at 01:00 UTC, so a 07:00 fire on a change day is already on the new offset.
    let paris = |day: NaiveDate| {
        let summer = day >= last_sunday(day.year(), 3) && day < last_sunday(day.year(), 10);
        if summer {
            120
        } else {
            60
        }
    };
    let created_at = Utc::now();
    let agent = scheduled_agent(&app, "0 7 * * *", "Europe/Paris").await;
    let shown = show_agent(&app, &agent).await;
    assert_eq!(shown["timezone"], "Europe/Paris");
    let next = next_run_at(&shown).expect("a scheduled agent shows its next fire");
    assert_eq!(next, next_local(created_at, 7, 0, paris), "{shown}");
    assert!([5, 6].contains(&next.hour()) && next.minute() == 0);

    // A zone edit moves the fire: India keeps +05:30 all year.
    let edited_at = Utc::now();
    let (s, edited) = send(
        app.req(Method::PATCH, &format!("/api/v1/agents/{agent}"))
            .json(&json!({"timezone": "Asia/Kolkata"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{edited}");
    assert_eq!(
        next_run_at(&show_agent(&app, &agent).await),
        Some(next_local(edited_at, 7, 0, |_| 330))
    );
}

#[tokio::test]
async fn catching_up_a_long_outage_does_not_stall_the_scheduler() {
    let app = TestApp::spawn().await;
    // Down for an hour: 1800 missed fires of a two-second schedule, one catch-up run wanted.
    let behind = scheduled_agent(&app, EVERY_TWO_SECONDS, "UTC").await;
    let id: uuid::Uuid = behind.parse().unwrap();
    sqlx::query(
        "UPDATE agents SET next_run_at = date_trunc('second', now()) - interval '1 hour'
         WHERE id = $1",
    )
    .bind(id)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let on_time = scheduled_agent(&app, EVERY_TWO_SECONDS, "UTC").await;

    let started = Utc::now();
    let mut stack = Stack::new(&app);
    stack.scheduler();
    // Every other agent keeps its schedule while the catch-up is worked out.
    let kept = eventually(Duration::from_secs(8), || async {
        (runs_by_fire_time(&app, &on_time).await.len() >= 2).then_some(())
    })
    .await;
    assert!(
        kept.is_some(),
        "an on-time two-second schedule fired fewer than twice in 8 s: the scheduler is stuck \
         computing the other agent's catch-up"
    );
    let caught_up = runs_by_fire_time(&app, &behind).await;
    let times: Vec<_> = caught_up.keys().collect();
    assert!(!times.is_empty(), "the catch-up run came promptly");
    assert!(
        *times[0] > started - Span::seconds(3),
        "the catch-up is for the latest missed fire: {times:?} (scheduler started {started})"
    );
}
