//! `deper eval`: personalized-caption evaluation of stage-2 runs and the zero-shot VLM, written as the
//! report folder (`report.json`, `report.md`, `report_full.json`, `report.html`, `captions.json`).
//!
//! Protocol (the paper's): captions are generated greedily for the test images of seen subjects and
//! for the val/test triplets of unseen subjects (never their support triplets). Each generated caption
//! is scored against the description *its* subject wrote for that image (pycocoevalcap conventions,
//! `deper-eval`). Seen subjects' z_s is the mean over their training triplets; unseen subjects' the
//! mean over their K support triplets. The PT baseline has no persona for unseen subjects.
//! Subject accuracy comes from the (fine-tuned) encoder: its classifier for seen subjects, K-shot
//! nearest centroid (cosine) among the unseen subjects for unseen ones. The personalisation score asks,
//! for images several subjects described, whether each subject's reference ranks its own subject's
//! prediction first (CIDEr-D).
//!
//! The steps: [`methods`] reads the runs and finds their VLM; [`captions`] captions the evaluation
//! set with each method's personas and scores its encoder; [`scores`] scores the captions per split
//! and sums several runs of a method; [`report`] writes the report folder.

mod captions;
mod methods;
mod report;
mod scores;

pub use scores::RunSpread;

use crate::backend::{with_backend, DeviceKind};
use crate::progress::OnEvent;
use burn::tensor::backend::Backend;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Metric keys of `report.json`, per split and method. `caption_nll` is the mean NLL per token
/// (nats) of the subjects' own test descriptions (their first `MAX_CAPTION_TOKENS` tokens and the
/// end-of-turn token, as stage 2 trains on) under the method's persona, teacher-forced: lower is
/// better, and unlike the caption metrics it carries no greedy-decoding noise.
pub const REPORT_KEYS: [&str; 6] = ["Bleu_4", "CIDEr", "METEOR", "ROUGE_L", "subject_acc", CAPTION_NLL];

/// The teacher-forced caption NLL's metric key.
pub const CAPTION_NLL: &str = "caption_nll";

/// A method's scores on one split.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MethodScores {
    pub metrics: BTreeMap<String, Option<f64>>,
    pub captions: usize,
}

/// The whole outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// split → method → scores.
    pub splits: BTreeMap<String, BTreeMap<String, MethodScores>>,
    pub report_json: Value,
}

/// What to evaluate and where the report goes.
#[derive(Debug, Clone)]
pub struct EvalRequest {
    /// Dataset folder the runs were trained on.
    pub data: PathBuf,
    /// Stage-2 run folders; the zero-shot VLM is always added.
    pub runs: Vec<PathBuf>,
    /// Report folder.
    pub out: PathBuf,
    /// Support triplets per unseen subject.
    pub shots: usize,
    /// VLM folder, instead of the one the runs recorded (for run folders moved with their VLM).
    pub vlm: Option<PathBuf>,
    /// The command line that asked for the report, written into it.
    pub command: String,
}

/// Evaluates `request.runs` on `request.data` on `device` and writes the report folder.
pub fn evaluate(request: &EvalRequest, device: DeviceKind, on: OnEvent<'_>) -> anyhow::Result<Evaluation> {
    with_backend!(device, B, AD, device => evaluate_on::<B>(request, &device, on))
}

/// [`evaluate`] on a given backend. The VLM is the one the runs recorded (all the same folder), or
/// `request.vlm` when given.
pub fn evaluate_on<B: Backend>(
    request: &EvalRequest,
    device: &B::Device,
    on: OnEvent<'_>,
) -> anyhow::Result<Evaluation> {
    let methods = methods::load(&request.runs)?;
    let vlm = methods::vlm_folder(&methods, request.vlm.as_deref())?;
    let mut collected = captions::Collected::default();
    collected.zero_shot::<B>(&request.data, &vlm, &methods, device, &mut *on)?;
    for method in &methods {
        collected.method::<B>(&request.data, &vlm, method, request.shots, device, &mut *on)?;
    }
    let splits = scores::score_splits(&collected)?;
    let spreads = scores::over_runs(&splits);
    let report_json = scores::report_json(&splits, &spreads);
    report::write(request, &methods, &collected, &splits, &spreads, &report_json)?;
    Ok(Evaluation { splits, report_json })
}
