//! The trained part of stage 2, one form per method: DEPER's subject encoder with the persona
//! adapter, or the PT baseline's table of persona embeddings; loading it from a run, exporting the
//! encoder, and the persona of each subject evaluation captions with.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::prelude::*;
use deper_core::Split;
use deper_model::adapter::{PersonaAdapter, PersonaAdapterConfig};
use deper_model::Deper;
use std::collections::BTreeMap;
use std::path::Path;

use super::{Method, Stage2Info};
use crate::data::Prepared;
use crate::eval::{mean_vector, run_model};
use crate::run_folder::{load_checked, save_model, write_run_json, RUN_FILE};
use crate::{Result, TrainError};

/// DEPER's trained part: the subject encoder (z_s) and the adapter (z_s → persona embedding).
#[derive(Module, Debug)]
pub struct EncoderAdapter<B: Backend> {
    pub encoder: Deper<B>,
    pub adapter: PersonaAdapter<B>,
}

/// The trained part of a stage-2 run, one variant per [`Method`].
// One per run, never in a collection; burn's `Module` derive needs the module itself, not a `Box`.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Personalizer<B: Backend> {
    /// [`Method::Deper`]: persona = adapter(mean z_s of the subject's triplets).
    Deper(EncoderAdapter<B>),
    /// [`Method::Pt`]: row `label` of the table is subject `label`'s persona embedding.
    Pt(Embedding<B>),
}

impl<B: Backend> Personalizer<B> {
    /// A fresh personalizer for the run `info` describes: DEPER over `encoder` (its stage-1
    /// encoder) with a new adapter, or a PT table of zeros.
    pub(super) fn new(info: &Stage2Info, encoder: Option<Deper<B>>, device: &B::Device) -> Result<Self> {
        match (info.method, encoder) {
            (Method::Deper, Some(encoder)) => {
                let d = info.stage1_info.as_ref().map_or(384, |i| i.config.model.d_model);
                let adapter = PersonaAdapterConfig::new(d, info.hidden_size).init(device);
                Ok(Self::Deper(EncoderAdapter { encoder, adapter }))
            }
            (Method::Deper, None) => {
                Err(TrainError::Config("a `deper` stage-2 run needs its stage-1 run's description".into()))
            }
            // Zeros, like the adapter's near-zero start: no subject begins with a random soft prompt.
            (Method::Pt, _) => Ok(Self::Pt(
                EmbeddingConfig::new(info.subjects.len(), info.hidden_size)
                    .with_initializer(burn::nn::Initializer::Zeros)
                    .init(device),
            )),
        }
    }

    /// Which method this personalizer belongs to.
    pub fn method(&self) -> Method {
        match self {
            Self::Deper(_) => Method::Deper,
            Self::Pt(_) => Method::Pt,
        }
    }

    /// DEPER's subject encoder (`None` for PT).
    pub fn encoder(&self) -> Option<&Deper<B>> {
        match self {
            Self::Deper(p) => Some(&p.encoder),
            Self::Pt(_) => None,
        }
    }

    /// DEPER's persona adapter (`None` for PT).
    pub fn adapter(&self) -> Option<&PersonaAdapter<B>> {
        match self {
            Self::Deper(p) => Some(&p.adapter),
            Self::Pt(_) => None,
        }
    }

    /// DEPER's persona adapter, owned (`None` for PT).
    pub fn into_adapter(self) -> Option<PersonaAdapter<B>> {
        match self {
            Self::Deper(p) => Some(p.adapter),
            Self::Pt(_) => None,
        }
    }

    /// DEPER's subject encoder, owned (`None` for PT).
    pub fn into_encoder(self) -> Option<Deper<B>> {
        match self {
            Self::Deper(p) => Some(p.encoder),
            Self::Pt(_) => None,
        }
    }

    /// The same personalizer with the encoder's parameters frozen (only the adapter learns).
    pub(super) fn with_frozen_encoder(self) -> Self {
        match self {
            Self::Deper(p) => Self::Deper(EncoderAdapter { encoder: p.encoder.no_grad(), adapter: p.adapter }),
            pt => pt,
        }
    }
}

/// Loads a stage-2 run's weights.
pub fn load_personalizer<B: Backend>(run: &Path, info: &Stage2Info, device: &B::Device) -> Result<Personalizer<B>> {
    let encoder = info.stage1_info.as_ref().map(|i| i.model_config().init::<B>(device));
    let model = Personalizer::new(info, encoder, device)?;
    // The personalizer used to be a struct of `Option` modules, and burn's `Option::load_record`
    // counts the parameters first, which initialises the fresh ones (drawing from the backend's
    // random generator). Doing the same keeps a resumed run's dropout draws, and so its numbers,
    // as they were.
    let _ = model.num_params();
    load_checked(run, model, device, |_| {}, "the weights do not match the model described by run.json")
}

/// Writes the fine-tuned subject encoder of a `deper` stage-2 run as a stage-1 run folder
/// (`run.json` and `model.mpk`) in `out`, so everything that reads stage-1 runs (`deper embed`, the
/// browser's in-page encoder) computes the z_s this run's adapter was trained on.
pub fn export_encoder(run: &Path, out: &Path) -> Result<()> {
    let info = Stage2Info::load(run)?;
    let stage1_info = info.stage1_info.clone().ok_or_else(|| TrainError::Checkpoint {
        path: run.join(RUN_FILE),
        message: format!("a `{:?}` run has no subject encoder to export", info.method),
    })?;
    let device = Default::default();
    let personalizer = load_personalizer::<burn::backend::NdArray>(run, &info, &device)?;
    let encoder = personalizer.into_encoder().ok_or_else(|| TrainError::Checkpoint {
        path: run.join(RUN_FILE),
        message: "the run's weights hold no encoder".into(),
    })?;
    std::fs::create_dir_all(out).map_err(|e| TrainError::Io { path: out.into(), source: e })?;
    save_model(out, encoder)?;
    // run.json last: a folder with run.json is a complete run.
    write_run_json(out, &stage1_info)
}

/// Persona embedding `[hidden]` per subject for evaluation: seen subjects from their training
/// triplets (DEPER: mean z_s; PT: their row), unseen subjects (DEPER only) from their K support
/// triplets. Subjects a method cannot serve are absent.
pub fn subject_personas<B: Backend>(
    model: &Personalizer<B>,
    info: &Stage2Info,
    prep: &Prepared,
    shots: usize,
    device: &B::Device,
) -> Result<BTreeMap<String, Vec<f32>>> {
    match model {
        Personalizer::Deper(p) => encoder_personas(p, prep, shots, device),
        Personalizer::Pt(table) => table_personas(table, info),
    }
}

/// DEPER: each subject's persona is the adapter's output for its mean z_s.
fn encoder_personas<B: Backend>(
    model: &EncoderAdapter<B>,
    prep: &Prepared,
    shots: usize,
    device: &B::Device,
) -> Result<BTreeMap<String, Vec<f32>>> {
    let mut out = BTreeMap::new();
    for (subject, ids) in persona_triplets(prep, shots) {
        let z = run_model(&model.encoder, prep, &ids, 32, device)?.z_s;
        let mean = mean_vector(&z.iter().collect::<Vec<_>>());
        let persona = model.adapter.forward_vec(&mean).map_err(|e| TrainError::Config(e.to_string()))?;
        out.insert(subject.to_string(), persona);
    }
    Ok(out)
}

/// The triplets (sample indices) each subject's persona is made from: a seen subject's training
/// triplets, an unseen subject's first `shots` support triplets.
fn persona_triplets(prep: &Prepared, shots: usize) -> BTreeMap<&str, Vec<usize>> {
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, s) in prep.samples.iter().enumerate() {
        let use_it = if prep.splits.is_unseen(&s.subject) {
            prep.partition.support.contains(&i)
        } else {
            s.split == Split::Train
        };
        if use_it {
            groups.entry(s.subject.as_str()).or_default().push(i);
        }
    }
    for (subject, ids) in groups.iter_mut() {
        if prep.splits.is_unseen(subject) {
            ids.truncate(shots.max(1));
        }
    }
    groups
}

/// PT: each trained subject's persona is its row of the table.
fn table_personas<B: Backend>(table: &Embedding<B>, info: &Stage2Info) -> Result<BTreeMap<String, Vec<f32>>> {
    let w = table.weight.val();
    let [n, h] = w.dims();
    let values = w.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| TrainError::Config(format!("{e:?}")))?;
    let rows = info.subjects.iter().enumerate().take(n);
    Ok(rows.map(|(k, subject)| (subject.clone(), values[k * h..(k + 1) * h].to_vec())).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::stage1::{ModelSettings, RunInfo, Stage1Config, STAGE1};
    use crate::stage2::{Stage2Config, STAGE2};
    use burn::backend::NdArray;

    type B = NdArray;

    fn info(method: Method) -> Stage2Info {
        let stage1 = RunInfo {
            stage: STAGE1.into(),
            config: Stage1Config { model: ModelSettings::tiny(), ..Stage1Config::default() },
            subjects: vec!["a".into(), "b".into()],
            vocab: vec!["word".into()],
            feature_grid: [2, 2, 4],
            data: String::new(),
            text_embeddings: None,
            features: None,
        };
        Stage2Info {
            stage: STAGE2.into(),
            method,
            config: Stage2Config::default(),
            stage1: None,
            stage1_info: (method == Method::Deper).then_some(stage1),
            vlm: String::new(),
            data: String::new(),
            subjects: vec!["a".into(), "b".into()],
            hidden_size: 6,
        }
    }

    fn fresh(info: &Stage2Info) -> Personalizer<B> {
        let device = Default::default();
        let encoder = info.stage1_info.as_ref().map(|i| i.model_config().init::<B>(&device));
        Personalizer::new(info, encoder, &device).unwrap()
    }

    fn weights(adapter: &PersonaAdapter<B>) -> Vec<f32> {
        let d = adapter.d_in();
        (0..d)
            .flat_map(|k| {
                let mut z = vec![0.0; d];
                z[k] = 1.0;
                adapter.forward_vec(&z).unwrap()
            })
            .collect()
    }

    #[test]
    fn each_method_saves_and_loads_its_own_form() {
        let device = Default::default();
        let dir = tempfile::tempdir().unwrap();
        let deper = info(Method::Deper);
        let model = fresh(&deper);
        assert_eq!(model.method(), Method::Deper);
        let adapter = model.adapter().unwrap();
        assert_eq!((adapter.d_in(), adapter.hidden()), (ModelSettings::tiny().d_model, 6));
        let saved = weights(adapter);
        save_model(dir.path(), model).unwrap();
        let loaded = load_personalizer::<B>(dir.path(), &deper, &device).unwrap();
        assert!(loaded.encoder().is_some());
        // The loaded adapter is the saved one, not a fresh draw.
        assert_eq!(weights(loaded.adapter().unwrap()), saved);
        assert!(loaded.into_adapter().is_some());

        // PT: a table of zeros, no encoder or adapter; a DEPER checkpoint is not a PT run.
        let pt = info(Method::Pt);
        let err = load_personalizer::<B>(dir.path(), &pt, &device).unwrap_err().to_string();
        assert!(err.contains("do not match"), "{err}");
        let table = fresh(&pt);
        assert_eq!(table.method(), Method::Pt);
        assert!(table.encoder().is_none() && table.adapter().is_none());
        let pt_dir = tempfile::tempdir().unwrap();
        save_model(pt_dir.path(), table).unwrap();
        let loaded = load_personalizer::<B>(pt_dir.path(), &pt, &device).unwrap();
        let Personalizer::Pt(table) = loaded else { panic!("a PT run loads as PT") };
        let personas = table_personas(&table, &pt).unwrap();
        assert_eq!(personas.len(), 2);
        assert!(personas.values().all(|p| p == &vec![0.0; 6]));
        let err = load_personalizer::<B>(pt_dir.path(), &deper, &device).unwrap_err().to_string();
        assert!(err.contains("do not match"), "{err}");
    }
}
