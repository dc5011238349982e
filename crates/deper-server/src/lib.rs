//! deper-server: the `deper` command line and the study server ([`server::launch`]).
//! `main.rs` stays thin; everything is callable from tests.

pub mod cli;
pub mod evaluate;
pub mod progress;
pub mod server;
