//! The `deper` command line. All logic lives in the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = deper_server::cli::Cli::parse();
    match deper_server::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
