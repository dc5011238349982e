//! Tokenizer and chat template of a Qwen2-VL checkpoint, as the Hugging Face processor applies them.
//!
//! - `tokenizer.json` goes through the `tokenizers` crate (byte-level BPE with the Qwen2 split regex;
//!   special tokens such as `<|image_pad|>` and `<|persona|>` match before BPE).
//! - The chat template (`chat_template.jinja`, or `chat_template` in `tokenizer_config.json` /
//!   `chat_template.json`) is rendered with minijinja configured as transformers' Jinja environment:
//!   `trim_blocks`, `lstrip_blocks`, loop controls, `raise_exception`.
//! - Like `Qwen2VLProcessor`, each `<|image_pad|>` of the rendered text is then repeated
//!   `t·h·w / merge²` times for its image before tokenisation.
//!
//! Reference: transformers `processing_qwen2_vl.py`, `tokenization_utils_base.apply_chat_template`.

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, Error as JinjaError, ErrorKind};
use serde_json::{json, Value};
use std::path::Path;
use tokenizers::Tokenizer;

use crate::{Result, VlmError};

/// The image placeholder token of Qwen2-VL.
pub const IMAGE_PAD: &str = "<|image_pad|>";

/// One part of a message's content.
#[derive(Debug, Clone, PartialEq)]
pub enum ContentPart {
    Image,
    Text(String),
}

/// A chat message; serialised as `{"role", "content": [{"type": "image"}, {"type": "text", "text"}]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: Vec<ContentPart>,
}

impl ChatMessage {
    /// A user turn with one image before the text, as `deper caption` builds it.
    pub fn user_with_image(text: &str) -> Self {
        Self { role: "user".into(), content: vec![ContentPart::Image, ContentPart::Text(text.into())] }
    }

    pub fn text(role: &str, text: &str) -> Self {
        Self { role: role.into(), content: vec![ContentPart::Text(text.into())] }
    }

    fn to_json(&self) -> Value {
        let parts: Vec<Value> = self
            .content
            .iter()
            .map(|p| match p {
                ContentPart::Image => json!({"type": "image"}),
                ContentPart::Text(t) => json!({"type": "text", "text": t}),
            })
            .collect();
        json!({"role": self.role, "content": parts})
    }
}

/// Tokenizer plus chat template.
pub struct Qwen2VlTokenizer {
    tokenizer: Tokenizer,
    template: String,
    /// Special-token strings passed to the template (`bos_token`, `eos_token`, …).
    special: serde_json::Map<String, Value>,
}

impl std::fmt::Debug for Qwen2VlTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qwen2VlTokenizer").field("vocab_size", &self.tokenizer.get_vocab_size(true)).finish()
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| VlmError::Io { path: path.into(), source: e })
}

/// `chat_template` as a string, or the `default` entry of a list of named templates.
fn template_field(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .or_else(|| list.first())
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
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
        let jinja = dir.join("chat_template.jinja");
        let json_file = dir.join("chat_template.json");
        let template = if jinja.is_file() {
            read(&jinja)?
        } else if let Some(t) = config.get("chat_template").and_then(template_field) {
            t
        } else if json_file.is_file() {
            let v: Value = serde_json::from_str(&read(&json_file)?)
                .map_err(|e| VlmError::Template(format!("{}: {e}", json_file.display())))?;
            v.get("chat_template")
                .and_then(template_field)
                .ok_or_else(|| VlmError::Template(format!("{} has no `chat_template`", json_file.display())))?
        } else {
            return Err(VlmError::Template(format!("no chat template in {}", dir.display())));
        };
        let mut special = serde_json::Map::new();
        for key in ["bos_token", "eos_token", "pad_token", "unk_token"] {
            // A token may be a plain string or an AddedToken object with `content`.
            let value = config.get(key).and_then(|v| v.as_str().or_else(|| v.get("content")?.as_str()));
            if let Some(v) = value {
                special.insert(key.into(), Value::String(v.into()));
            }
        }
        Ok(Self { tokenizer, template, special })
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Renders the chat template (`apply_chat_template(messages, tokenize=False, add_generation_prompt)`).
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| VlmError::Template(e.to_string()))?;
        env.set_syntax(syntax);
        env.add_function("raise_exception", |message: String| -> std::result::Result<String, JinjaError> {
            Err(JinjaError::new(ErrorKind::InvalidOperation, message))
        });
        let template = env.template_from_str(&self.template).map_err(|e| VlmError::Template(e.to_string()))?;
        let mut ctx = self.special.clone();
        ctx.insert("messages".into(), Value::Array(messages.iter().map(ChatMessage::to_json).collect()));
        ctx.insert("add_generation_prompt".into(), Value::Bool(add_generation_prompt));
        template
            .render(minijinja::value::Value::from(minijinja::value::Serde(Value::Object(ctx))))
            .map_err(|e| VlmError::Template(e.to_string()))
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

    /// The caption prompt: one user turn with the image before `text`, templated with the generation
    /// prompt, image pads expanded for `grid_thw`, tokenised. Returns `(expanded text, ids)`.
    pub fn caption_prompt(&self, text: &str, grid_thw: [usize; 3], merge: usize) -> Result<(String, Vec<u32>)> {
        let rendered = self.apply_chat_template(&[ChatMessage::user_with_image(text)], true)?;
        let expanded = self.expand_image_pads(&rendered, &[grid_thw], merge)?;
        let ids = self.encode(&expanded)?;
        Ok((expanded, ids))
    }
}
