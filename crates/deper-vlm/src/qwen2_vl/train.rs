//! Teacher-forced caption loss for a batch of prompts that share one layout (stage 2 and the tiny
//! captioner's pretraining).
//!
//! Every row is `prompt ++ caption ++ padding`: the prompt ids are the same for all rows (one chat
//! template, one image size, so one image-token layout and one set of M-RoPE positions), the captions
//! differ. Rows are right-padded; with a causal mask padding after a row's last token cannot change
//! earlier positions, so no extra attention mask is needed, and padded targets are masked out of the
//! loss. Image features (one `[n, hidden]` block per row, in row order) replace the `<|image_pad|>`
//! embeddings; an optional persona vector per row replaces the persona token's embedding, as
//! [`super::Qwen2Vl::inputs_embeds`] does for one prompt.
//!
//! Loss = mean over caption tokens (each caption's ids and its end-of-turn token) of `-log p(token)`,
//! the usual causal-LM NLL with prompt, image and padding positions masked.
//!
//! Reference: transformers `Qwen2VLForConditionalGeneration.forward` with `labels` (`ForCausalLMLoss`,
//! ignore index -100).

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::model::Qwen2Vl;
use super::mrope::rope_index;
use crate::{Result, VlmError};

/// One batch of teacher-forced captions.
#[derive(Debug, Clone)]
pub struct CaptionBatch<B: Backend> {
    /// The shared prompt (image pads expanded).
    pub prompt_ids: Vec<u32>,
    /// `(t, h, w)` of the one image every row shows.
    pub grid_thw: [usize; 3],
    /// `[rows · image_tokens, hidden]`: row `r`'s features are rows `r·n .. (r+1)·n`.
    pub image_features: Tensor<B, 2>,
    /// Target ids of each row (the caption and its end-of-turn token).
    pub targets: Vec<Vec<u32>>,
    /// `[rows, hidden]` vectors for the persona token, and the token's id.
    pub persona: Option<(u32, Tensor<B, 2>)>,
}

impl<B: Backend> Qwen2Vl<B> {
    /// Mean NLL of the batch's caption tokens (a scalar `[1]`), and the number of tokens it averages.
    pub fn caption_nll(&self, batch: &CaptionBatch<B>) -> Result<(Tensor<B, 1>, usize)> {
        let rows = batch.targets.len();
        if rows == 0 {
            return Err(VlmError::Input("empty caption batch".into()));
        }
        if batch.targets.iter().any(Vec::is_empty) {
            return Err(VlmError::Input("a caption batch row has no target tokens".into()));
        }
        let prompt = &batch.prompt_ids;
        let p = prompt.len();
        let c = batch.targets.iter().map(Vec::len).max().unwrap_or(0);
        let len = p + c;
        if len > self.max_position_embeddings {
            return Err(VlmError::Input(format!(
                "prompt + caption of {len} tokens exceed the context of {} positions",
                self.max_position_embeddings
            )));
        }
        let vocab = self.vocab_size as u32;
        if let Some(bad) = prompt.iter().chain(batch.targets.iter().flatten()).find(|&&id| id >= vocab) {
            return Err(VlmError::Input(format!("token id {bad} is outside the vocabulary of {vocab}")));
        }
        let device = self.model.embed_tokens.weight.device();
        let hidden = self.hidden_size;
        let image_id = self.image_token_id as u32;
        let image_positions: Vec<usize> = (0..p).filter(|&i| prompt[i] == image_id).collect();
        let n_img = image_positions.len();
        let [feat_rows, feat_dim] = batch.image_features.dims();
        if feat_rows != rows * n_img || feat_dim != hidden {
            return Err(VlmError::Input(format!(
                "image features are [{feat_rows}, {feat_dim}], expected [{} rows × {n_img} image tokens, {hidden}]",
                rows
            )));
        }

        // Ids of every row: prompt, caption, padding (the pad id is never a target).
        let pad = 0u32;
        let mut ids = Vec::with_capacity(rows * len);
        for t in &batch.targets {
            ids.extend(prompt.iter().map(|&i| i64::from(i)));
            ids.extend(t.iter().map(|&i| i64::from(i)));
            ids.extend(std::iter::repeat_n(i64::from(pad), c - t.len()));
        }
        // Positions come from the prompt's layout; the caption continues as text.
        let mut layout: Vec<u32> = prompt.clone();
        layout.extend(std::iter::repeat_n(pad, c));
        let (positions, _) = rope_index(&layout, image_id, &[batch.grid_thw], self.visual.spatial_merge_size)?;
        let rope = self.model.rope(&positions, &device);

        // Source row of every (row, position) in cat([text, image features, persona]).
        let text_rows = rows * len;
        let mut index: Vec<i64> = (0..text_rows as i64).collect();
        for r in 0..rows {
            for (k, &pos) in image_positions.iter().enumerate() {
                index[r * len + pos] = (text_rows + r * n_img + k) as i64;
            }
        }
        let id_tensor = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [rows, len]), &device);
        let text = self.model.embed(id_tensor).reshape([text_rows, hidden]);
        let mut table = vec![text, batch.image_features.clone()];
        if let Some((token, vectors)) = &batch.persona {
            let [vr, vd] = vectors.dims();
            if vr != rows || vd != hidden {
                return Err(VlmError::Input(format!("persona vectors are [{vr}, {vd}], expected [{rows}, {hidden}]")));
            }
            let slots: Vec<usize> = (0..p).filter(|&i| prompt[i] == *token).collect();
            if slots.len() != 1 {
                return Err(VlmError::Input(format!(
                    "the prompt must hold the persona token {token} exactly once, found {}",
                    slots.len()
                )));
            }
            let offset = text_rows + rows * n_img;
            for r in 0..rows {
                index[r * len + slots[0]] = (offset + r) as i64;
            }
            table.push(vectors.clone());
        }
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [text_rows]), &device);
        let embeds = Tensor::cat(table, 0).select(0, index).reshape([rows, len, hidden]);

        let h = self.model.forward_hidden(embeds, &rope, None)?;
        // Position p - 1 + j predicts target j.
        let h = h.narrow(1, p - 1, c); // [rows, c, hidden]
        let logp = log_softmax(self.model.logits(h), 2); // [rows, c, vocab]
        let mut target_ids = Vec::with_capacity(rows * c);
        let mut weights = Vec::with_capacity(rows * c);
        for t in &batch.targets {
            for j in 0..c {
                target_ids.push(t.get(j).map_or(0, |&i| i64::from(i)));
                weights.push(if j < t.len() { 1.0f32 } else { 0.0 });
            }
        }
        let count = batch.targets.iter().map(Vec::len).sum::<usize>();
        let targets = Tensor::<B, 3, Int>::from_data(TensorData::new(target_ids, [rows, c, 1]), &device);
        let weights = Tensor::<B, 2>::from_data(TensorData::new(weights, [rows, c]), &device);
        let picked = logp.gather(2, targets).reshape([rows, c]);
        let loss = (picked * weights).sum().neg() / count as f64;
        Ok((loss, count))
    }
}
