//! The chat template of a model folder, rendered as transformers' `apply_chat_template` does:
//! minijinja configured as transformers' Jinja environment (`trim_blocks`, `lstrip_blocks`, loop
//! controls, `raise_exception`), with the tokenizer's special-token strings in the context.
//!
//! The template is `chat_template.jinja`, or `chat_template` in `tokenizer_config.json` /
//! `chat_template.json` (a string, or the `default` of a list of named templates).
//!
//! Reference: transformers `tokenization_utils_base.apply_chat_template`, `utils/chat_template_utils.py`.

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, Error as JinjaError, ErrorKind};
use serde_json::{json, Value};
use std::path::Path;

use crate::{Result, VlmError};

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

/// A chat template with the special-token strings it may use.
#[derive(Debug, Clone)]
pub(crate) struct ChatTemplate {
    source: String,
    /// Special-token strings passed to the template (`bos_token`, `eos_token`, …).
    special: serde_json::Map<String, Value>,
}

/// A text file, or an error naming it.
pub(crate) fn read(path: &Path) -> Result<String> {
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

impl ChatTemplate {
    /// The template of a model folder; `config` is its `tokenizer_config.json` (or null).
    pub(crate) fn from_dir(dir: &Path, config: &Value) -> Result<Self> {
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
        Ok(Self { source: template, special })
    }

    /// A special-token string of `tokenizer_config.json` (`bos_token`, `eos_token`, `pad_token`, `unk_token`).
    pub(crate) fn special(&self, name: &str) -> Option<&str> {
        self.special.get(name)?.as_str()
    }

    /// Renders `messages` (`apply_chat_template(messages, tokenize=False, add_generation_prompt)`).
    pub(crate) fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
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
        let template = env.template_from_str(&self.source).map_err(|e| VlmError::Template(e.to_string()))?;
        let mut ctx = self.special.clone();
        ctx.insert("messages".into(), Value::Array(messages.iter().map(ChatMessage::to_json).collect()));
        ctx.insert("add_generation_prompt".into(), Value::Bool(add_generation_prompt));
        template
            .render(minijinja::value::Value::from(minijinja::value::Serde(Value::Object(ctx))))
            .map_err(|e| VlmError::Template(e.to_string()))
    }
}
