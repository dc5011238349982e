//! Stage 2: conditioning the frozen VLM on the subject (`deper train stage2`), and the caption
//! generation every method is evaluated with.
//!
//! Methods (one run folder each):
//! - `deper`: the stage-1 subject encoder (fine-tuned) gives z_s; the persona adapter
//!   ([`deper_model::adapter`], Linear(D → VLM hidden, no bias)) turns it into the persona token's embedding in "… in the style of <|persona|>.". Loss =
//!   caption NLL + 1.0·cls + 0.1·con. The encoder sees a *different* triplet of the same subject than
//!   the one being captioned, so z_s has to carry the person, not the content; the adapter gets the
//!   mean of that z_s and the subject's recent ones ([`Stage2Config::persona_shots`]), as evaluation
//!   gives it means.
//! - `pt` ("VLM + PT"): one learned persona embedding per training subject, NLL only. It cannot
//!   describe subjects it was not trained on.
//!
//! The zero-shot baseline needs no run: the same prompt with the persona token's own embedding.
//!
//! The VLM stays frozen (its parameters get no gradients); its image features are computed once per
//! image. At evaluation a seen subject's z_s is the mean over its training triplets, an unseen
//! subject's the mean over its K support triplets (no retraining).
//!
//! Run folder ([`crate::run_folder`]): `run.json` (stage `stage2`, method, settings, stage-1 run,
//! VLM folder, subjects), `model.mpk`, `optimizer.mpk`, `state.json`, `metrics.jsonl` (epoch,
//! train_loss, train_nll, val_nll, …).
//!
//! - [`config`]: [`Stage2Config`] and the run's `run.json` ([`Stage2Info`]).
//! - [`personalizer`]: what a run trains ([`Personalizer`]), loading it, subjects' personas.
//! - [`data`]: the samples, targets and frozen VLM features a run reads once.
//! - [`train`](mod@train): the training loop; `recent`: the recent z_s a training persona averages.
//! - [`generate`]: greedy captions and the teacher-forced caption NLL.

pub mod config;
pub mod data;
pub mod generate;
pub mod personalizer;
mod recent;
pub mod train;

pub use config::{same_folder, Method, Stage2Config, Stage2Info};
pub use data::{prepare_stage2, FrozenVlm, Stage2Data};
pub use generate::{caption_nll, evaluation_set, generate, greedy, GeneratedCaption};
pub use personalizer::{export_encoder, load_personalizer, subject_personas, EncoderAdapter, Personalizer};
pub use recent::RecentEmbeddings;
pub use train::{train, train_cancellable, Stage2Epoch, Stage2Progress};

pub const STAGE2: &str = "stage2";
