//! The small synthetic world and tiny network the stage-1 tests share.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses some of these; broken fixtures fail loudly

use deper_core::dataset::Dataset;
use deper_core::split::{apply_splits, SplitConfig, UnseenChoice};
use deper_train::features;
use deper_train::stage1::{self, ModelSettings, Stage1Config, TrainSettings};
use std::path::{Path, PathBuf};

pub fn world(dir: &Path) -> PathBuf {
    world_seeded(dir, 2)
}

pub fn world_seeded(dir: &Path, seed: u64) -> PathBuf {
    let data = dir.join("world");
    let config = deper_synth::SynthConfig { subjects: 4, images: 24, coverage: 1.0, seed, ..Default::default() };
    deper_synth::generate(&config, &data, &mut |_, _| {}).unwrap();
    let ds = Dataset::open(&data).unwrap();
    let split =
        SplitConfig { unseen: UnseenChoice::List(vec!["s03".into()]), keep_image_splits: true, ..Default::default() };
    apply_splits(&ds, &split).unwrap();
    features::extract(&ds, features::PIXEL_STATS, &mut |_, _| {}).unwrap();
    data
}

pub fn tiny(epochs: usize) -> Stage1Config {
    Stage1Config {
        train: TrainSettings { epochs, batch_size: 16, ..TrainSettings::default() },
        model: ModelSettings {
            d_model: 32,
            n_heads: 2,
            encoder_layers: 1,
            decoder_layers: 1,
            token_dim: 16,
            ..ModelSettings::tiny()
        },
        ..Stage1Config::default()
    }
}

pub fn metrics_lines(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join(stage1::METRICS_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
