//! Image features: a backbone's patch tokens per image, cached in the dataset folder
//! (`DATA/features/`), read by stage 1 and evaluation.

use crate::progress::{counted, Event, OnEvent};
use std::path::Path;

/// Computes and caches `backbone`'s image features for the dataset in `data` (`DATA/features/`).
pub fn extract_features(
    data: &Path,
    backbone: &str,
    on: OnEvent<'_>,
) -> anyhow::Result<deper_train::features::FeatureMeta> {
    let ds = deper_core::dataset::Dataset::open(data)?;
    let meta = deper_train::features::extract(&ds, backbone, &mut counted("features", "features", &mut *on))?;
    on(Event::End);
    Ok(meta)
}

/// Makes sure `data` has splits and `backbone` features, as `deper dataset split` and `deper
/// features extract` would with their defaults (the server's training job on a fresh export).
pub fn prepare_dataset(data: &Path, backbone: &str, on: OnEvent<'_>) -> anyhow::Result<()> {
    if !data.join(deper_core::dataset::SPLITS_FILE).is_file() {
        crate::dataset::split(data, &deper_core::split::SplitConfig::default())?;
        on(Event::Note { line: "made default splits".into(), detail: serde_json::json!({"event": "splits"}) });
    }
    if deper_train::features::load(data, backbone).is_err() {
        extract_features(data, backbone, &mut *on)?;
        on(Event::Note {
            line: format!("extracted {backbone} features"),
            detail: serde_json::json!({"event": "features_done"}),
        });
    }
    Ok(())
}
