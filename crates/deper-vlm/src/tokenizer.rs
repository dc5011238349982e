//! Tokenizer of a checkpoint, as the Hugging Face processor applies it, for both families.
//!
//! - `tokenizer.json` goes through the `tokenizers` crate (byte-level BPE with the Qwen2 split regex;
//!   special tokens such as `<|image_pad|>` and `<|persona|>` match before BPE).
//! - The chat template is [`crate::chat_template`]'s.
//! - Like `Qwen2VLProcessor`, each `<|image_pad|>` of the rendered text is then repeated
//!   `t·h·w / merge²` times for its image before tokenisation ([`Qwen2VlTokenizer::caption_prompt`]).
//!
//! Reference: transformers `processing_qwen2_vl.py`, `tokenization_utils_fast.py`.

use serde_json::Value;
use std::path::Path;
use tokenizers::Tokenizer;

use crate::chat_template::{read, ChatTemplate};
pub use crate::chat_template::{ChatMessage, ContentPart};
use crate::{Result, VlmError};

/// The image placeholder token of Qwen2-VL.
pub const IMAGE_PAD: &str = "<|image_pad|>";

/// Tokenizer plus chat template.
pub struct Qwen2VlTokenizer {
    tokenizer: Tokenizer,
    template: ChatTemplate,
}

impl std::fmt::Debug for Qwen2VlTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qwen2VlTokenizer").field("vocab_size", &self.tokenizer.get_vocab_size(true)).finish()
    }
}

impl Qwen2VlTokenizer {
    /// Loads `tokenizer.json`, `tokenizer_config.json` and the chat template from a model folder.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(VlmError::Tokenizer(format!("{} not found", tok_path.display())));
        }
        let tokenizer =
            Tokenizer::from_file(&tok_path).map_err(|e| VlmError::Tokenizer(format!("{}: {e}", tok_path.display())))?;
        let config_path = dir.join("tokenizer_config.json");
        let config: Value = if config_path.is_file() {
            serde_json::from_str(&read(&config_path)?)
                .map_err(|e| VlmError::Tokenizer(format!("{}: {e}", config_path.display())))?
        } else {
            Value::Null
        };
        let template = ChatTemplate::from_dir(dir, &config)?;
        Ok(Self { tokenizer, template })
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Renders the chat template (`apply_chat_template(messages, tokenize=False, add_generation_prompt)`).
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.template.render(messages, add_generation_prompt)
    }

    /// Repeats the `i`-th `<|image_pad|>` `t·h·w / merge²` times for `grid_thw[i]`.
    pub fn expand_image_pads(&self, text: &str, grid_thw: &[[usize; 3]], merge: usize) -> Result<String> {
        let pieces: Vec<&str> = text.split(IMAGE_PAD).collect();
        if pieces.len() - 1 != grid_thw.len() {
            return Err(VlmError::Input(format!(
                "the prompt has {} image placeholders but {} images were given",
                pieces.len() - 1,
                grid_thw.len()
            )));
        }
        let mut out = String::with_capacity(text.len());
        for (i, piece) in pieces.iter().enumerate() {
            out.push_str(piece);
            if let Some(&[t, h, w]) = grid_thw.get(i) {
                out.push_str(&IMAGE_PAD.repeat(t * h * w / (merge * merge)));
            }
        }
        Ok(out)
    }

    /// Token ids of `text` (special tokens are recognised; Qwen2 adds no BOS).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.tokenizer.encode(text, true).map_err(|e| VlmError::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.tokenizer.decode(ids, skip_special_tokens).map_err(|e| VlmError::Tokenizer(e.to_string()))
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// The id of `tokenizer_config.json`'s `pad_token` (Qwen2-VL: `<|endoftext|>`), if it names one.
    pub fn pad_token_id(&self) -> Option<u32> {
        self.token_id(self.template.special("pad_token")?)
    }

    /// The caption prompt: one user turn with the image before `text`, templated with the generation
    /// prompt, image pads expanded for `grid_thw`, tokenised. Returns `(expanded text, ids)`.
    pub fn caption_prompt(&self, text: &str, grid_thw: [usize; 3], merge: usize) -> Result<(String, Vec<u32>)> {
        let rendered = self.apply_chat_template(&[ChatMessage::user_with_image(text)], true)?;
        let expanded = self.expand_image_pads(&rendered, &[grid_thw], merge)?;
        let ids = self.encode(&expanded)?;
        Ok((expanded, ids))
    }
}
