//! Preallocated key/value cache for incremental decoding.
//!
//! One [`LayerCache`] per decoder layer holds keys and values after rotary embedding,
//! `[batch, kv_heads, max_len, head_dim]`, allocated once; new positions are written in place and
//! [`KvCache::reset`] rewinds it for the next request without freeing memory. Pattern of
//! tracel-ai/models `llama-burn/src/cache.rs`, with a fixed capacity instead of a sliding window.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::decoder::TextConfig;
use crate::{Result, VlmError};

/// Keys and values of one layer.
#[derive(Debug, Clone)]
pub struct LayerCache<B: Backend> {
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    len: usize,
}

impl<B: Backend> LayerCache<B> {
    pub fn new(batch: usize, kv_heads: usize, max_len: usize, head_dim: usize, device: &B::Device) -> Self {
        Self {
            k: Tensor::zeros([batch, kv_heads, max_len, head_dim], device),
            v: Tensor::zeros([batch, kv_heads, max_len, head_dim], device),
            len: 0,
        }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.k.dims()[2]
    }

    /// Writes `[b, kvh, n, hd]` new keys and values after the held ones and returns all of them,
    /// `[b, kvh, len + n, hd]`.
    pub fn append(&mut self, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Result<(Tensor<B, 4>, Tensor<B, 4>)> {
        let [b, h, n, d] = k.dims();
        let end = self.len + n;
        if end > self.capacity() {
            return Err(VlmError::Input(format!(
                "KV cache full: {} positions held, {n} more do not fit in {}",
                self.len,
                self.capacity()
            )));
        }
        // Take the buffers out so the backend can write in place (no other handle is alive).
        let device = k.device();
        let old_k = std::mem::replace(&mut self.k, Tensor::zeros([1, 1, 1, 1], &device));
        let old_v = std::mem::replace(&mut self.v, Tensor::zeros([1, 1, 1, 1], &device));
        self.k = old_k.slice_assign([0..b, 0..h, self.len..end, 0..d], k);
        self.v = old_v.slice_assign([0..b, 0..h, self.len..end, 0..d], v);
        self.len = end;
        Ok((self.k.clone().narrow(2, 0, end), self.v.clone().narrow(2, 0, end)))
    }

    pub fn reset(&mut self) {
        self.len = 0;
    }
}

/// The cache of every layer.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    pub layers: Vec<LayerCache<B>>,
}

impl<B: Backend> KvCache<B> {
    /// A cache for `max_len` positions of a batch of one.
    pub fn new(config: &TextConfig, max_len: usize, device: &B::Device) -> Self {
        let layers = (0..config.num_hidden_layers)
            .map(|_| LayerCache::new(1, config.num_key_value_heads, max_len, config.head_dim(), device))
            .collect();
        Self { layers }
    }

    /// Positions held (the same in every layer).
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, LayerCache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.layers.first().map_or(0, LayerCache::capacity)
    }

    /// Forgets every position; memory is kept for the next request.
    pub fn reset(&mut self) {
        self.layers.iter_mut().for_each(LayerCache::reset);
    }
}
