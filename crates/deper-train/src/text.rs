//! Caption tokens for the subject encoder, from one of two text sides ([`TextSide`]):
//!
//! - [`TextSide::Words`]: the run's own word vocabulary (the synthetic world's default). It lives in
//!   [`deper_model::text`] so that the browser (deper-web) encodes captions with the same code.
//! - [`TextSide::Vlm`]: as the authors do (`src/model.py`, commit 1526bed), the VLM folder's
//!   `tokenizer.json` and its frozen input-embedding table ([`VlmText`]). The table stays
//!   memory-mapped; a batch reads only the rows of the ids it holds. The network then gets
//!   caption embeddings, not ids (see [`crate::data::Batch::forward`]).

use burn::prelude::*;
use deper_model::run::TextEmbeddings;
use deper_vlm::Qwen2VlTokenizer;
use deper_weights::Checkpoint;
use std::path::{Path, PathBuf};

pub use deper_model::text::{words, WordVocab, PAD, UNK};

use crate::{Result, TrainError};

/// Where a run's caption tokens and their embeddings come from.
#[derive(Debug)]
pub enum TextSide {
    /// The run's word vocabulary; the network embeds ids with its own table.
    Words(WordVocab),
    /// A VLM's tokenizer and frozen input-embedding table (boxed: the tokenizer is large).
    Vlm(Box<VlmText>),
}

impl TextSide {
    /// Token ids the model reads for a caption, cut to `max_len` and never empty.
    pub fn encode(&self, text: &str, max_len: usize) -> Result<Vec<u32>> {
        match self {
            Self::Words(vocab) => Ok(vocab.encode_caption(text, max_len)),
            Self::Vlm(vlm) => vlm.encode(text, max_len),
        }
    }

    /// Caption embeddings of a batch of id lists, when the text side supplies them (`None`: the
    /// network embeds the ids itself).
    ///
    /// # Shapes
    /// - output: `[batch, len, hidden]`, `len` = the longest caption (at least 1), zeros past each
    ///   caption's end (masked), as [`deper_model::ModelInput::from_host`] pads the ids.
    pub fn embed<B: Backend>(&self, captions: &[&[u32]], device: &B::Device) -> Result<Option<Tensor<B, 3>>> {
        match self {
            Self::Words(_) => Ok(None),
            Self::Vlm(vlm) => {
                let len = captions.iter().map(|ids| ids.len()).max().unwrap_or(1).max(1);
                let values = vlm.embed(captions)?;
                let shape = [captions.len(), len, vlm.hidden()];
                Ok(Some(Tensor::from_data(TensorData::new(values, shape), device)))
            }
        }
    }
}

/// A VLM's text side: its tokenizer and its memory-mapped input-embedding table.
#[derive(Debug)]
pub struct VlmText {
    tokenizer: Qwen2VlTokenizer,
    table: Checkpoint,
    record: TextEmbeddings,
    /// The id an empty caption reads as: the tokenizer's pad token, else 0.
    empty_caption: u32,
}

impl VlmText {
    /// Opens the VLM folder `dir` (Qwen2-VL, Qwen2.5-VL or Idefics3): its `tokenizer.json` and the
    /// input-embedding table its family's loader reads. Errors name the folder.
    pub fn open(dir: &Path) -> Result<Self> {
        let in_dir = |e: String| TrainError::Config(format!("text embeddings {}: {e}", dir.display()));
        let abs: PathBuf = std::fs::canonicalize(dir).map_err(|e| in_dir(e.to_string()))?;
        let tokenizer = Qwen2VlTokenizer::from_dir(&abs).map_err(|e| in_dir(e.to_string()))?;
        let table = Checkpoint::open(&abs).map_err(|e| in_dir(e.to_string()))?;
        let found = deper_vlm::input_embedding_table(&abs, &table).map_err(|e| in_dir(e.to_string()))?;
        let empty_caption = tokenizer.pad_token_id().unwrap_or(0);
        let record = TextEmbeddings {
            vlm_dir: abs.display().to_string(),
            key: found.key,
            vocab_size: found.vocab_size,
            hidden: found.hidden_size,
        };
        Ok(Self { tokenizer, table, record, empty_caption })
    }

    /// Opens the folder a run recorded and checks that it still holds the table the run was
    /// trained with (same key, rows and width); errors name the folder.
    pub fn reopen(recorded: &TextEmbeddings) -> Result<Self> {
        let text = Self::open(Path::new(&recorded.vlm_dir))?;
        let now = &text.record;
        if (&now.key, now.vocab_size, now.hidden) != (&recorded.key, recorded.vocab_size, recorded.hidden) {
            return Err(TrainError::Config(format!(
                "text embeddings {}: the run was trained on `{}` [{}, {}], the folder now holds `{}` [{}, {}] (another VLM?)",
                recorded.vlm_dir, recorded.key, recorded.vocab_size, recorded.hidden, now.key, now.vocab_size, now.hidden
            )));
        }
        Ok(text)
    }

    /// What `run.json` records of this text side.
    pub fn record(&self) -> &TextEmbeddings {
        &self.record
    }

    /// Width of the embeddings.
    pub fn hidden(&self) -> usize {
        self.record.hidden
    }

    /// The tokenizer's ids of `text` (special tokens as the tokenizer adds them), cut to `max_len`;
    /// an empty caption reads as the pad token (attention needs one valid token).
    pub fn encode(&self, text: &str, max_len: usize) -> Result<Vec<u32>> {
        let mut ids = self.tokenizer.encode(text)?;
        ids.truncate(max_len);
        if ids.is_empty() {
            ids.push(self.empty_caption);
        }
        Ok(ids)
    }

    /// Rows of the table for each caption, padded with zeros to the longest caption (at least 1):
    /// `[captions.len(), len, hidden]` row-major. Each distinct id is read from the table once.
    pub fn embed(&self, captions: &[&[u32]]) -> Result<Vec<f32>> {
        let len = captions.iter().map(|ids| ids.len()).max().unwrap_or(1).max(1);
        let mut distinct: Vec<usize> = captions.iter().flat_map(|ids| ids.iter().map(|&id| id as usize)).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let rows = self
            .table
            .f32_rows(&self.record.key, &distinct)
            .map_err(|e| TrainError::Config(format!("text embeddings {}: {e}", self.record.vlm_dir)))?;
        let h = self.record.hidden;
        let mut out = vec![0.0; captions.len() * len * h];
        for (b, ids) in captions.iter().enumerate() {
            for (i, &id) in ids.iter().enumerate() {
                // `distinct` is sorted and holds every id.
                let k = distinct.binary_search(&(id as usize)).unwrap_or_default();
                let at = (b * len + i) * h;
                out[at..at + h].copy_from_slice(&rows[k * h..(k + 1) * h]);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn fixture() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qwen2_vl_tiny/model")
    }

    #[test]
    fn vlm_text_pads_with_zeros_and_reads_the_table_rows() {
        let text = VlmText::open(&fixture()).unwrap();
        assert_eq!(
            (text.record().key.as_str(), text.record().vocab_size, text.hidden()),
            ("model.embed_tokens.weight", 400, 64)
        );
        // An empty caption reads as the pad token (`<|endoftext|>`), never as nothing.
        let pad = Qwen2VlTokenizer::from_dir(&fixture()).unwrap().token_id("<|endoftext|>").unwrap();
        assert_eq!(text.encode("", 8).unwrap(), [pad]);
        let ids = text.encode("a red circle on the left", 3).unwrap();
        assert_eq!(ids.len(), 3);

        let table = Checkpoint::open(&fixture()).unwrap().f32("model.embed_tokens.weight", &[400, 64]).unwrap();
        let row = |id: u32| &table[id as usize * 64..(id as usize + 1) * 64];
        let short = [ids[2]];
        let out = text.embed(&[&ids, &short]).unwrap();
        assert_eq!(out.len(), 2 * 3 * 64);
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(&out[i * 64..(i + 1) * 64], row(id));
        }
        assert_eq!(&out[3 * 64..4 * 64], row(ids[2]));
        assert!(out[4 * 64..].iter().all(|&v| v == 0.0), "padding rows are zeros");

        let side = TextSide::Vlm(Box::new(text));
        let t = side.embed::<burn::backend::NdArray>(&[&ids, &short], &Default::default()).unwrap().unwrap();
        assert_eq!(t.dims(), [2, 3, 64]);
        let err = side.embed::<burn::backend::NdArray>(&[&[400]], &Default::default()).unwrap_err().to_string();
        assert!(err.contains("qwen2_vl_tiny") && err.contains("row 400"), "{err}");
        let words = TextSide::Words(WordVocab::build(["a red circle"], 1));
        assert!(words.embed::<burn::backend::NdArray>(&[&ids], &Default::default()).unwrap().is_none());
    }

    #[test]
    fn reopening_checks_the_recorded_table() {
        let recorded = VlmText::open(&fixture()).unwrap().record().clone();
        assert!(VlmText::reopen(&recorded).is_ok());
        let wider = TextEmbeddings { hidden: 128, ..recorded.clone() };
        let err = VlmText::reopen(&wider).unwrap_err().to_string();
        assert!(err.contains(&recorded.vlm_dir) && err.contains("[400, 128]") && err.contains("[400, 64]"), "{err}");
        let gone = TextEmbeddings { vlm_dir: "/nonexistent/vlm".into(), ..recorded };
        let err = VlmText::reopen(&gone).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/vlm"), "{err}");
    }
}
