//! What each subcommand does: build configs from the arguments and call the crates.

use std::time::Duration;

use anyhow::{anyhow, Context};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use agentq_api::{ApiConfig, App};
use agentq_scheduler::SchedulerConfig;
use agentq_shared::audit::{Actor, RequestMeta};
use agentq_shared::config::{validate_database_url, StoreConfig};
use agentq_shared::ids::ApiKeyId;
use agentq_shared::keys::{self, KeySpec, Lifetime, Revoked};
use agentq_shared::pagination::Cursor;
use agentq_shared::scopes::ScopeSet;
use agentq_shared::{db, teams as team_db};
use agentq_worker::WorkerConfig;

use super::args::{
    AllArgs, ApiArgs, KeysCommand, SchedulerArgs, StoreArgs, TeamsCommand, TuningArgs, WorkerArgs,
};
use super::Failure;
use agentq_shared::config::ConfigError;

fn store_config(s: &StoreArgs) -> Result<StoreConfig, ConfigError> {
    StoreConfig::new(
        s.database_url.clone(),
        s.redis_url.clone(),
        s.redis_prefix.clone(),
        s.db_max_connections.unwrap_or(10),
    )
}

fn with_pool(store: &StoreConfig, connections: u32) -> StoreConfig {
    let mut store = store.clone();
    store.db_max_connections = connections;
    store
}

async fn migrated_pool(s: &StoreArgs) -> Result<sqlx::PgPool, Failure> {
    let url = validate_database_url(s.database_url.clone())?;
    let pool = db::connect(&url, 2)
        .await
        .context("cannot connect to Postgres (DATABASE_URL)")?;
    db::migrate(&pool).await.context("migrations failed")?;
    Ok(pool)
}

pub(crate) async fn migrate(s: &StoreArgs) -> Result<(), Failure> {
    migrated_pool(s).await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// A receiver that flips to true on SIGINT or SIGTERM.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutdown requested");
        let _ = tx.send(true);
    });
    rx
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

fn seconds(name: &'static str, v: f64) -> Result<Duration, ConfigError> {
    if v.is_finite() && v > 0.0 && v < 1e9 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(ConfigError::invalid(
            name,
            "must be a positive number of seconds",
        ))
    }
}

fn api_config(
    store: StoreConfig,
    t: &TuningArgs,
    args: &ApiArgs,
) -> Result<ApiConfig, ConfigError> {
    if args.body_limit == 0 {
        return Err(ConfigError::invalid(
            "AGENTQ_BODY_LIMIT",
            "must be at least 1 byte",
        ));
    }
    let mut config = ApiConfig::new(store, args.listen);
    config.body_limit = args.body_limit;
    config.last_used_flush = Duration::from_secs(args.last_used_flush_seconds.max(1));
    config.chat_timeout = Duration::from_secs(args.chat_timeout_seconds.max(1));
    config.allow_private_networks = t.allow_private_networks;
    config.rotation_grace = Duration::from_secs(args.webhook_rotation_grace_seconds);
    config.master_key = master_key(t)?;
    if let Some(url) = args.public_url.as_deref().filter(|u| !u.is_empty()) {
        agentq_shared::net::validate_url(url)
            .map_err(|e| ConfigError::invalid("AGENTQ_PUBLIC_URL", e))?;
        config.public_url = Some(url.to_owned());
    }
    if args.inbound_body_limit == 0 {
        return Err(ConfigError::invalid(
            "AGENTQ_INBOUND_BODY_LIMIT",
            "must be at least 1 byte",
        ));
    }
    config.inbound_body_limit = args.inbound_body_limit;
    config.inbound_per_ip_per_minute = args.inbound_per_ip_per_minute;
    config.inbound_per_hook_per_minute = args.inbound_per_hook_per_minute;
    config.rate_limits = args.rate_limits;
    config.default_rate_limit = agentq_api::ratelimit::Limit {
        per_minute: Some(args.default_rate_limit_per_minute).filter(|n| *n > 0),
        per_day: Some(args.default_rate_limit_per_day).filter(|n| *n > 0),
    };
    config.rate_limit_redis_down = match args.rate_limit_redis_down {
        super::args::RedisDownArg::Open => agentq_api::ratelimit::RedisDown::Open,
        super::args::RedisDownArg::Closed => agentq_api::ratelimit::RedisDown::Closed,
    };
    config.request_logs = args.request_logs;
    config.request_log_body_cap = args.request_log_body_cap;
    config.max_integrations_per_agent = args.max_integrations_per_agent;
    config.mcp_tools_cache_ttl = Duration::from_secs(args.mcp_tools_cache_seconds);
    config.mcp_timeout = Duration::from_secs(args.mcp_timeout_seconds.max(1));
    if args.db_acquire_timeout_ms == 0 {
        return Err(ConfigError::invalid(
            "AGENTQ_DB_ACQUIRE_TIMEOUT_MS",
            "must be at least 1 ms",
        ));
    }
    config.db_acquire_timeout = Duration::from_millis(args.db_acquire_timeout_ms);
    config.header_read_timeout = Duration::from_secs(args.header_read_timeout_seconds.max(1));
    config.body_read_timeout = Duration::from_secs(args.body_read_timeout_seconds.max(1));
    config.min_schedule_interval = Duration::from_secs(t.min_schedule_seconds);
    config.max_agents_per_team = i64::from(args.max_agents_per_team);
    config.dns_resolver = dns_resolver(t)?;
    if let Some(d) = args
        .agent_domain
        .as_deref()
        .filter(|d| !d.trim().is_empty())
    {
        let d = agentq_shared::agents::domains::normalize(d, None)
            .map_err(|e| ConfigError::invalid("AGENTQ_AGENT_DOMAIN", e))?;
        config.agent_domain = Some(d);
    }
    Ok(config)
}

fn dns_resolver(t: &TuningArgs) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    t.dns_resolver
        .as_deref()
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            v.trim().parse().map_err(|_| {
                ConfigError::invalid(
                    "AGENTQ_DNS_RESOLVER",
                    "must be an IP address and port, e.g. 127.0.0.1:53",
                )
            })
        })
        .transpose()
}

fn master_key(t: &TuningArgs) -> Result<Option<[u8; 32]>, ConfigError> {
    t.master_key
        .as_deref()
        .filter(|k| !k.trim().is_empty())
        .map(agentq_shared::crypto::parse_master_key)
        .transpose()
}

fn worker_config(
    store: StoreConfig,
    t: &TuningArgs,
    args: &WorkerArgs,
) -> Result<WorkerConfig, ConfigError> {
    if args.concurrency == 0 {
        return Err(ConfigError::invalid(
            "AGENTQ_WORKER_CONCURRENCY",
            "must be at least 1",
        ));
    }
    let mut config = WorkerConfig::new(store);
    config.concurrency = args.concurrency;
    // Jobs hold no connection while they wait (the lifecycle batches their statements), so
    // the pool stays at AGENTQ_DB_MAX_CONNECTIONS whatever the concurrency.
    config.stale_after = seconds("AGENTQ_STALE_AFTER_SECONDS", t.stale_after_seconds)?;
    config.heartbeat_every = config.stale_after / 4;
    config.claim_idle = seconds("AGENTQ_CLAIM_IDLE_SECONDS", args.claim_idle_seconds)?;
    config.redis_give_up = seconds("AGENTQ_REDIS_GIVE_UP_SECONDS", args.redis_give_up_seconds)?;
    config.allow_private_networks = t.allow_private_networks;
    config.master_key = master_key(t)?;
    if args.delivery_concurrency == 0 || args.endpoint_concurrency == 0 {
        return Err(ConfigError::invalid(
            "AGENTQ_DELIVERY_CONCURRENCY",
            "and AGENTQ_ENDPOINT_CONCURRENCY must be at least 1",
        ));
    }
    config.delivery_concurrency = args.delivery_concurrency;
    config.endpoint_concurrency = args.endpoint_concurrency;
    config.retry_schedule =
        agentq_shared::webhooks::schedule::RetrySchedule::parse(&args.webhook_retry_schedule)?;
    config.webhook_timeout = seconds(
        "AGENTQ_WEBHOOK_TIMEOUT_SECONDS",
        args.webhook_timeout_seconds,
    )?;
    config.disable_after = seconds(
        "AGENTQ_WEBHOOK_DISABLE_AFTER_SECONDS",
        args.webhook_disable_after_seconds,
    )?;
    Ok(config)
}

fn scheduler_config(
    store: StoreConfig,
    t: &TuningArgs,
    args: &SchedulerArgs,
) -> Result<SchedulerConfig, ConfigError> {
    let mut config = SchedulerConfig::new(store);
    config.stale_after = seconds("AGENTQ_STALE_AFTER_SECONDS", t.stale_after_seconds)?;
    config.requeue_after = seconds("AGENTQ_REQUEUE_AFTER_SECONDS", args.requeue_after_seconds)?;
    let days = |n: u32| (n > 0).then(|| Duration::from_secs(u64::from(n) * 86_400));
    config.retention.request_logs = days(args.request_log_retention_days);
    config.retention.runs = days(args.run_retention_days);
    config.retention.deliveries = days(args.delivery_retention_days);
    config.retention.audit = args.audit_retention_days.and_then(days);
    config.min_interval = Duration::from_secs(t.min_schedule_seconds);
    config.dns_resolver = dns_resolver(t)?;
    config.domain_check_every = seconds("AGENTQ_DOMAIN_CHECK_SECONDS", args.domain_check_seconds)?;
    config.catch_up = match args.catch_up {
        super::args::CatchUpArg::One => agentq_scheduler::CatchUp::One,
        super::args::CatchUpArg::Skip => agentq_scheduler::CatchUp::Skip,
    };
    Ok(config)
}

pub(crate) async fn serve_api(s: &StoreArgs, t: &TuningArgs, args: ApiArgs) -> Result<(), Failure> {
    let config = api_config(store_config(s)?, t, &args)?;
    let app = App::build(config).await?;
    app.run_until_stopped(stopped(shutdown_signal())).await?;
    Ok(())
}

pub(crate) async fn serve_worker(
    s: &StoreArgs,
    t: &TuningArgs,
    args: WorkerArgs,
) -> Result<(), Failure> {
    let config = worker_config(store_config(s)?, t, &args)?;
    agentq_worker::run(config, stopped(shutdown_signal())).await?;
    Ok(())
}

pub(crate) async fn serve_scheduler(
    s: &StoreArgs,
    t: &TuningArgs,
    args: SchedulerArgs,
) -> Result<(), Failure> {
    let config = scheduler_config(store_config(s)?, t, &args)?;
    agentq_scheduler::run(config, stopped(shutdown_signal())).await?;
    Ok(())
}

pub(crate) async fn retention(
    s: &StoreArgs,
    t: &TuningArgs,
    args: SchedulerArgs,
) -> Result<(), Failure> {
    let config = scheduler_config(store_config(s)?, t, &args)?;
    let db = agentq_shared::db::connect(&config.store.database_url, 2).await?;
    let retention = agentq_scheduler::retention::RetentionConfig {
        max_batches: usize::MAX,
        ..config.retention
    };
    let r = agentq_scheduler::retention::pass(&db, &retention).await?;
    println!(
        "partitions_created={} partitions_dropped={} runs_deleted={} deliveries_deleted={} events_deleted={}",
        r.partitions_created, r.partitions_dropped, r.runs_deleted, r.deliveries_deleted, r.events_deleted
    );
    Ok(())
}

pub(crate) async fn serve_all(s: &StoreArgs, t: &TuningArgs, args: AllArgs) -> Result<(), Failure> {
    let store = store_config(s)?;
    // One process, one connection budget: the roles share AGENTQ_DB_MAX_CONNECTIONS.
    let budget = store.db_max_connections;
    let api_share = (budget / 2).max(2);
    let worker_share = budget.saturating_sub(api_share + 2).max(3);
    let api = api_config(with_pool(&store, api_share), t, &args.api)?;
    let worker = worker_config(with_pool(&store, worker_share), t, &args.worker)?;
    let scheduler = scheduler_config(with_pool(&store, 2), t, &args.scheduler)?;
    migrated_pool(s).await?;
    let rx = shutdown_signal();
    let app = App::build(api).await?;
    let (a, w, sch) = tokio::join!(
        app.run_until_stopped(stopped(rx.clone())),
        agentq_worker::run(worker, stopped(rx.clone())),
        agentq_scheduler::run(scheduler, stopped(rx.clone())),
    );
    a?;
    w?;
    sch?;
    Ok(())
}

pub(crate) async fn teams(s: &StoreArgs, cmd: TeamsCommand) -> Result<(), Failure> {
    let pool = migrated_pool(s).await?;
    match cmd {
        TeamsCommand::Update { name, limit } => {
            let (m, d) = limit.resolve();
            if !team_db::set_rate_limit(&pool, name.trim(), m, d).await? {
                return Err(anyhow!("no team named '{name}'").into());
            }
            eprintln!("team '{name}': {} per minute, {} per day", show(m), show(d));
        }
        TeamsCommand::Create { name, limit } => {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 200 {
                return Err(anyhow!("team name must be 1 to 200 characters").into());
            }
            let team = match team_db::create(&pool, name).await? {
                Some(t) => t,
                None => {
                    eprintln!("team '{name}' already exists");
                    team_db::by_name(&pool, name)
                        .await?
                        .ok_or_else(|| anyhow!("team '{name}' vanished while reading it"))?
                }
            };
            let (m, d) = limit.resolve();
            if m.is_some() || d.is_some() {
                team_db::set_rate_limit(&pool, &team.name, m, d).await?;
            }
            println!("{}", team.id);
        }
        TeamsCommand::List => {
            for t in team_db::list(&pool).await? {
                println!("{}\t{}\t{}", t.id, t.name, t.created_at.to_rfc3339());
            }
        }
    }
    Ok(())
}

fn show(v: Option<i32>) -> String {
    v.map(|n| n.to_string()).unwrap_or_else(|| "default".into())
}

async fn team_named(pool: &sqlx::PgPool, name: &str) -> Result<team_db::Team, Failure> {
    team_db::by_name(pool, name).await?.ok_or_else(|| {
        anyhow!("no team named '{name}'; create it with: agentq teams create '{name}'").into()
    })
}

pub(crate) async fn keys(s: &StoreArgs, cmd: KeysCommand) -> Result<(), Failure> {
    let pool = migrated_pool(s).await?;
    match cmd {
        KeysCommand::Create {
            team,
            name,
            scopes,
            agents,
            expires,
            limit,
        } => {
            let team = team_named(&pool, &team).await?;
            let parts: Vec<&str> = scopes
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect();
            if parts.is_empty() {
                return Err(anyhow!("--scopes must name at least one scope, or all").into());
            }
            let scopes = ScopeSet::parse(&parts).map_err(|e| anyhow!("--scopes: {e}"))?;
            let lifetime: Lifetime = expires
                .parse()
                .map_err(|e: String| anyhow!("--expires: {e}"))?;
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 200 {
                return Err(anyhow!("--name must be 1 to 200 characters").into());
            }
            let (per_minute, per_day) = limit.resolve();
            let rate_limit = keys::KeyRateLimit {
                per_minute,
                per_day,
            };
            let spec = KeySpec {
                team_id: team.id,
                name,
                scopes: &scopes,
                agent_ids: &agents,
                lifetime,
                rate_limit,
            };
            let (row, secret) =
                keys::create(&pool, spec, Actor::Cli, RequestMeta::default()).await?;
            eprintln!(
                "created key {} ({}) for team '{}'; it is shown only once:",
                row.id, row.prefix, team.name
            );
            println!("{secret}");
        }
        KeysCommand::List { team } => {
            let team = team_named(&pool, &team).await?;
            let mut cursor = Cursor::new(Some(200), None).map_err(|e| anyhow!(e))?;
            println!("id\tname\tprefix\tscopes\tagents\tcreated_at\texpires_at\tlast_used_at\trevoked_at");
            loop {
                let page = keys::list(&pool, team.id, &cursor).await?;
                for k in &page.data {
                    let t = |v: Option<chrono::DateTime<chrono::Utc>>| {
                        v.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into())
                    };
                    let agents: Vec<String> = k.agent_ids.iter().map(|a| a.to_string()).collect();
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        k.id,
                        k.name,
                        k.prefix,
                        k.scopes.join(","),
                        if agents.is_empty() {
                            "*".into()
                        } else {
                            agents.join(",")
                        },
                        k.created_at.to_rfc3339(),
                        t(k.expires_at),
                        t(k.last_used_at),
                        t(k.revoked_at)
                    );
                }
                match page.next_cursor {
                    Some(c) => cursor = Cursor::new(Some(200), Some(&c)).map_err(|e| anyhow!(e))?,
                    None => break,
                }
            }
        }
        KeysCommand::Revoke { key_id } => {
            match keys::revoke(
                &pool,
                None,
                ApiKeyId(key_id),
                Actor::Cli,
                RequestMeta::default(),
            )
            .await?
            {
                Revoked::Now(k) => eprintln!("revoked key {} ({})", k.id, k.prefix),
                Revoked::Already(k) => eprintln!("key {} ({}) was already revoked", k.id, k.prefix),
                Revoked::NotFound => return Err(anyhow!("no key with id {key_id}").into()),
            }
        }
    }
    Ok(())
}
