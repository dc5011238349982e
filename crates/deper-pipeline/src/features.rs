//! Image features: a backbone's patch tokens per image, cached in the dataset folder
//! (`DATA/features/<name>/`), read by stage 1 and evaluation.

use crate::backend::{with_backend, DeviceKind};
use crate::progress::{counted, Event, OnEvent};
use deper_train::features::{ExtractSettings, FeatureMeta};
use std::path::Path;

/// Computes and caches the features `settings` asks for, for the dataset in `data`, on `device`
/// (a second run resumes an interrupted one and skips the images already done).
pub fn extract(
    data: &Path,
    settings: &ExtractSettings,
    device: DeviceKind,
    on: OnEvent<'_>,
) -> anyhow::Result<FeatureMeta> {
    let ds = deper_core::dataset::Dataset::open(data)?;
    let meta = with_backend!(device, B, AD, dev => {
        deper_train::features::extract_with::<B>(&ds, settings, &dev, &mut counted("features", "features", &mut *on))
            .map_err(anyhow::Error::from)
    })?;
    on(Event::End);
    Ok(meta)
}

/// Computes and caches `backbone`'s features with its defaults on the CPU (`pixel-stats`, the
/// synthetic world's descriptor, needs no model).
pub fn extract_features(data: &Path, backbone: &str, on: OnEvent<'_>) -> anyhow::Result<FeatureMeta> {
    extract(data, &ExtractSettings { backbone: backbone.into(), ..ExtractSettings::default() }, DeviceKind::Cpu, on)
}

/// Makes sure `data` has splits and `backbone` features, as `deper dataset split` and `deper
/// features extract` would with their defaults (the server's training job on a fresh export).
pub fn prepare_dataset(data: &Path, backbone: &str, on: OnEvent<'_>) -> anyhow::Result<()> {
    if !data.join(deper_core::dataset::SPLITS_FILE).is_file() {
        crate::dataset::split(data, &deper_core::split::SplitConfig::default())?;
        on(Event::Note { line: "made default splits".into(), detail: serde_json::json!({"event": "splits"}) });
    }
    if !deper_train::features::is_complete(data, backbone) {
        extract_features(data, backbone, &mut *on)?;
        on(Event::Note {
            line: format!("extracted {backbone} features"),
            detail: serde_json::json!({"event": "features_done"}),
        });
    }
    Ok(())
}

/// `deper backbone forward`: `pixel_values` f32 `[N, 3, H, W]` from `inputs` through the DINOv3
/// checkpoint in `model` (ViT or ConvNeXt, by its `config.json`), `last_hidden_state` f32
/// `[N, T, C]` written to `out`.
pub fn backbone_forward(model: &Path, inputs: &Path, out: &Path, device: DeviceKind) -> anyhow::Result<Vec<usize>> {
    use anyhow::Context;
    let ck = deper_weights::Checkpoint::open(inputs)?;
    let (pixels, shape) = ck.f32_any("pixel_values")?;
    let (n, c, h, w) = match *shape.as_slice() {
        [n, c @ 3, h, w] if n > 0 => (n, c, h, w),
        _ => anyhow::bail!("{}: `pixel_values` has shape {shape:?}, expected [N, 3, H, W]", inputs.display()),
    };
    let (values, out_shape) = with_backend!(device, B, AD, dev => {
        let backbone = deper_model::backbone::AnyBackbone::<B>::load(model, &dev)?;
        let stride = backbone.stride();
        anyhow::ensure!(
            h % stride == 0 && w % stride == 0,
            "{}: `pixel_values` is {h}×{w} pixels; {} needs sides that are multiples of {stride}",
            inputs.display(),
            backbone.family()
        );
        let input = burn::tensor::Tensor::<B, 4>::from_data(burn::tensor::TensorData::new(pixels, [n, c, h, w]), &dev);
        let hidden = backbone.forward(input);
        let dims = hidden.dims().to_vec();
        let values = hidden.into_data().convert::<f32>().into_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok::<_, anyhow::Error>((values, dims))
    })?;
    deper_weights::write_safetensors(
        out,
        &[("last_hidden_state", deper_weights::TensorData::F32(&values, &out_shape))],
    )
    .with_context(|| format!("writing {}", out.display()))?;
    Ok(out_shape)
}
