//! DEPER's subject-embedding network (Xue et al., CVPR 2026, arXiv 2512.06662), stage 1.
//!
//! Image patch features `V`, caption tokens `L` and trajectory tokens `T` go through the
//! dual-context encoder; the extractor draws the subject embedding `z_s`, the scanpath latent
//! `z_scan` and subject logits from `Z_dual`; the decoder reconstructs the trajectory from
//! `z_s`, `z_scan` and `[V; L]`. This is `ScanAutoEncoder` of the authors' `src/model.py`
//! (commit 1526bed) minus the frozen backbones, which stay outside: patch features arrive as a
//! tensor and caption tokens go through a [`TokenEmbedding`] (a frozen table in the authors'
//! code — the VLM's input embeddings — here an `Embedding(vocab, E)` followed by
//! `Linear(E → D)`; freeze the table with [`TokenEmbedding::freeze_table`]).
//!
//! Position encodings: the projected patch features get the 2-D sinusoidal encoding of their
//! patch centre (the frame of the trajectory tokens' box-centre encoding; `image_positions`, on by
//! default), since pixel-level features such as the synthetic world's carry no position and without
//! it the decoder cannot say where anything is (`tests/localisation.rs`).
//! `caption_positions` (on by default, see its doc) adds the 1-D encoding of the token index to the
//! projected caption tokens, which otherwise come from a position-free frozen table and would be
//! read as a bag of words. Runs saved before these settings existed load with both off.
//!
//! With `no_trajectory` set (the `--no-trajectory` ablation) there is no trajectory stream:
//! `Z_dual = L′`, the caption refined against `V` only.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;

use crate::decoder::{TrajectoryDecoder, TrajectoryDecoderConfig};
use crate::encoder::{DualEncoder, DualEncoderConfig, EncoderForm};
use crate::extractor::{SubjectExtractor, SubjectExtractorConfig};
use crate::layers::{sinusoidal, uniform_mask};
use crate::traj_tokens::{TrajTokens, TrajTokensConfig, TrajectoryBatch};

/// Caption token embedding: a table lookup then a projection to the model width.
#[derive(Module, Debug)]
pub struct TokenEmbedding<B: Backend> {
    table: Embedding<B>,
    proj: Linear<B>,
}

impl<B: Backend> TokenEmbedding<B> {
    /// Builds a table of `vocab × embed_dim` and a projection to `d_model`.
    pub fn new(vocab: usize, embed_dim: usize, d_model: usize, device: &B::Device) -> Self {
        Self {
            table: EmbeddingConfig::new(vocab, embed_dim).init(device),
            proj: LinearConfig::new(embed_dim, d_model).init(device),
        }
    }

    /// Stops gradients into the table (the authors freeze it); the projection still trains.
    pub fn freeze_table(mut self) -> Self {
        self.table = self.table.no_grad();
        self
    }

    /// Table lookup only.
    ///
    /// # Shapes
    /// - `ids`: `[batch, len]`, output: `[batch, len, embed_dim]`
    pub fn embed(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.table.forward(ids)
    }

    /// Projection of (possibly externally computed) token embeddings to the model width.
    ///
    /// # Shapes
    /// - `embeddings`: `[batch, len, embed_dim]`, output: `[batch, len, d_model]`
    pub fn project(&self, embeddings: Tensor<B, 3>) -> Tensor<B, 3> {
        self.proj.forward(embeddings)
    }

    /// Lookup then projection.
    ///
    /// # Shapes
    /// - `ids`: `[batch, len]`, output: `[batch, len, d_model]`
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.project(self.embed(ids)) // [batch, len, d_model]
    }
}

/// Config of [`Deper`].
#[derive(Config, Debug)]
pub struct DeperConfig {
    /// Channels of the image patch features (`C`).
    pub patch_dim: usize,
    /// Caption vocabulary size.
    pub vocab_size: usize,
    /// Width of the caption token table (`E`).
    pub token_dim: usize,
    /// Subjects the classifier knows.
    pub num_subjects: usize,
    /// Model width (`D`, a multiple of 4 and of `n_heads`).
    #[config(default = 384)]
    pub d_model: usize,
    /// Attention heads.
    #[config(default = 4)]
    pub n_heads: usize,
    /// Encoder layers per stream.
    #[config(default = 2)]
    pub encoder_layers: usize,
    /// Decoder layers.
    #[config(default = 4)]
    pub decoder_layers: usize,
    /// FFN hidden width; `None` = `d_model`, as the authors.
    #[config(default = "None")]
    pub d_ff: Option<usize>,
    /// Learned queries pooled into `z_s`.
    #[config(default = 1)]
    pub n_subject_queries: usize,
    /// Learned queries whose outputs form `z_scan`; 1 in the authors' code. More let the
    /// decoder read more of a trajectory's steps (see [`crate::extractor`]).
    #[config(default = 1)]
    pub n_scan_queries: usize,
    /// Dropout everywhere.
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Encoder layer order.
    #[config(default = "EncoderForm::Interleaved")]
    pub encoder_form: EncoderForm,
    /// Drop the trajectory stream (`--no-trajectory` ablation).
    #[config(default = false)]
    pub no_trajectory: bool,
    /// Freeze the caption token table.
    #[config(default = true)]
    pub freeze_token_table: bool,
    /// Add the 2-D sinusoidal encoding of each patch centre to the image tokens `V` (the
    /// frame of the trajectory tokens' box-centre encoding). Without it nothing tells the
    /// decoder where a patch lies unless the features themselves do, and it cannot place boxes.
    #[config(default = true)]
    pub image_positions: bool,
    /// Add the 1-D sinusoidal encoding of each caption token's index to the caption tokens `L`.
    /// The caption table is a frozen input-embedding table without positions (the VLM adds
    /// rotary positions only inside its own layers), so without it both encoder streams and the
    /// decoder read the caption as a bag of words. On the synthetic world it raised 5-shot
    /// accuracy on unseen subjects after 15 epochs (0.94 against 0.77 without) but slows the first
    /// epochs (subject accuracy 0.32 instead of 0.72 after 6 epochs of the demo's schedule).
    #[config(default = true)]
    pub caption_positions: bool,
}

/// The DEPER stage-1 network; see the module docs.
#[derive(Module, Debug)]
pub struct Deper<B: Backend> {
    image_proj: Linear<B>,
    image_positions: bool,
    caption_positions: bool,
    tokens: TokenEmbedding<B>,
    traj_tokens: Option<TrajTokens<B>>,
    encoder: DualEncoder<B>,
    extractor: SubjectExtractor<B>,
    decoder: TrajectoryDecoder<B>,
}

/// Outputs of [`Deper::forward`].
#[derive(Debug, Clone)]
pub struct DeperOutput<B: Backend> {
    /// Subject embedding `[batch, d]`.
    pub z_s: Tensor<B, 2>,
    /// Scanpath latent `[batch, n_scan_queries, d]`.
    pub z_scan: Tensor<B, 3>,
    /// `[batch, num_subjects]`.
    pub subject_logits: Tensor<B, 2>,
    /// `[batch, 30, 4]`, ordered boxes in `[0, 1]`.
    pub pred_boxes: Tensor<B, 3>,
    /// `[batch, 30]`, validity logits.
    pub pred_valid_logits: Tensor<B, 2>,
}

impl DeperConfig {
    /// Builds the network.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Deper<B> {
        let d = self.d_model;
        let d_ff = self.d_ff.unwrap_or(d);
        let encoder = DualEncoderConfig::new()
            .with_d_model(d)
            .with_n_heads(self.n_heads)
            .with_n_layers(self.encoder_layers)
            .with_d_ff(d_ff)
            .with_dropout(self.dropout)
            .with_form(self.encoder_form);
        let tokens = TokenEmbedding::new(self.vocab_size, self.token_dim, d, device);
        Deper {
            image_proj: LinearConfig::new(self.patch_dim, d).init(device),
            image_positions: self.image_positions,
            caption_positions: self.caption_positions,
            tokens: if self.freeze_token_table { tokens.freeze_table() } else { tokens },
            traj_tokens: (!self.no_trajectory).then(|| TrajTokensConfig::new(self.patch_dim, d).init(device)),
            encoder: if self.no_trajectory { encoder.init_caption_only(device) } else { encoder.init(device) },
            extractor: SubjectExtractorConfig::new(self.num_subjects)
                .with_d_model(d)
                .with_n_heads(self.n_heads)
                .with_n_subject_queries(self.n_subject_queries)
                .with_n_scan_queries(self.n_scan_queries)
                .with_dropout(self.dropout)
                .init(device),
            decoder: TrajectoryDecoderConfig::new()
                .with_d_model(d)
                .with_n_heads(self.n_heads)
                .with_n_layers(self.decoder_layers)
                .with_d_ff(d_ff)
                .with_dropout(self.dropout)
                .init(device),
        }
    }
}

impl<B: Backend> Deper<B> {
    /// Forward from caption token ids (embedded with this model's table).
    ///
    /// # Shapes
    /// - `patches`: `[batch, h, w, patch_dim]`
    /// - `caption_ids`: `[batch, len_c]`, `caption_mask`: `[batch, len_c]` (`true` = valid)
    /// - `traj`: boxes `[batch, steps, 4]`, durations and mask `[batch, steps]`, `steps <= 30`
    ///   (ignored with `no_trajectory`)
    /// - outputs: see [`DeperOutput`]
    pub fn forward(
        &self,
        patches: Tensor<B, 4>,
        caption_ids: Tensor<B, 2, Int>,
        caption_mask: Tensor<B, 2, Bool>,
        traj: &TrajectoryBatch<B>,
    ) -> DeperOutput<B> {
        let embeddings = self.tokens.embed(caption_ids); // [batch, len_c, token_dim]
        self.forward_embedded(patches, embeddings, caption_mask, traj)
    }

    /// Forward from caption token embeddings computed elsewhere (e.g. the VLM's own frozen
    /// input embeddings); only this model's projection is applied.
    ///
    /// # Shapes
    /// - `patches`: `[batch, h, w, patch_dim]`
    /// - `caption_embeddings`: `[batch, len_c, token_dim]`, `caption_mask`: `[batch, len_c]`
    /// - `traj`: as in [`Deper::forward`]
    /// - outputs: see [`DeperOutput`]
    pub fn forward_embedded(
        &self,
        patches: Tensor<B, 4>,
        caption_embeddings: Tensor<B, 3>,
        caption_mask: Tensor<B, 2, Bool>,
        traj: &TrajectoryBatch<B>,
    ) -> DeperOutput<B> {
        self.forward_inner(patches, caption_embeddings, caption_mask, traj, None)
    }

    /// [`Deper::forward`] with the trajectory RoI pooling weights given (from
    /// [`TrajectoryBatch::host_roi_weights`]) instead of built from `traj` by
    /// [`TrajectoryBatch::roi_weights`], which reads the device back unless the `wgpu` feature's
    /// kernel applies: the path for WebGPU in a browser, where a synchronous read is impossible.
    /// Same outputs as [`Deper::forward`] for the weights of the same trajectories.
    ///
    /// # Shapes
    /// - as [`Deper::forward`]; `roi_weights`: `[batch, steps, h·w]`
    pub fn forward_with_roi_weights(
        &self,
        patches: Tensor<B, 4>,
        caption_ids: Tensor<B, 2, Int>,
        caption_mask: Tensor<B, 2, Bool>,
        traj: &TrajectoryBatch<B>,
        roi_weights: Tensor<B, 3>,
    ) -> DeperOutput<B> {
        let embeddings = self.tokens.embed(caption_ids); // [batch, len_c, token_dim]
        self.forward_inner(patches, embeddings, caption_mask, traj, Some(roi_weights))
    }

    fn forward_inner(
        &self,
        patches: Tensor<B, 4>,
        caption_embeddings: Tensor<B, 3>,
        caption_mask: Tensor<B, 2, Bool>,
        traj: &TrajectoryBatch<B>,
        roi_weights: Option<Tensor<B, 3>>,
    ) -> DeperOutput<B> {
        let [batch, h, w, c] = patches.dims();
        let image = self.image_proj.forward(patches.clone().reshape([batch, h * w, c])); // [batch, h·w, d]
        let image = if self.image_positions {
            let [_, _, d] = image.dims();
            let positions = patch_position_encoding::<B>(h, w, d, &image.device()); // [1, h·w, d]
            image + positions
        } else {
            image
        };
        let caption = self.tokens.project(caption_embeddings); // [batch, len_c, d]
        let caption = if self.caption_positions {
            let [_, len_c, d] = caption.dims();
            let index: Vec<f32> = (0..len_c).map(|k| k as f32).collect();
            let index = Tensor::<B, 2>::from_data(TensorData::new(index, [1, len_c]), &caption.device());
            caption + sinusoidal(index, d) // [batch, len_c, d]
        } else {
            caption
        };

        let z_dual = match &self.traj_tokens {
            Some(traj_tokens) => {
                let t = match roi_weights {
                    Some(weights) => traj_tokens.forward_with_weights(patches, weights, traj),
                    None => traj_tokens.forward(patches, traj),
                }; // [batch, steps, d]
                self.encoder.forward(image.clone(), t, traj.mask.clone(), caption.clone(), caption_mask.clone())
            }
            None => self.encoder.forward_caption_only(image.clone(), caption.clone(), caption_mask.clone()),
        }; // [batch, steps + len_c, d] or [batch, len_c, d]
        let latents = self.extractor.forward(z_dual.tokens, z_dual.mask);

        // The decoder's context is [V; L] with the caption as it entered the encoder.
        let [_, n_patches, _] = image.dims();
        let image_valid = uniform_mask::<B>(batch, n_patches, true, &image.device());
        let context = Tensor::cat(vec![image, caption], 1); // [batch, h·w + len_c, d]
        let context_mask = Tensor::cat(vec![image_valid, caption_mask], 1);
        let decoded = self.decoder.forward(latents.z_s.clone(), latents.z_scan.clone(), context, context_mask);

        DeperOutput {
            z_s: latents.z_s,
            z_scan: latents.z_scan,
            subject_logits: latents.subject_logits,
            pred_boxes: decoded.boxes,
            pred_valid_logits: decoded.valid_logits,
        }
    }
}

/// The 2-D sinusoidal encoding of every patch centre of an `h×w` grid, in patch-grid units
/// (`j + ½`, `i + ½`): `d/2` dimensions for x, then `d/2` for y, as the trajectory tokens
/// encode a box centre (`cx·w`, `cy·h`), so a step and the patches under it share positions.
///
/// # Shapes
/// - output: `[1, h·w, d]`, row-major patches
pub fn patch_position_encoding<B: Backend>(h: usize, w: usize, d: usize, device: &B::Device) -> Tensor<B, 3> {
    let cx: Vec<f32> = (0..h * w).map(|k| (k % w) as f32 + 0.5).collect();
    let cy: Vec<f32> = (0..h * w).map(|k| (k / w) as f32 + 0.5).collect();
    let cx = Tensor::<B, 2>::from_data(TensorData::new(cx, [1, h * w]), device);
    let cy = Tensor::<B, 2>::from_data(TensorData::new(cy, [1, h * w]), device);
    Tensor::cat(vec![sinusoidal(cx, d / 2), sinusoidal(cy, d / 2)], 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};

    type TrainBackend = Autodiff<NdArray>;

    #[test]
    fn frozen_token_table_gets_no_gradient() {
        let device = Default::default();
        for freeze in [true, false] {
            let tokens = TokenEmbedding::<TrainBackend>::new(10, 4, 8, &device);
            let tokens = if freeze { tokens.freeze_table() } else { tokens };
            let ids = Tensor::<TrainBackend, 2, Int>::from_data(TensorData::new(vec![1i64, 2, 3, 4], [2, 2]), &device);
            let grads = tokens.forward(ids).sum().backward();
            assert_eq!(tokens.table.weight.val().grad(&grads).is_some(), !freeze);
            assert!(tokens.proj.weight.val().grad(&grads).is_some());
        }
    }
}
