//! What a stage-1 run folder's `run.json` says about the network, shared by training
//! (deper-train's `RunInfo`, which owns the file) and the browser (deper-web, which only reads it).
//!
//! [`ModelSettings`] is the `config.model` section; [`deper_config`] turns it, with the sizes
//! that come from the data, into a [`DeperConfig`]; [`RunModel`] is a lenient read of the
//! fields inference needs (other fields are ignored, so training-only settings can change
//! without touching the browser). [`TextEmbeddings`] records a run whose captions are embedded
//! with a VLM's frozen input-embedding table instead of the run's own word vocabulary.

use serde::{Deserialize, Serialize};

use crate::encoder::EncoderForm;
use crate::model::DeperConfig;
use crate::text::WordVocab;

/// The `stage` of a stage-1 run.
pub const STAGE1: &str = "stage1";

/// Default `config.train.max_caption_tokens`: captions are cut to this many tokens.
pub const DEFAULT_MAX_CAPTION_TOKENS: usize = 64;

/// Default `config.train.max_caption_tokens` of a run with a VLM's text side
/// ([`TextEmbeddings`]): the authors' limit.
pub const VLM_MAX_CAPTION_TOKENS: usize = 256;

/// Rows of the DEPER network's own caption table in a run with a VLM's text side: the network
/// reads caption embeddings gathered from the VLM's table, so its own table is never looked up.
pub const UNUSED_TABLE_ROWS: usize = 1;

/// Default `config.train.batch_size` (training, evaluation and embedding batches).
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// Network sizes; the rest of [`DeperConfig`] comes from the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSettings {
    pub d_model: usize,
    pub n_heads: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    /// Width of the caption token table.
    pub token_dim: usize,
    pub dropout: f64,
    pub encoder_form: EncoderForm,
    /// The `--no-trajectory` ablation.
    pub no_trajectory: bool,
    /// Add patch-centre position encodings to the image tokens (see
    /// [`DeperConfig::image_positions`]). Runs written before the setting existed lack it in
    /// `run.json` and were trained without: [`legacy_model_defaults`] reads them so.
    pub image_positions: bool,
    /// Add token-index position encodings to the caption tokens (see
    /// [`DeperConfig::caption_positions`]).
    pub caption_positions: bool,
    /// Learned queries behind the scanpath latent `z_scan` (see
    /// [`DeperConfig::n_scan_queries`]); 1, the authors' form, by default and in older runs.
    pub scan_queries: usize,
}

impl Default for ModelSettings {
    /// The paper's sizes: D = 384, 4 heads, 2 encoder layers, 4 decoder layers, dropout 0.1.
    fn default() -> Self {
        Self {
            d_model: 384,
            n_heads: 4,
            encoder_layers: 2,
            decoder_layers: 4,
            token_dim: 384,
            dropout: 0.1,
            encoder_form: EncoderForm::Interleaved,
            no_trajectory: false,
            image_positions: true,
            caption_positions: true,
            scan_queries: 1,
        }
    }
}

impl ModelSettings {
    /// A small network that trains on the synthetic world on a CPU in minutes.
    pub fn tiny() -> Self {
        Self { d_model: 64, n_heads: 4, encoder_layers: 2, decoder_layers: 2, token_dim: 32, ..Self::default() }
    }

    /// The preset names the CLI and the server accept: `paper` (the default sizes) and `tiny`.
    pub const PRESETS: [&'static str; 2] = ["paper", "tiny"];

    /// The preset called `name`, if there is one.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "paper" => Some(Self::default()),
            "tiny" => Some(Self::tiny()),
            _ => None,
        }
    }
}

/// The network of a run: `model` sizes, patch channels from `feature_grid` (`[h, w, c]`),
/// the caption vocabulary size and the number of trained subjects.
pub fn deper_config(
    model: &ModelSettings,
    feature_grid: [usize; 3],
    vocab_size: usize,
    num_subjects: usize,
) -> DeperConfig {
    DeperConfig::new(feature_grid[2], vocab_size, model.token_dim, num_subjects)
        .with_d_model(model.d_model)
        .with_n_heads(model.n_heads)
        .with_encoder_layers(model.encoder_layers)
        .with_decoder_layers(model.decoder_layers)
        .with_dropout(model.dropout)
        .with_encoder_form(model.encoder_form)
        .with_no_trajectory(model.no_trajectory)
        .with_image_positions(model.image_positions)
        .with_caption_positions(model.caption_positions)
        .with_n_scan_queries(model.scan_queries)
}

/// `run.json`'s `text_embeddings`: captions were tokenised with the VLM folder's `tokenizer.json`
/// and embedded with its frozen input-embedding table (as the authors do), not with the run's word
/// vocabulary. What is needed to check the folder when the run is reopened is kept with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextEmbeddings {
    /// The VLM folder, absolute.
    pub vlm_dir: String,
    /// Key of the input-embedding table in the folder's checkpoint.
    pub key: String,
    /// Rows of the table.
    pub vocab_size: usize,
    /// Width of the table: the DEPER network's caption token width (`token_dim`).
    pub hidden: usize,
}

impl TextEmbeddings {
    /// The network of a run with this text side: `model` with `token_dim` = the table's width and
    /// an unused own table of [`UNUSED_TABLE_ROWS`] rows.
    pub fn deper_config(&self, model: &ModelSettings, feature_grid: [usize; 3], num_subjects: usize) -> DeperConfig {
        let model = ModelSettings { token_dim: self.hidden, ..model.clone() };
        deper_config(&model, feature_grid, UNUSED_TABLE_ROWS, num_subjects)
    }
}

/// Fills in, in a parsed `run.json`, the model settings that runs written before they existed
/// were trained with (a missing field would otherwise take today's default and change what
/// the stored weights compute). Call it on the JSON value before deserialising.
pub fn legacy_model_defaults(run_json: &mut serde_json::Value) {
    let Some(config) = run_json.get_mut("config").and_then(|c| c.as_object_mut()) else { return };
    let model = config.entry("model").or_insert_with(|| serde_json::json!({}));
    if let Some(model) = model.as_object_mut() {
        for setting in ["image_positions", "caption_positions"] {
            model.entry(setting).or_insert(serde_json::Value::Bool(false));
        }
    }
}

/// The inference-relevant part of a stage-1 `run.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RunModel {
    pub stage: String,
    pub config: RunModelConfig,
    /// Trained (seen) subjects, sorted; label = index.
    pub subjects: Vec<String>,
    /// Caption vocabulary, id = index (empty in a run with `text_embeddings`).
    #[serde(default)]
    pub vocab: Vec<String>,
    /// Patch grid `[h, w, c]` of the features the run was trained on.
    pub feature_grid: [usize; 3],
    /// Set when captions are embedded with a VLM's table instead of `vocab`.
    #[serde(default)]
    pub text_embeddings: Option<TextEmbeddings>,
}

/// `config` of [`RunModel`]: the model section and the caption length.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RunModelConfig {
    #[serde(default)]
    pub model: ModelSettings,
    #[serde(default)]
    pub train: RunInferenceSettings,
}

/// The training settings inference needs: how captions are cut and how samples are batched.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct RunInferenceSettings {
    pub max_caption_tokens: usize,
    pub batch_size: usize,
}

impl Default for RunInferenceSettings {
    fn default() -> Self {
        Self { max_caption_tokens: DEFAULT_MAX_CAPTION_TOKENS, batch_size: DEFAULT_BATCH_SIZE }
    }
}

impl RunModel {
    /// Reads `run.json` text; errors name the field (`config.model.d_model: …`) and refuse a run
    /// of another stage.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let mut value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("run.json is not JSON: {e}"))?;
        let stage = value.get("stage").and_then(|s| s.as_str()).unwrap_or("<missing>");
        if stage != STAGE1 {
            return Err(format!("run.json: run is `{stage}`, not {STAGE1}"));
        }
        legacy_model_defaults(&mut value);
        let run: Self =
            serde_path_to_error::deserialize(value).map_err(|e| format!("run.json: {}: {}", e.path(), e.inner()))?;
        let [h, w, c] = run.feature_grid;
        if h == 0 || w == 0 || c == 0 {
            return Err(format!("run.json: feature_grid {:?} has a zero size", run.feature_grid));
        }
        let m = &run.config.model;
        if m.d_model == 0 || m.n_heads == 0 || m.d_model % m.n_heads != 0 || m.d_model % 4 != 0 {
            return Err(format!(
                "run.json: config.model.d_model {} must be a positive multiple of 4 and of config.model.n_heads {}",
                m.d_model, m.n_heads
            ));
        }
        if m.scan_queries == 0 {
            return Err("run.json: config.model.scan_queries must be at least 1".into());
        }
        if (run.vocab.is_empty() && run.text_embeddings.is_none()) || run.subjects.is_empty() {
            return Err("run.json: vocab and subjects must not be empty".into());
        }
        Ok(run)
    }

    pub fn model_config(&self) -> DeperConfig {
        match &self.text_embeddings {
            Some(text) => text.deper_config(&self.config.model, self.feature_grid, self.subjects.len()),
            None => deper_config(&self.config.model, self.feature_grid, self.vocab.len(), self.subjects.len()),
        }
    }

    pub fn vocab(&self) -> WordVocab {
        WordVocab::from_words(self.vocab.clone())
    }
}

/// Element-wise mean of equally long vectors (a subject's embedding: the mean `z_s` over its
/// triplets), summed in order in `f32`; empty input gives an empty vector.
pub fn mean_vector(vectors: &[&Vec<f32>]) -> Vec<f32> {
    let d = vectors.first().map_or(0, |v| v.len());
    let mut m = vec![0.0; d];
    for v in vectors {
        for (a, b) in m.iter_mut().zip(v.iter()) {
            *a += b;
        }
    }
    let n = vectors.len().max(1) as f32;
    m.iter().map(|x| x / n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_inference_fields_and_ignores_the_rest() {
        let text = r#"{"stage":"stage1","config":{"train":{"epochs":3,"max_caption_tokens":12},
            "model":{"d_model":32,"n_heads":4,"token_dim":8},"loss":{}},"subjects":["a","b"],
            "vocab":["<pad>","<unk>","red"],"feature_grid":[2,3,5],"data":"/x"}"#;
        let run = RunModel::from_json(text).unwrap();
        assert_eq!(run.config.train.max_caption_tokens, 12);
        assert_eq!(run.config.train.batch_size, DEFAULT_BATCH_SIZE);
        let c = run.model_config();
        assert_eq!((c.patch_dim, c.vocab_size, c.token_dim, c.num_subjects, c.d_model), (5, 3, 8, 2, 32));
        assert_eq!(c.decoder_layers, ModelSettings::default().decoder_layers);
        // Written before the setting existed: trained without image positions.
        assert!(!c.image_positions && !c.caption_positions);
        assert_eq!(c.n_scan_queries, 1);
        let text = text.replace(r#""token_dim":8"#, r#""token_dim":8,"image_positions":true,"scan_queries":6"#);
        let c = RunModel::from_json(&text).unwrap().model_config();
        assert!(c.image_positions && !c.caption_positions);
        assert_eq!(c.n_scan_queries, 6);
        // No model section at all: the paper sizes, without positions.
        let bare = r#"{"stage":"stage1","config":{},"subjects":["a"],"vocab":["x"],"feature_grid":[1,1,1]}"#;
        let c = RunModel::from_json(bare).unwrap().model_config();
        assert_eq!(c.d_model, ModelSettings::default().d_model);
        assert!(!c.image_positions && !c.caption_positions);
        for m in [ModelSettings::default(), ModelSettings::tiny()] {
            assert!(m.image_positions && m.caption_positions);
        }
    }

    #[test]
    fn a_vlm_text_side_sets_the_token_width() {
        let text = r#"{"stage":"stage1","config":{"model":{"d_model":32,"n_heads":4,"token_dim":8}},"subjects":["a"],
            "feature_grid":[2,3,5],"text_embeddings":{"vlm_dir":"/m","key":"model.embed_tokens.weight",
            "vocab_size":400,"hidden":64}}"#;
        let run = RunModel::from_json(text).unwrap();
        assert!(run.vocab.is_empty());
        assert_eq!(run.text_embeddings.as_ref().map(|t| t.hidden), Some(64));
        let c = run.model_config();
        assert_eq!((c.vocab_size, c.token_dim, c.d_model), (UNUSED_TABLE_ROWS, 64, 32));
        // Without either a vocabulary or a VLM's table there is no way to read a caption.
        let err = RunModel::from_json(&text.replace(r#""text_embeddings""#, r#""unused""#)).unwrap_err();
        assert!(err.contains("vocab"), "{err}");
    }

    #[test]
    fn names_the_bad_field_and_the_wrong_stage() {
        let bad = r#"{"stage":"stage1","config":{"model":{"d_model":"big"}},"subjects":["a"],"vocab":["x"],"feature_grid":[1,1,1]}"#;
        let err = RunModel::from_json(bad).unwrap_err();
        assert!(err.contains("config.model.d_model"), "{err}");
        let err = RunModel::from_json(r#"{"stage":"stage2"}"#).unwrap_err();
        assert!(err.contains("`stage2`, not stage1"), "{err}");
        assert!(RunModel::from_json("not json").unwrap_err().contains("not JSON"));
    }
}
