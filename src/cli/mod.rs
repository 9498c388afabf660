//! The command line: arguments (each also an environment variable), validation, and the
//! dispatch to api, worker, scheduler and the admin commands.

mod admin;
mod args;
mod metrics_server;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use agentq_shared::config::ConfigError;
pub(crate) use args::Cli;
use args::{Command, LogFormat};

/// Exit code for a missing or malformed setting.
const EXIT_CONFIG: u8 = 2;

/// Parses argv; a malformed value is reported as one line naming its variable.
pub(crate) fn parse() -> Result<Cli, ExitCode> {
    let mut cmd = Cli::command();
    let matches = cmd.try_get_matches_from_mut(std::env::args_os());
    match matches.and_then(|m| Cli::from_arg_matches(&m)) {
        Ok(cli) => Ok(cli),
        Err(e) => {
            use clap::error::{ContextKind, ContextValue, ErrorKind};
            if matches!(
                e.kind(),
                ErrorKind::ValueValidation | ErrorKind::InvalidValue
            ) {
                let arg = match e.get(ContextKind::InvalidArg) {
                    Some(ContextValue::String(s)) => s.clone(),
                    _ => String::from("a setting"),
                };
                let value = match e.get(ContextKind::InvalidValue) {
                    Some(ContextValue::String(s)) => s.clone(),
                    _ => String::new(),
                };
                let env = env_name_of(&cmd, &arg);
                let name = match env {
                    Some(env) => format!("{env} ({})", arg.split(' ').next().unwrap_or(&arg)),
                    None => arg.split(' ').next().unwrap_or(&arg).to_owned(),
                };
                eprintln!("error: {name} is not valid: '{value}'");
                return Err(ExitCode::from(EXIT_CONFIG));
            }
            let _ = e.print();
            Err(ExitCode::from(e.exit_code() as u8))
        }
    }
}

/// The environment variable behind a flag as clap prints it (`--listen <LISTEN>`).
fn env_name_of(cmd: &clap::Command, shown: &str) -> Option<String> {
    let long = shown.split(' ').next()?.trim_start_matches("--");
    let find = |c: &clap::Command| {
        c.get_arguments()
            .find(|a| a.get_long() == Some(long))
            .and_then(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
    };
    find(cmd).or_else(|| {
        cmd.get_subcommands()
            .flat_map(|s| std::iter::once(s).chain(s.get_subcommands()))
            .find_map(find)
    })
}

/// Runs the chosen command to its end.
pub(crate) async fn run(cli: Cli) -> ExitCode {
    let role = match &cli.command {
        Command::Api(_) => "api",
        Command::Worker(_) => "worker",
        Command::Scheduler(_) => "scheduler",
        Command::All(_) => "all",
        _ => "admin",
    };
    let tracing = agentq_shared::telemetry::init_tracing(cli.log_format == LogFormat::Json, role);
    let outcome = dispatch(cli).await;
    tracing.shutdown().await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failure::Other(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How a command failed: bad settings (exit 2) or anything else (exit 1).
pub(crate) enum Failure {
    Config(ConfigError),
    Other(anyhow::Error),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Config(e)
    }
}

macro_rules! other_failure {
    ($($t:ty),*) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Self {
                Failure::Other(e.into())
            }
        }
    )*};
}

other_failure!(
    anyhow::Error,
    sqlx::Error,
    sqlx::migrate::MigrateError,
    std::io::Error,
    agentq_api::StartError,
    agentq_worker::WorkerError,
    agentq_scheduler::SchedulerError
);

async fn dispatch(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Migrate => admin::migrate(&cli.store).await,
        Command::Api(args) => admin::serve_api(&cli.store, &cli.tuning, args).await,
        Command::Worker(role) => {
            let serving = metrics_server::start(role.metrics_listen).await?;
            admin::serve_worker(&cli.store, &cli.tuning, role.args).await?;
            serving.stop();
            Ok(())
        }
        Command::Scheduler(role) => {
            let serving = metrics_server::start(role.metrics_listen).await?;
            admin::serve_scheduler(&cli.store, &cli.tuning, role.args).await?;
            serving.stop();
            Ok(())
        }
        Command::All(args) => admin::serve_all(&cli.store, &cli.tuning, args).await,
        Command::Retention(args) => admin::retention(&cli.store, &cli.tuning, args).await,
        Command::Teams(cmd) => admin::teams(&cli.store, cmd).await,
        Command::Keys(cmd) => admin::keys(&cli.store, cmd).await,
    }
}
