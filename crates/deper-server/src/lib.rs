//! deper-server: the `deper` command line (and, as the project grows, the
//! study server). `main.rs` stays thin; everything is callable from tests.

pub mod cli;
pub mod evaluate;
pub mod progress;
