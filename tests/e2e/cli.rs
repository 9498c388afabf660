//! The binary's contract: migrate, teams, keys, help, and one-line config errors (exit 2).

use crate::common::procs::run;
use crate::common::{redis_url, TestDb};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn keys_create_prints_only_the_key_and_list_and_revoke_work() {
    let db = TestDb::new().await;
    let env = [("DATABASE_URL", db.url.as_str())];
    let o = run(&["migrate"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["migrate"], &env);
    assert!(o.status.success(), "migrate is idempotent: {}", stderr(&o));

    let o = run(&["teams", "create", "acme"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(
        &[
            "keys",
            "create",
            "--team",
            "acme",
            "--name",
            "ci",
            "--scopes",
            "agents:read,keys:read",
            "--expires",
            "30d",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(
        out.lines().count(),
        1,
        "nothing but the key on stdout: {out:?}"
    );
    let key = out.lines().last().unwrap();
    assert!(agentq_shared::keys::looks_like_key(key), "{key}");

    let o = run(&["keys", "list", "--team", "acme"], &env);
    assert!(o.status.success());
    let listing = stdout(&o);
    assert!(
        listing.contains(&key[..11]) && listing.contains("agents:read,keys:read"),
        "{listing}"
    );
    assert!(!listing.contains(key), "list never shows the key");
    let id = listing
        .lines()
        .nth(1)
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_owned();

    let o = run(&["keys", "revoke", &id], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let revoked: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT revoked_at FROM api_keys WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(revoked.is_some());
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_logs WHERE actor_type = 'cli' ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(actions, ["api_key.created", "api_key.revoked"]);

    let o = run(
        &[
            "keys", "create", "--team", "nobody", "--name", "x", "--scopes", "all",
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).is_empty() && stderr(&o).contains("nobody"));
    let o = run(
        &[
            "keys",
            "create",
            "--team",
            "acme",
            "--name",
            "x",
            "--scopes",
            "agents:fly",
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("agents:fly"));
    let o = run(
        &["keys", "revoke", "00000000-0000-0000-0000-000000000000"],
        &env,
    );
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn missing_or_malformed_settings_stop_start_up_naming_them() {
    let redis = redis_url();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["api"],
            vec![("REDIS_URL", redis.as_str())],
            "DATABASE_URL",
        ),
        (
            vec!["api"],
            vec![("DATABASE_URL", "postgres://x/y")],
            "REDIS_URL",
        ),
        (
            vec!["worker"],
            vec![
                ("DATABASE_URL", "mysql://x/y"),
                ("REDIS_URL", redis.as_str()),
            ],
            "DATABASE_URL",
        ),
        (vec!["migrate"], vec![], "DATABASE_URL"),
        (
            vec!["api"],
            vec![
                ("DATABASE_URL", "postgres://x/y"),
                ("REDIS_URL", "http://nope"),
            ],
            "REDIS_URL",
        ),
        (
            vec!["api"],
            vec![
                ("DATABASE_URL", "postgres://x/y"),
                ("REDIS_URL", redis.as_str()),
                ("AGENTQ_LISTEN", "not-an-address"),
            ],
            "AGENTQ_LISTEN",
        ),
        (
            vec!["api"],
            vec![
                ("DATABASE_URL", "postgres://x/y"),
                ("REDIS_URL", redis.as_str()),
                ("AGENTQ_DB_MAX_CONNECTIONS", "many"),
            ],
            "AGENTQ_DB_MAX_CONNECTIONS",
        ),
        (
            vec!["worker"],
            vec![
                ("DATABASE_URL", "postgres://x/y"),
                ("REDIS_URL", redis.as_str()),
                ("AGENTQ_WORKER_CONCURRENCY", "0"),
            ],
            "AGENTQ_WORKER_CONCURRENCY",
        ),
    ];
    for (args, env, name) in cases {
        let o = run(&args, &env);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?} {env:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
        assert!(err.contains(name), "{args:?} names {name}: {err}");
    }
}

#[test]
fn every_command_explains_itself() {
    let o = run(&["--help"], &[]);
    assert!(o.status.success());
    let top = stdout(&o);
    for sub in [
        "migrate",
        "api",
        "worker",
        "scheduler",
        "all",
        "teams",
        "keys",
    ] {
        assert!(top.contains(sub), "--help lists {sub}");
        let o = run(&[sub, "--help"], &[]);
        assert!(o.status.success(), "{sub} --help");
        assert!(stdout(&o).contains("Usage"), "{sub} --help");
    }
    for sub in [
        ["keys", "create"],
        ["keys", "list"],
        ["keys", "revoke"],
        ["teams", "create"],
    ] {
        let o = run(&[sub[0], sub[1], "--help"], &[]);
        assert!(
            o.status.success() && stdout(&o).contains("Usage"),
            "{sub:?} --help"
        );
    }
}
