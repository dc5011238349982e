//! Generates the synthetic world and reports how long it took.
//!
//! `cargo run -p deper-synth --example synth_generate -- OUT [images] [subjects] [seed]`

use deper_synth::{generate, SynthConfig};
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = PathBuf::from(args.get(1).map_or("/tmp/deper-synth-example", String::as_str));
    let mut config = SynthConfig::default();
    if let Some(n) = args.get(2).and_then(|s| s.parse().ok()) {
        config.images = n;
    }
    if let Some(n) = args.get(3).and_then(|s| s.parse().ok()) {
        config.subjects = n;
    }
    if let Some(n) = args.get(4).and_then(|s| s.parse().ok()) {
        config.seed = n;
    }
    let start = Instant::now();
    match generate(&config, &out, &mut |_, _| {}) {
        Ok(summary) => {
            println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
            println!("generated in {:.2} s", start.elapsed().as_secs_f64());
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
