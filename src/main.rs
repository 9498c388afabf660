//! `agentq`: one binary for every role. `main` parses the command line, validates the
//! settings (a bad one is one line on stderr and exit code 2) and hands over to the crates.

mod cli;

use std::process::ExitCode;

/// mimalloc rather than glibc malloc: per-thread heaps, no arena locks; see Cargo.toml.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(cli::run(cli))
}
