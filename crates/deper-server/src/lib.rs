//! deper-server: the `deper` binary: the command line ([`cli`], thin: clap and progress bars over
//! `deper_pipeline`) and the study server ([`server::launch`]). `main.rs` stays thin; everything is
//! callable from tests.

pub mod cli;
pub mod server;
