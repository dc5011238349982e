//! The tiny frozen captioner of the synthetic world (`deper pretrain-vlm`), the demo's stand-in
//! for a real VLM.
//!
//! A small model of the Qwen2-VL architecture, trained from scratch on the synthetic world's
//! train-split images and saved in the Hugging Face layout (`config.json`, `model.safetensors`,
//! `tokenizer.json`, `tokenizer_config.json`, `chat_template.jinja`, `preprocessor_config.json`,
//! `generation_config.json`), so the loading code that serves a real checkpoint serves it too.
//!
//! What it learns from (train-split images of the study and fresh scenes, no subject identity anywhere):
//! - `"Describe the image."` → the scene's subject-neutral caption (`scenes.jsonl`);
//! - `"Describe the image in the style of <|persona|>."`, with the persona token's own, generic
//!   embedding → the descriptions people wrote of that image, pooled over subjects.
//!
//! The second kind stands in for what a real VLM brings from pretraining: the words and phrasings
//! people use. Without it a frozen model trained on one neutral template could not say anything a
//! persona vector might select. The persona slot is the one stage 2 overwrites; the zero-shot baseline
//! is the same prompt with the slot's generic embedding.
//!
//! A real VLM also follows instructions about style. The tiny model learns the analog: for 75 % of
//! the description examples the persona slot holds a soft prompt, the mean input embedding of a random
//! half of the target description's tokens (its wording, no subject identity); for the rest it keeps
//! the persona token's own embedding, which is what the zero-shot baseline sees. Without this the
//! slot is a constant during pretraining and the frozen model learns to ignore whatever is put there.
//! The summary leaves out the words that name the image's content (colours, shapes, sizes,
//! backgrounds), so the slot says how to talk and the image says what is there.
//!
//! A real VLM reads its image. Trained from scratch on ~100 study images, the tiny model did not:
//! it wrote one caption for every scene, because the wording is far easier to predict than the
//! content. Two things make it look:
//! - an image-words loss: from each image's tokens alone, predict which words its neutral caption
//!   uses (binary cross-entropy, each word's logit the maximum over the image tokens); the head is
//!   used only while pretraining and not saved;
//! - freshly drawn scenes (never the study's) added to every epoch with their neutral captions, so
//!   reading images generalises instead of memorising ~100 of them.
//!
//! `val_image_gain` in `metrics.jsonl` measures it: the validation captions' NLL under another
//! image minus under their own (0 for a captioner that ignores the image).
//!
//! The tokenizer is a byte-level BPE with Qwen2's pre-tokenizer regex, trained here with the
//! `tokenizers` crate, plus Qwen2-VL's special tokens and `<|persona|>`.

use burn::module::AutodiffModule;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use deper_core::dataset::{write_json_atomic, Dataset};
use deper_core::Split;
use deper_vlm::caption::DEFAULT_CAPTION_PROMPT;
use deper_vlm::persona::PERSONA_TOKEN;
use deper_vlm::qwen2_vl::export::{save_pretrained, write_json};
use deper_vlm::qwen2_vl::train::CaptionBatch;
use deper_vlm::{ImageProcessor, Qwen2Vl, Qwen2VlConfig, Qwen2VlTokenizer, TextConfig, TokenIds, VisionConfig};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use tokenizers::models::bpe::BpeTrainerBuilder;
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use deper_train::run_folder::append_jsonl;
use deper_train::stage1::LrSchedule;
use deper_train::stage2::greedy;
use deper_train::{Result, TrainError};
use deper_vlm::persona::{load_pixels, prompt_ids, target_ids, MAX_CAPTION_TOKENS, PERSONA_PROMPT};

/// Qwen2-VL's special tokens, then DEPER's persona token.
pub const SPECIAL_TOKENS: [&str; 8] = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    PERSONA_TOKEN,
];

/// Qwen2-VL's chat template (as shipped in its `chat_template.json`).
pub const CHAT_TEMPLATE: &str = "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// Qwen2's pre-tokenizer split pattern.
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Sizes and optimisation of the captioner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptionerConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vision_embed_dim: usize,
    pub vision_depth: usize,
    pub vision_heads: usize,
    /// Images are resized to `image_side²` pixels (a multiple of 28).
    pub image_side: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub lr_schedule: LrSchedule,
    pub weight_decay: f64,
    pub seed: u64,
    /// Also learn the pooled human descriptions under [`PERSONA_PROMPT`] (see the module docs).
    pub descriptions: bool,
    /// Share of those examples whose persona slot holds a summary of the target's wording (the rest
    /// keep the persona token's own embedding); see the module docs.
    pub slot_summary: f64,
    /// Whether that summary may include the words that name the image's content (colours, shapes,
    /// sizes, backgrounds: the words of the neutral captions that differ between scenes). Off by
    /// default: with them the captioner learns to take content from the slot, and a persona vector
    /// (one per subject, for every image) then drags every caption towards the same objects.
    pub slot_content: bool,
    /// Weight of the image-words loss: from each image's tokens alone, say which words its neutral
    /// caption uses (see [`image_words_loss`]). 0 turns it off.
    pub image_words_weight: f64,
    /// Freshly drawn scenes (never the study's) added to each epoch under the neutral prompt, with
    /// their neutral captions: what a real VLM's pretraining images stand in for. Each epoch draws
    /// new ones, so the captioner learns to read images it has not memorised.
    pub extra_scenes_per_epoch: usize,
}

impl Default for CaptionerConfig {
    fn default() -> Self {
        Self {
            vocab_size: 512,
            hidden_size: 128,
            intermediate_size: 384,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            vision_embed_dim: 64,
            vision_depth: 2,
            vision_heads: 4,
            image_side: 112,
            epochs: 12,
            batch_size: 16,
            lr: 2e-3,
            lr_schedule: LrSchedule::Cosine,
            weight_decay: 0.01,
            seed: 0,
            descriptions: true,
            slot_summary: 0.75,
            slot_content: false,
            image_words_weight: 5.0,
            extra_scenes_per_epoch: 200,
        }
    }
}

impl CaptionerConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.hidden_size % self.heads != 0 || self.heads % self.kv_heads.max(1) != 0 {
            return bad(format!(
                "hidden_size {} / heads {} / kv_heads {} do not divide",
                self.hidden_size, self.heads, self.kv_heads
            ));
        }
        if (self.hidden_size / self.heads) % 4 != 0 {
            return bad(format!("head size {} must be a multiple of 4 (M-RoPE)", self.hidden_size / self.heads));
        }
        if self.vision_embed_dim % self.vision_heads != 0 || (self.vision_embed_dim / self.vision_heads) % 4 != 0 {
            return bad(format!(
                "vision_embed_dim {} / vision_heads {} must give a multiple of 4",
                self.vision_embed_dim, self.vision_heads
            ));
        }
        if self.image_side == 0 || self.image_side % 28 != 0 {
            return bad(format!("image_side {} must be a positive multiple of 28", self.image_side));
        }
        if self.epochs == 0 || self.batch_size == 0 {
            return bad("epochs and batch_size must be at least 1".into());
        }
        if self.vocab_size < 256 + SPECIAL_TOKENS.len() {
            return bad(format!("vocab_size {} is below the byte alphabet + special tokens", self.vocab_size));
        }
        Ok(())
    }

    /// `mrope_section` for the text head size: (t, h, w) frequencies summing to `head_dim / 2`.
    fn mrope_section(&self) -> Vec<usize> {
        let half = self.hidden_size / self.heads / 2;
        let t = half / 4;
        let h = (half - t) / 2;
        vec![t, h, half - t - h]
    }
}

/// One line of `metrics.jsonl` of a captioner run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaptionerEpoch {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    /// How much likelier the validation images' neutral captions are under their own image than
    /// under another validation image (caption NLL with swapped images minus with their own, nats
    /// per token): 0 for a captioner that ignores the image.
    #[serde(default)]
    pub val_image_gain: f64,
    pub seconds: f64,
    pub samples_per_s: f64,
    /// A greedy caption of the first validation image, for eyeballing progress.
    pub example: String,
}

/// What pretraining reports while it works.
#[derive(Debug, Clone)]
pub enum CaptionerProgress {
    Start { epochs: usize, batches_per_epoch: usize },
    Batch { epoch: usize, batch: usize, loss: f64 },
    Epoch(CaptionerEpoch),
}

/// One (image, prompt kind, target caption) example.
#[derive(Debug, Clone)]
struct Example {
    image: usize,
    persona_prompt: bool,
    target: Vec<u32>,
    /// The target's tokens a persona-slot summary may draw from (see [`CaptionerConfig::slot_content`]).
    slot_tokens: Vec<u32>,
}

#[derive(Debug, Deserialize)]
struct SceneLine {
    id: String,
    neutral_caption: String,
    #[serde(default)]
    width: u32,
}

/// Reads `scenes.jsonl` (the synthetic world's neutral captions) of a dataset folder; also returns
/// the scenes' width in pixels (0 if the file does not say).
fn neutral_captions(data: &Path) -> Result<(BTreeMap<String, String>, u32)> {
    let path = data.join("scenes.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        TrainError::Config(format!(
            "{}: {e} (pretrain-vlm needs the synthetic world's subject-neutral captions; run `deper synth`)",
            path.display()
        ))
    })?;
    let mut out = BTreeMap::new();
    let mut width = 0;
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let s: SceneLine =
            serde_json::from_str(line).map_err(|e| TrainError::Config(format!("{}:{}: {e}", path.display(), i + 1)))?;
        width = width.max(s.width);
        out.insert(s.id, s.neutral_caption);
    }
    Ok((out, width))
}

/// Index of the first extra scene: far past any study's scenes, so none is one of them.
const EXTRA_SCENE_BASE: usize = 10_000_000;

/// The extra scenes of `epoch`: pixels, neutral caption.
fn extra_scenes(
    config: &CaptionerConfig,
    epoch: usize,
    side: u32,
    processor: &ImageProcessor,
) -> Result<Vec<(deper_vlm::PixelValues, String)>> {
    let n = config.extra_scenes_per_epoch;
    (0..n)
        .map(|k| {
            let scene = deper_synth::scene::Scene::generate(config.seed, EXTRA_SCENE_BASE + epoch * n + k, side);
            let pixels = processor
                .preprocess(&scene.render())
                .map_err(|e| TrainError::Config(format!("extra scene {}: {e}", scene.id)))?;
            Ok((pixels, scene.neutral_caption))
        })
        .collect()
}

/// Trains a byte-level BPE tokenizer on `texts` and writes `tokenizer.json`.
pub fn train_tokenizer(texts: &[String], vocab_size: usize, path: &Path) -> Result<()> {
    let model = json!({"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
        "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
        "vocab": {}, "merges": []});
    let spec = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": model,
    });
    let tok_err = |e: tokenizers::Error| TrainError::Config(format!("tokenizer: {e}"));
    let mut tokenizer: Tokenizer = spec.to_string().parse().map_err(tok_err)?;
    let specials: Vec<AddedToken> = SPECIAL_TOKENS.iter().map(|t| AddedToken::from(*t, true)).collect();
    let mut trainer = TrainerWrapper::BpeTrainer(
        BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .special_tokens(specials)
            .build(),
    );
    tokenizer.train(&mut trainer, texts.iter()).map_err(tok_err)?;
    tokenizer.save(path, false).map_err(tok_err)?;
    Ok(())
}

/// Writes the tokenizer side files and the preprocessor config of the captioner into `out`.
fn write_side_files(out: &Path, side: usize) -> Result<()> {
    let vlm_err = |e: deper_vlm::VlmError| TrainError::Config(e.to_string());
    write_json(
        &out.join("tokenizer_config.json"),
        &json!({
            "tokenizer_class": "Qwen2Tokenizer",
            "processor_class": "Qwen2VLProcessor",
            "bos_token": null,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "unk_token": null,
            "add_prefix_space": false,
            "clean_up_tokenization_spaces": false,
            "errors": "replace",
            "model_max_length": 512,
            "padding_side": "left",
            "split_special_tokens": false,
            "extra_special_tokens": SPECIAL_TOKENS[1..],
            "chat_template": CHAT_TEMPLATE,
        }),
    )
    .map_err(vlm_err)?;
    std::fs::write(out.join("chat_template.jinja"), CHAT_TEMPLATE)
        .map_err(|e| TrainError::Io { path: out.join("chat_template.jinja"), source: e })?;
    let pixels = side * side;
    write_json(
        &out.join("preprocessor_config.json"),
        &json!({
            "image_processor_type": "Qwen2VLImageProcessor",
            "do_convert_rgb": true, "do_normalize": true, "do_rescale": true, "do_resize": true,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "merge_size": 2, "patch_size": 14, "temporal_patch_size": 2, "resample": 3,
            "rescale_factor": 1.0 / 255.0,
            "min_pixels": pixels, "max_pixels": pixels,
            "size": {"shortest_edge": pixels, "longest_edge": pixels},
        }),
    )
    .map_err(vlm_err)
}

/// Pretrains the captioner on `data` and saves it (HF layout) into `out`.
pub fn pretrain<B: AutodiffBackend>(
    data: &Path,
    out: &Path,
    config: &CaptionerConfig,
    device: &B::Device,
    progress: &mut dyn FnMut(CaptionerProgress),
) -> Result<Vec<CaptionerEpoch>> {
    config.validate()?;
    if out.join("config.json").exists() {
        return Err(TrainError::Config(format!("{} already holds a model; choose another --out", out.display())));
    }
    let corpus = StudyCorpus::load(data, config)?;
    std::fs::create_dir_all(out).map_err(|e| TrainError::Io { path: out.into(), source: e })?;
    train_tokenizer(&corpus.tokenizer_texts(), config.vocab_size, &out.join("tokenizer.json"))?;
    write_side_files(out, config.image_side)?;
    let tokenizer = Qwen2VlTokenizer::from_dir(out).map_err(|e| TrainError::Config(e.to_string()))?;
    let processor = ImageProcessor::from_dir(out).map_err(|e| TrainError::Config(e.to_string()))?;
    let model_config = captioner_model_config(config, &tokenizer)?;
    let mut pretrainer = Pretrainer::new(data, config, &corpus, &tokenizer, &processor, device)?;
    let examples = pretrainer.study_examples()?;
    let (train, val): (Vec<&Example>, Vec<&Example>) = {
        let is = |e: &&Example, s: Split| corpus.image_split[&corpus.images[e.image]] == s;
        (
            examples.iter().filter(|e| is(e, Split::Train)).collect(),
            examples.iter().filter(|e| is(e, Split::Val)).collect(),
        )
    };

    let mut model = init_pretraining::<B>(config, &model_config, pretrainer.words.len(), device);
    let mut optim = AdamWConfig::new()
        .with_weight_decay(config.weight_decay as f32)
        .with_grad_clipping(Some(burn::grad_clipping::GradientClippingConfig::Norm(1.0)))
        .init::<B, Pretraining<B>>();
    let per_kind = |persona: bool| train.iter().filter(|e| e.persona_prompt == persona).count();
    let per_epoch = (per_kind(false) + config.extra_scenes_per_epoch).div_ceil(config.batch_size)
        + per_kind(true).div_ceil(config.batch_size);
    let total_steps = per_epoch * config.epochs;
    progress(CaptionerProgress::Start { epochs: config.epochs, batches_per_epoch: per_epoch });
    let metrics_path = out.join("metrics.jsonl");
    let mut all = Vec::new();
    let mut step = 0;
    for epoch in 1..=config.epochs {
        let started = std::time::Instant::now();
        let trained;
        (model, trained) =
            pretrainer.train_epoch(model, &mut optim, &train, epoch, (&mut step, total_steps), progress)?;
        let train_seconds = started.elapsed().as_secs_f64();
        let valid = model.valid();
        let (val_loss, val_image_gain, example) = pretrainer.validate(&valid, &val)?;
        let m = CaptionerEpoch {
            epoch,
            train_loss: trained.loss_sum / trained.batches.max(1) as f64,
            val_loss,
            val_image_gain,
            seconds: started.elapsed().as_secs_f64(),
            samples_per_s: trained.examples as f64 / train_seconds.max(1e-9),
            example,
        };
        append_jsonl(&metrics_path, &m)?;
        progress(CaptionerProgress::Epoch(m.clone()));
        all.push(m);
    }
    save_pretrained(&model.valid().vlm, &model_config, out).map_err(|e| TrainError::Config(e.to_string()))?;
    write_json_atomic(
        &out.join("deper_captioner.json"),
        &json!({
            "config": config,
            "data": data.display().to_string(),
            "neutral_prompt": DEFAULT_CAPTION_PROMPT,
            "persona_prompt": PERSONA_PROMPT,
            "train_images": corpus.train_images.len(),
            "examples": train.len(),
        }),
    )?;
    Ok(all)
}

/// The study's images and texts pretraining reads: each image's neutral caption and split, and the
/// seen subjects' descriptions.
#[derive(Debug)]
struct StudyCorpus {
    /// Image id → its subject-neutral caption (`scenes.jsonl`).
    neutral: BTreeMap<String, String>,
    /// Width of the synthetic world's scenes in pixels, for the extra scenes.
    scene_side: u32,
    /// The images of `scenes.jsonl` that triplets show; an example's `image` indexes this.
    images: Vec<String>,
    /// Image id → split (splits are image-level).
    image_split: BTreeMap<String, Split>,
    train_images: Vec<usize>,
    val_images: Vec<usize>,
    /// (image, description) of the seen subjects' triplets (none without `config.descriptions`).
    descriptions: Vec<(usize, String)>,
}

impl StudyCorpus {
    fn load(data: &Path, config: &CaptionerConfig) -> Result<Self> {
        let (neutral, scene_side) = neutral_captions(data)?;
        let scene_side = if scene_side == 0 { deper_synth::SynthConfig::default().image_size } else { scene_side };
        let ds = Dataset::open(data)?;
        let triplets = ds.load_triplets()?;
        let splits = deper_core::split::Splits::load(data)?;
        // Image split from the triplets (splits are image-level).
        let mut image_split: BTreeMap<String, Split> = BTreeMap::new();
        for t in &triplets {
            image_split.insert(t.image.clone(), t.split);
        }
        let images: Vec<String> = neutral.keys().filter(|id| image_split.contains_key(*id)).cloned().collect();
        if images.is_empty() {
            return Err(TrainError::Config("no image of scenes.jsonl appears in the dataset's triplets".into()));
        }
        let of_split = |s: Split| (0..images.len()).filter(|&i| image_split.get(&images[i]) == Some(&s)).collect();
        let (train_images, val_images): (Vec<usize>, Vec<usize>) = (of_split(Split::Train), of_split(Split::Val));
        if train_images.is_empty() {
            return Err(TrainError::Config("no train-split images to pretrain on".into()));
        }
        let index: BTreeMap<&str, usize> = images.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
        // Seen subjects' descriptions only: unseen subjects stay unseen everywhere.
        let descriptions: Vec<(usize, String)> = if config.descriptions {
            triplets
                .iter()
                .filter(|t| !splits.is_unseen(&t.subject))
                .filter_map(|t| index.get(t.image.as_str()).map(|&i| (i, t.description.text.clone())))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Self { neutral, scene_side, images, image_split, train_images, val_images, descriptions })
    }

    /// The neutral caption of image `i`.
    fn neutral_of(&self, i: usize) -> &str {
        &self.neutral[&self.images[i]]
    }

    /// What the tokenizer learns from: the train-split texts and the two prompts.
    fn tokenizer_texts(&self) -> Vec<String> {
        let mut texts: Vec<String> = self.train_images.iter().map(|&i| self.neutral_of(i).to_string()).collect();
        texts.extend(
            self.descriptions
                .iter()
                .filter(|(i, _)| self.image_split[&self.images[*i]] == Split::Train)
                .map(|(_, d)| d.clone()),
        );
        texts.push(format!("system You are a helpful assistant. user {DEFAULT_CAPTION_PROMPT} assistant"));
        texts.push(PERSONA_PROMPT.replace(PERSONA_TOKEN, ""));
        texts
    }
}

/// The id of the special token `t` in the trained tokenizer.
fn special_id(tokenizer: &Qwen2VlTokenizer, t: &str) -> Result<u32> {
    tokenizer.token_id(t).ok_or_else(|| TrainError::Config(format!("the trained tokenizer lacks {t}")))
}

/// The Qwen2-VL configuration of the captioner with `config`'s sizes and the trained tokenizer.
fn captioner_model_config(config: &CaptionerConfig, tokenizer: &Qwen2VlTokenizer) -> Result<Qwen2VlConfig> {
    let id = |t: &str| special_id(tokenizer, t);
    Ok(Qwen2VlConfig {
        text: TextConfig {
            vocab_size: tokenizer.inner().get_vocab_size(true),
            hidden_size: config.hidden_size,
            intermediate_size: config.intermediate_size,
            num_hidden_layers: config.layers,
            num_attention_heads: config.heads,
            num_key_value_heads: config.kv_heads,
            max_position_embeddings: 512,
            rms_norm_eps: 1e-6,
            rope_theta: 10_000.0,
            mrope_section: config.mrope_section(),
            tie_word_embeddings: true,
        },
        vision: VisionConfig::new(
            config.vision_depth,
            config.vision_embed_dim,
            config.vision_heads,
            config.hidden_size,
        ),
        tokens: TokenIds {
            image_token_id: id("<|image_pad|>")?,
            video_token_id: id("<|video_pad|>")?,
            vision_start_token_id: id("<|vision_start|>")?,
            vision_end_token_id: id("<|vision_end|>")?,
            bos_token_id: Some(id("<|endoftext|>")?),
            eos_token_id: Some(id("<|im_end|>")?),
        },
    })
}

/// A fresh captioner (seeded with `config.seed`) with its image-words head of `words` outputs.
fn init_pretraining<B: Backend>(
    config: &CaptionerConfig,
    model_config: &Qwen2VlConfig,
    words: usize,
    device: &B::Device,
) -> Pretraining<B> {
    B::seed(device, config.seed);
    let mut vlm: Qwen2Vl<B> = model_config.init(device);
    // Token embeddings at N(0, 0.02) as transformers initialises Qwen2 (`initializer_range`): with
    // burn's N(0, 1) and tied weights the first logits are ~10× too large and the first epoch is spent
    // shrinking them.
    vlm.model.embed_tokens.weight = burn::module::Param::from_tensor(Tensor::random(
        [model_config.text.vocab_size, config.hidden_size],
        burn::tensor::Distribution::Normal(0.0, 0.02),
        device,
    ));
    Pretraining { vlm, image_words: LinearConfig::new(config.hidden_size, words).init(device) }
}

/// An epoch's training: its loss sum, batches and examples (study and extra).
#[derive(Debug, Clone, Copy)]
struct TrainedEpoch {
    loss_sum: f64,
    batches: usize,
    examples: usize,
}

/// What every epoch of pretraining reads: prompts, pixels, the image words and their targets.
struct Pretrainer<'a, B: Backend> {
    config: &'a CaptionerConfig,
    corpus: &'a StudyCorpus,
    tokenizer: &'a Qwen2VlTokenizer,
    processor: &'a ImageProcessor,
    device: &'a B::Device,
    /// One entry per study image, then the current epoch's extra scenes.
    pixels: Vec<deper_vlm::PixelValues>,
    /// The image-words targets, indexed like `pixels`.
    word_targets: Vec<Vec<f32>>,
    grid: [usize; 3],
    neutral_prompt: Vec<u32>,
    persona_prompt: Vec<u32>,
    words: ImageWords,
    /// Token ids of the image words, kept out of persona-slot summaries (see [`CaptionerConfig::slot_content`]).
    content: std::collections::BTreeSet<u32>,
    /// The persona token and the share of description rows whose slot holds a summary.
    slot: (u32, f64),
}

impl<'a, B: Backend> Pretrainer<'a, B> {
    fn new(
        data: &Path,
        config: &'a CaptionerConfig,
        corpus: &'a StudyCorpus,
        tokenizer: &'a Qwen2VlTokenizer,
        processor: &'a ImageProcessor,
        device: &'a B::Device,
    ) -> Result<Self> {
        let pixels = load_pixels(data, &corpus.images, processor)?;
        let grid = pixels[0].grid_thw;
        if let Some(p) = pixels.iter().find(|p| p.grid_thw != grid) {
            return Err(TrainError::Config(format!(
                "images differ in size after preprocessing ({:?} vs {grid:?})",
                p.grid_thw
            )));
        }
        let neutral_prompt = prompt_ids(tokenizer, DEFAULT_CAPTION_PROMPT, grid)?;
        let persona_prompt = prompt_ids(tokenizer, PERSONA_PROMPT, grid)?;
        let words = ImageWords::new(&corpus.train_images.iter().map(|&i| corpus.neutral_of(i)).collect::<Vec<_>>());
        let content = if config.slot_content { Default::default() } else { words.token_ids(tokenizer)? };
        let word_targets = corpus.images.iter().map(|id| words.targets(&corpus.neutral[id])).collect();
        let slot = (special_id(tokenizer, PERSONA_TOKEN)?, config.slot_summary);
        Ok(Self {
            config,
            corpus,
            tokenizer,
            processor,
            device,
            pixels,
            word_targets,
            grid,
            neutral_prompt,
            persona_prompt,
            words,
            content,
            slot,
        })
    }

    /// The example of image `image` with `text` as target, under the persona prompt or the neutral one.
    fn example(&self, image: usize, persona_prompt: bool, text: &str) -> Result<Example> {
        let target = target_ids(self.tokenizer, text, MAX_CAPTION_TOKENS)?;
        // Without the end-of-turn token.
        let words = &target[..target.len().saturating_sub(1)];
        let slot_tokens = words.iter().copied().filter(|t| !self.content.contains(t)).collect();
        Ok(Example { image, persona_prompt, target, slot_tokens })
    }

    /// Every study image's neutral caption, then every description (train and validation split).
    fn study_examples(&self) -> Result<Vec<Example>> {
        let mut examples = Vec::new();
        for (i, id) in self.corpus.images.iter().enumerate() {
            examples.push(self.example(i, false, &self.corpus.neutral[id])?);
        }
        for (i, text) in &self.corpus.descriptions {
            examples.push(self.example(*i, true, text)?);
        }
        Ok(examples)
    }

    /// This epoch's extra scenes as examples, their pixels and word targets appended after the
    /// study images' (replacing the previous epoch's).
    fn extra_examples(&mut self, epoch: usize) -> Result<Vec<Example>> {
        let study_images = self.corpus.images.len();
        self.pixels.truncate(study_images);
        self.word_targets.truncate(study_images);
        let mut extra = Vec::new();
        for (p, caption) in extra_scenes(self.config, epoch, self.corpus.scene_side, self.processor)? {
            if p.grid_thw != self.grid {
                return Err(TrainError::Config(format!(
                    "extra scene grid {:?} differs from {:?}",
                    p.grid_thw, self.grid
                )));
            }
            extra.push(self.example(self.pixels.len(), false, &caption)?);
            self.pixels.push(p);
            self.word_targets.push(self.words.targets(&caption));
        }
        Ok(extra)
    }

    /// Caption NLL of a batch (and its image-words logits) with these prompts and pixels.
    fn batch_loss<M: Backend>(
        &self,
        model: &Pretraining<M>,
        batch: &[Example],
        rng: &mut impl Rng,
        device: &M::Device,
    ) -> Result<(Tensor<M, 1>, Option<Tensor<M, 3>>)> {
        let prompts = (&self.neutral_prompt[..], &self.persona_prompt[..]);
        batch_loss(model, batch, &self.pixels, self.grid, prompts.0, prompts.1, self.slot, rng, device)
    }
}

impl<B: AutodiffBackend> Pretrainer<'_, B> {
    /// One epoch over the study's training examples and this epoch's extra scenes.
    fn train_epoch<O: Optimizer<Pretraining<B>, B>>(
        &mut self,
        mut model: Pretraining<B>,
        optim: &mut O,
        train: &[&Example],
        epoch: usize,
        (step, total_steps): (&mut usize, usize),
        progress: &mut dyn FnMut(CaptionerProgress),
    ) -> Result<(Pretraining<B>, TrainedEpoch)> {
        let config = self.config;
        let schedule = deper_train::stage1::TrainSettings {
            lr: config.lr,
            lr_schedule: config.lr_schedule,
            warmup_fraction: 0.05,
            ..Default::default()
        };
        let mut trained = TrainedEpoch { loss_sum: 0.0, batches: 0, examples: 0 };
        let mut rng = deper_core::rng::seeded(config.seed, &format!("captioner-slots-{epoch}"));
        let extra = self.extra_examples(epoch)?;
        let epoch_set: Vec<&Example> = train.iter().copied().chain(extra.iter()).collect();
        trained.examples = epoch_set.len();
        for (b, batch) in batches(&epoch_set, config.batch_size, Some((config.seed, epoch))).iter().enumerate() {
            let (nll, image_words) = self.batch_loss(&model, batch, &mut rng, self.device)?;
            let loss = match image_words {
                Some(aux) if config.image_words_weight > 0.0 => {
                    nll.clone()
                        + image_words_loss(aux, batch, &self.word_targets, self.device) * config.image_words_weight
                }
                _ => nll.clone(),
            };
            let value = nll.into_scalar().elem::<f64>();
            if !value.is_finite() {
                return Err(TrainError::Config(format!(
                    "captioner pretraining diverged at epoch {epoch}: loss {value}"
                )));
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(schedule.lr_at(*step, total_steps), model, grads);
            *step += 1;
            trained.loss_sum += value;
            trained.batches += 1;
            progress(CaptionerProgress::Batch { epoch, batch: b + 1, loss: value });
        }
        Ok((model, trained))
    }

    /// Validation loss (NaN without validation examples), image gain and a greedy example caption
    /// of the first validation image (else the first training image).
    fn validate(&self, valid: &Pretraining<B::InnerBackend>, val: &[&Example]) -> Result<(f64, f64, String)> {
        let (config, device) = (self.config, self.device);
        let (mut vsum, mut vn) = (0.0, 0usize);
        let mut rng = deper_core::rng::seeded(config.seed, "captioner-validation");
        for batch in batches(val, config.batch_size, None) {
            let (nll, _) = self.batch_loss(valid, &batch, &mut rng, device)?;
            vsum += nll.into_scalar().elem::<f64>();
            vn += 1;
        }
        let (pixels, grid) = (&self.pixels, self.grid);
        let val_image_gain = image_gain(valid, val, pixels, grid, &self.neutral_prompt, config.batch_size, device)?;
        let example = match self.corpus.val_images.first().or(self.corpus.train_images.first()) {
            Some(&i) => greedy(&valid.vlm, self.tokenizer, &self.neutral_prompt, &pixels[i], device, None)?,
            None => String::new(),
        };
        Ok((if vn == 0 { f64::NAN } else { vsum / vn as f64 }, val_image_gain, example))
    }
}

/// `set` in batches of at most `batch_size` that hold one prompt kind each (one shared prompt per
/// batch); with `seed` = (seed, epoch), shuffled within each kind and then as batches.
fn batches(set: &[&Example], batch_size: usize, seed: Option<(u64, usize)>) -> Vec<Vec<Example>> {
    let mut out = Vec::new();
    for kind in [false, true] {
        let mut part: Vec<Example> = set.iter().filter(|e| e.persona_prompt == kind).map(|e| (*e).clone()).collect();
        if let Some((s, epoch)) = seed {
            part.shuffle(&mut deper_core::rng::seeded(s, &format!("captioner-{epoch}-{kind}")));
        }
        out.extend(part.chunks(batch_size).map(<[Example]>::to_vec));
    }
    if let Some((s, epoch)) = seed {
        out.shuffle(&mut deper_core::rng::seeded(s, &format!("captioner-batches-{epoch}")));
    }
    out
}

/// The captioner and, while it pretrains, the image-words head (not saved: the HF folder holds the
/// captioner alone).
#[derive(Module, Debug)]
struct Pretraining<B: Backend> {
    vlm: Qwen2Vl<B>,
    image_words: Linear<B>,
}

/// The words of the neutral captions, for the image-words loss.
///
/// Trained from scratch on ~100 images, the captioner otherwise learns the captions' language and
/// ignores the image: the wording of a caption is far easier to predict than its content, its image
/// tokens end up nearly constant across images (2 % variation) and it writes one caption for every
/// scene. Asking each image's tokens directly which words describe it (a colour, a shape, a size, the
/// background) makes them carry the content, which the language model then learns to read.
struct ImageWords {
    index: BTreeMap<String, usize>,
}

impl ImageWords {
    fn words(caption: &str) -> impl Iterator<Item = String> + '_ {
        caption.split(|c: char| !c.is_alphabetic()).filter(|w| !w.is_empty()).map(str::to_lowercase)
    }

    /// Every word of `captions` that some caption lacks (words in all of them say nothing of the image).
    fn new(captions: &[&str]) -> Self {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for c in captions {
            let set: std::collections::BTreeSet<String> = Self::words(c).collect();
            for w in set {
                *counts.entry(w).or_default() += 1;
            }
        }
        let index = counts
            .into_iter()
            .filter(|&(_, n)| n < captions.len())
            .map(|(w, _)| w)
            .enumerate()
            .map(|(i, w)| (w, i))
            .collect();
        Self { index }
    }

    fn len(&self) -> usize {
        self.index.len().max(1)
    }

    /// The token ids that spell these words (as a caption's first word, after a space, capitalised),
    /// from words of at most two tokens (longer splits would take generic pieces with them).
    fn token_ids(&self, tokenizer: &Qwen2VlTokenizer) -> Result<std::collections::BTreeSet<u32>> {
        let mut out = std::collections::BTreeSet::new();
        for word in self.index.keys() {
            let mut capital = word.chars();
            let capital: String = capital.next().map(|c| c.to_uppercase().chain(capital).collect()).unwrap_or_default();
            for form in [word.clone(), format!(" {word}"), capital.clone(), format!(" {capital}")] {
                let ids = tokenizer.encode(&form).map_err(|e| TrainError::Config(e.to_string()))?;
                if ids.len() <= 2 {
                    out.extend(ids);
                }
            }
        }
        Ok(out)
    }

    /// 1 for each known word of `caption`, else 0.
    fn targets(&self, caption: &str) -> Vec<f32> {
        let mut out = vec![0.0; self.len()];
        for w in Self::words(caption) {
            if let Some(&i) = self.index.get(&w) {
                out[i] = 1.0;
            }
        }
        out
    }
}

/// Binary cross-entropy of "does the image's caption use word w", with each word's logit the maximum
/// over the image's tokens (some token has to show it), against the words of the neutral caption.
///
/// # Shapes
/// - logits: `[rows, image tokens, words]`
fn image_words_loss<B: Backend>(
    logits: Tensor<B, 3>,
    batch: &[Example],
    targets: &[Vec<f32>],
    device: &B::Device,
) -> Tensor<B, 1> {
    let [rows, _, words] = logits.dims();
    let x = logits.max_dim(1).reshape([rows, words]);
    let y: Vec<f32> = batch.iter().flat_map(|e| targets[e.image].iter().copied()).collect();
    let y = Tensor::<B, 2>::from_data(TensorData::new(y, [rows, words]), device);
    // log(1 + e^x) - x·y, written to stay finite for large |x|.
    let softplus = x.clone().clamp_min(0.0) + x.clone().abs().neg().exp().add_scalar(1.0).log();
    (softplus - x * y).mean()
}

/// Caption NLL of the neutral captions of `examples` under the next example's image minus under their
/// own (NaN with fewer than two).
#[allow(clippy::too_many_arguments)]
fn image_gain<B: Backend>(
    model: &Pretraining<B>,
    examples: &[&Example],
    pixels: &[deper_vlm::PixelValues],
    grid: [usize; 3],
    neutral_prompt: &[u32],
    batch_size: usize,
    device: &B::Device,
) -> Result<f64> {
    let own: Vec<Example> = examples.iter().filter(|e| !e.persona_prompt).map(|e| (*e).clone()).collect();
    if own.len() < 2 {
        return Ok(f64::NAN);
    }
    let mut swapped = own.clone();
    for (k, e) in swapped.iter_mut().enumerate() {
        e.image = own[(k + 1) % own.len()].image;
    }
    let mut rng = deper_core::rng::seeded(0, "captioner-image-gain"); // unused: no persona slot
    let mut total = |set: &[Example]| -> Result<f64> {
        let mut sum = 0.0;
        for chunk in set.chunks(batch_size.max(1)) {
            let (nll, _) = batch_loss(model, chunk, pixels, grid, neutral_prompt, &[], (0, 0.0), &mut rng, device)?;
            sum += nll.into_scalar().elem::<f64>() * chunk.len() as f64;
        }
        Ok(sum / set.len() as f64)
    };
    Ok(total(&swapped)? - total(&own)?)
}

/// Caption NLL of a batch, and the image-words logits of its images.
#[allow(clippy::too_many_arguments)]
fn batch_loss<B: Backend>(
    pretraining: &Pretraining<B>,
    batch: &[Example],
    pixels: &[deper_vlm::PixelValues],
    grid: [usize; 3],
    neutral_prompt: &[u32],
    persona_prompt: &[u32],
    slot: (u32, f64),
    rng: &mut impl Rng,
    device: &B::Device,
) -> Result<(Tensor<B, 1>, Option<Tensor<B, 3>>)> {
    let model = &pretraining.vlm;
    let rows: Vec<Tensor<B, 2>> = batch.iter().map(|e| pixels[e.image].to_tensor(device)).collect();
    let features = model
        .visual
        .forward(Tensor::cat(rows, 0), &vec![grid; batch.len()])
        .map_err(|e| TrainError::Config(e.to_string()))?;
    let [feature_rows, hidden] = features.dims();
    let image_words = (feature_rows % batch.len() == 0).then(|| {
        pretraining.image_words.forward(features.clone().reshape([batch.len(), feature_rows / batch.len(), hidden]))
    });
    let with_slot = batch[0].persona_prompt;
    let persona = with_slot.then(|| (slot.0, slot_vectors(model, batch, slot, rng, device)));
    let caption = CaptionBatch {
        prompt_ids: if with_slot { persona_prompt.to_vec() } else { neutral_prompt.to_vec() },
        grid_thw: grid,
        image_features: features,
        targets: batch.iter().map(|e| e.target.clone()).collect(),
        persona,
    };
    Ok((model.caption_nll(&caption).map_err(|e| TrainError::Config(e.to_string()))?.0, image_words))
}

/// The persona slot's content while pretraining: for a `slot.1` share of the rows, the mean input
/// embedding of a random half of the target's slot tokens (a soft prompt summarising the wanted
/// wording, which carries no subject identity, and by default not the image's content); for the rest,
/// the persona token's own embedding.
fn slot_vectors<B: Backend>(
    model: &Qwen2Vl<B>,
    batch: &[Example],
    (persona_id, share): (u32, f64),
    rng: &mut impl Rng,
    device: &B::Device,
) -> Tensor<B, 2> {
    let vocab = model.vocab_size;
    let mut bag = vec![0f32; batch.len() * vocab];
    for (r, e) in batch.iter().enumerate() {
        let row = &mut bag[r * vocab..(r + 1) * vocab];
        let words = &e.slot_tokens;
        if words.is_empty() || !rng.gen_bool(share.clamp(0.0, 1.0)) {
            row[persona_id as usize] = 1.0;
            continue;
        }
        let mut kept: Vec<u32> = words.iter().copied().filter(|_| rng.gen_bool(0.5)).collect();
        if kept.is_empty() {
            kept.push(words[rng.gen_range(0..words.len())]);
        }
        for &id in &kept {
            row[id as usize] += 1.0 / kept.len() as f32;
        }
    }
    let bag = Tensor::<B, 2>::from_data(TensorData::new(bag, [batch.len(), vocab]), device);
    bag.matmul(model.model.embed_tokens.weight.val())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn image_words_keep_the_words_that_tell_images_apart() {
        let words = ImageWords::new(&[
            "a large red circle on a grey background.",
            "a small Blue circle and a large red star on a grey background.",
        ]);
        // "a", "on", "grey", "background", "circle", "large", "red" are in both captions.
        let known: Vec<&str> = words.index.keys().map(String::as_str).collect();
        assert_eq!(known, ["and", "blue", "small", "star"]);
        assert_eq!(words.targets("a small star and a tiny blue thing."), [1.0, 1.0, 1.0, 1.0]);
        assert_eq!(words.targets("a large red circle."), [0.0, 0.0, 0.0, 0.0]);
        assert_eq!(words.targets("A STAR"), [0.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn content_tokens_are_the_tokens_of_the_image_words() {
        let dir = tempfile::tempdir().unwrap();
        let captions = ["a large red circle on a grey background.", "a small blue star on a grey background."];
        let corpus: Vec<String> =
            captions.iter().map(|c| c.to_string()).chain(["Red Blue I see".into()]).cycle().take(9).collect();
        train_tokenizer(&corpus, 400, &dir.path().join("tokenizer.json")).unwrap();
        write_side_files(dir.path(), 56).unwrap();
        let tokenizer = Qwen2VlTokenizer::from_dir(dir.path()).unwrap();
        let words = ImageWords::new(&captions);
        let content = words.token_ids(&tokenizer).unwrap();
        let encode = |t: &str| tokenizer.encode(t).unwrap();
        for word in [" red", " blue", " star", " circle", " large", " small", "Red", " Blue"] {
            let ids = encode(word);
            assert!(ids.len() <= 2 && ids.iter().all(|i| content.contains(i)), "{word}: {ids:?}");
        }
        // Words every caption has, and words no neutral caption uses, stay.
        for word in [" grey", " background", " a", " I", " see"] {
            assert!(encode(word).iter().all(|i| !content.contains(i)), "{word}");
        }
    }

    #[test]
    fn image_words_loss_is_the_binary_cross_entropy_of_the_best_token() {
        type B = NdArray<f32>;
        let device = Default::default();
        // Two images of two tokens, two words; the loss reads each word's highest token.
        let logits = Tensor::<B, 3>::from_data(
            TensorData::new(vec![0.5f32, -2.0, 1.5, 3.0, -1.0, 40.0, -60.0, 0.0], [2, 2, 2]),
            &device,
        );
        let batch = [
            Example { image: 1, persona_prompt: false, target: vec![], slot_tokens: vec![] },
            Example { image: 0, persona_prompt: false, target: vec![], slot_tokens: vec![] },
        ];
        let targets = vec![vec![0.0, 1.0], vec![1.0, 0.0]];
        let loss = image_words_loss(logits, &batch, &targets, &device).into_scalar();
        // Row 0 (image 1, targets [1, 0]): maxima 1.5 and 3.0; row 1 (image 0, [0, 1]): -1.0 and 40.0.
        let bce = |x: f64, y: f64| -(y * (1.0 / (1.0 + (-x).exp())).ln() + (1.0 - y) * (1.0 / (1.0 + x.exp())).ln());
        let expected = (bce(1.5, 1.0) + bce(3.0, 0.0) + bce(-1.0, 0.0) + bce(40.0, 1.0)) / 4.0;
        assert!((f64::from(loss) - expected).abs() < 1e-6, "{loss} vs {expected}");
    }

    #[test]
    fn extra_scenes_are_fresh_each_epoch_and_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        write_side_files(dir.path(), 56).unwrap();
        let processor = ImageProcessor::from_dir(dir.path()).unwrap();
        let config = CaptionerConfig { extra_scenes_per_epoch: 3, ..CaptionerConfig::default() };
        let one = extra_scenes(&config, 1, 448, &processor).unwrap();
        let again = extra_scenes(&config, 1, 448, &processor).unwrap();
        let two = extra_scenes(&config, 2, 448, &processor).unwrap();
        assert_eq!(one.len(), 3);
        assert_eq!(one[0].0.grid_thw, [1, 4, 4]);
        for (a, b) in one.iter().zip(&again) {
            assert_eq!(a.0.values, b.0.values);
            assert_eq!(a.1, b.1);
        }
        for (a, b) in one.iter().zip(&two) {
            assert_ne!(a.0.values, b.0.values);
        }
        // None is one of the study's scenes (those have indices from 0).
        let study: Vec<String> =
            (0..500).map(|i| deper_synth::scene::Scene::generate(config.seed, i, 448).neutral_caption).collect();
        assert!(one.iter().all(|(_, caption)| !study.contains(caption)));
    }
}
