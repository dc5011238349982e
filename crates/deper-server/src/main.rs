//! The `deper` command line. All logic lives in the library.

use clap::Parser;

/// Log filter when `RUST_LOG` is unset: deper's own events (the server's request log among them)
/// and warnings from everything else.
const DEFAULT_LOG_FILTER: &str = "warn,deper_server=info";

fn main() -> std::process::ExitCode {
    init_logging();
    let cli = deper_server::cli::Cli::parse();
    match deper_server::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr (stdout carries command output and the server's first-start token line),
/// filtered by `RUST_LOG`, coloured only on a terminal.
fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("warning: RUST_LOG={spec}: {e}; logging with `{DEFAULT_LOG_FILTER}`");
            EnvFilter::new(DEFAULT_LOG_FILTER)
        }),
        _ => EnvFilter::new(DEFAULT_LOG_FILTER),
    };
    // `try_init`: a dependency may have installed a logger already; then that one logs.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
