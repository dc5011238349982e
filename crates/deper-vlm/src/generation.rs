//! Generation shared by both families: settings, results, the context checks and the one-prompt
//! sampling loop (prefill happens in the family's model; each step feeds one token through the KV cache).
//!
//! Reference: transformers `GenerationMixin` (greedy / sampling with stop tokens and
//! `max_new_tokens`); mistral.rs `mistralrs-core/src/pipeline/sampling.rs`.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::cache::KvCache;
use crate::sampling::{Sampler, SamplingConfig};
use crate::{Result, VlmError};

/// Generation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    pub sampling: SamplingConfig,
    /// Generation ends after emitting any of these (it is included in the output).
    pub stop_tokens: Vec<u32>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self { max_new_tokens: 128, sampling: SamplingConfig::greedy(), stop_tokens: Vec::new() }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    StopToken,
    MaxNewTokens,
    /// The callback returned `false`.
    Callback,
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub prompt_ids: Vec<u32>,
    pub generated_ids: Vec<u32>,
    pub stop: StopReason,
}

/// Refuses a prompt plus `max_new_tokens` longer than the context.
pub(crate) fn check_context(needed: usize, max_positions: usize) -> Result<()> {
    if needed > max_positions {
        return Err(VlmError::Input(format!(
            "prompt plus max_new_tokens is {needed} positions, longer than the context of {max_positions}"
        )));
    }
    Ok(())
}

/// Refuses a prompt of `len` tokens longer than `cache` holds.
pub(crate) fn check_cache_fits<B: Backend>(len: usize, cache: &KvCache<B>) -> Result<()> {
    if len > cache.capacity() {
        return Err(VlmError::Input(format!(
            "prompt of {len} tokens does not fit the KV cache of {}",
            cache.capacity()
        )));
    }
    Ok(())
}

/// The checks before generating one prompt into `cache`, shared by every model family; with
/// `max_new_tokens` 0 the (empty) result itself.
pub(crate) fn start_generation<B: Backend>(
    prompt_ids: &[u32],
    config: &GenerationConfig,
    max_positions: usize,
    cache: &KvCache<B>,
) -> Result<Option<Generated>> {
    let needed = prompt_ids.len() + config.max_new_tokens;
    check_context(needed, max_positions)?;
    if needed > cache.capacity() {
        return Err(VlmError::Input(format!(
            "prompt plus max_new_tokens is {needed} positions, the KV cache holds {}",
            cache.capacity()
        )));
    }
    Ok((config.max_new_tokens == 0).then(|| Generated {
        prompt_ids: prompt_ids.to_vec(),
        generated_ids: Vec::new(),
        stop: StopReason::MaxNewTokens,
    }))
}

/// Why generation of a row ends after `token`, its `generated`-th id, if it does.
pub(crate) fn stop_reason(
    config: &GenerationConfig,
    token: u32,
    keep_going: bool,
    generated: usize,
) -> Option<StopReason> {
    if config.stop_tokens.contains(&token) {
        Some(StopReason::StopToken)
    } else if !keep_going {
        Some(StopReason::Callback)
    } else if generated >= config.max_new_tokens {
        Some(StopReason::MaxNewTokens)
    } else {
        None
    }
}

/// The sampling loop of one prompt, shared by every model family: sample from `logits` (the
/// prefill's last position), stream, stop, or feed the token to `step` for the next logits.
pub(crate) fn sample_loop<B: Backend>(
    prompt_ids: &[u32],
    config: &GenerationConfig,
    mut logits: Tensor<B, 2>,
    step: &mut dyn FnMut(u32) -> Result<Tensor<B, 2>>,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<Generated> {
    let mut sampler = Sampler::new(config.sampling.clone());
    let mut sequence = prompt_ids.to_vec();
    let mut generated = Vec::with_capacity(config.max_new_tokens);
    loop {
        let row = logits_to_vec(logits)?;
        let token = sampler.next_token(&row, &sequence);
        sequence.push(token);
        generated.push(token);
        let keep_going = on_token(token);
        if let Some(stop) = stop_reason(config, token, keep_going, generated.len()) {
            return Ok(Generated { prompt_ids: prompt_ids.to_vec(), generated_ids: generated, stop });
        }
        logits = step(token)?;
    }
}

/// Refuses an empty prompt, one longer than the context, or ids outside the vocabulary.
pub(crate) fn check_prompt(ids: &[u32], vocab_size: usize, max_positions: usize) -> Result<()> {
    let len = ids.len();
    if len == 0 {
        return Err(VlmError::Input("empty prompt".into()));
    }
    if len > max_positions {
        return Err(VlmError::Input(format!(
            "prompt of {len} tokens is longer than the context of {max_positions} positions"
        )));
    }
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab_size) {
        return Err(VlmError::Input(format!("token id {bad} is outside the vocabulary of {vocab_size}")));
    }
    Ok(())
}

pub(crate) fn logits_to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    t.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| VlmError::Input(format!("reading logits: {e:?}")))
}
