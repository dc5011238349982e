//! The model side of the browser's `Embedder`, generic over the burn backend (WebGPU or the
//! CPU in the page, NdArray in the native tests): reads a stage-1 run (`run.json` text and
//! `model.mpk` bytes), checks triplets, and computes their subject embeddings `z_s` with the
//! deper-model code native `deper embed` runs (deper-train's `eval::embed`):
//!
//! * captions → ids with [`WordVocab::encode_caption`] and the run's `max_caption_tokens`;
//! * batches of the run's `batch_size`, packed by [`ModelInput::from_host`];
//! * [`Deper::forward_with_roi_weights`], the forward pass with the RoI pooling weights built on
//!   the host ([`TrajectoryBatch::host_roi_weights`]), since WebGPU cannot be read back
//!   synchronously; it gives the outputs of `Deper::forward` (tested in deper-model);
//! * the mean over triplets with [`deper_model::run::mean_vector`].
//!
//! A run whose captions are embedded with a VLM's input-embedding table (`text_embeddings` in
//! `run.json`, `deper train stage1 --text-embeddings`) is refused: the page cannot load a VLM, and
//! the server computes z_s for such an encoder itself (`in_page: false` in `/api/embedder`).
//!
//! burn panics when a record does not fit the module (and a panic aborts a wasm module), so
//! [`Engine::load`] compares the structure of the uploaded weights (every parameter's path and
//! shape) with the network `run.json` describes before loading them.

use burn::backend::NdArray;
use burn::module::Module;
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use deper_core::Trajectory;
use deper_model::run::RunModel;
use deper_model::text::WordVocab;
use deper_model::{Deper, ModelInput, TrajectoryBatch};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// One image/description/trajectory triplet as the page sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct Triplet {
    /// Patch features `[h, w, c]`, row-major, as the server's feature cache holds them.
    pub features: Vec<f32>,
    /// `[h, w, c]`.
    pub grid: [usize; 3],
    pub caption: String,
    pub trajectory: Trajectory,
}

/// A loaded stage-1 run on one device.
#[derive(Debug)]
pub struct Engine<B: Backend> {
    model: Deper<B>,
    run: RunModel,
    vocab: WordVocab,
    device: B::Device,
}

fn recorder() -> NamedMpkBytesRecorder<FullPrecisionSettings> {
    NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
}

impl<B: Backend> Engine<B> {
    /// Builds the network `run_json` describes and loads `model_mpk` (a run's `model.mpk`) into it.
    pub fn load(run_json: &str, model_mpk: Vec<u8>, device: &B::Device) -> Result<Self, String> {
        let run = RunModel::from_json(run_json)?;
        if let Some(text) = &run.text_embeddings {
            return Err(format!(
                "run.json: captions are embedded with the input-embedding table of the VLM in {} \
                 (text_embeddings), which the page cannot load; the server computes z_s for this encoder",
                text.vlm_dir
            ));
        }
        let config = run.model_config();
        check_structure(&config, &model_mpk)?;
        let record = Recorder::<B>::load(&recorder(), model_mpk, device)
            .map_err(|e| format!("model.mpk: cannot read the weights: {e}"))?;
        let model: Deper<B> = config.init(device).load_record(record);
        let vocab = run.vocab();
        Ok(Self { model, run, vocab, device: device.clone() })
    }

    /// Width of `z_s`.
    pub fn dim(&self) -> usize {
        self.run.config.model.d_model
    }

    /// Checks every triplet (errors name the triplet index and the field).
    pub fn check(&self, triplets: &[Triplet]) -> Result<(), String> {
        if triplets.is_empty() {
            return Err("no triplets".into());
        }
        triplets.iter().enumerate().try_for_each(|(i, t)| check_triplet(i, t, self.run.feature_grid))
    }

    /// `z_s` of every triplet, one `[n, dim]` tensor per batch of the run's batch size, in order.
    /// Reading them back is left to the caller (asynchronously on WebGPU).
    pub fn z_s_batches(&self, triplets: &[Triplet]) -> Result<Vec<Tensor<B, 2>>, String> {
        self.check(triplets)?;
        let [h, w, _] = self.run.feature_grid;
        let max_tokens = self.run.config.train.max_caption_tokens;
        let mut out = Vec::new();
        for chunk in triplets.chunks(self.run.config.train.batch_size.max(1)) {
            let patches: Vec<f32> = chunk.iter().flat_map(|t| t.features.iter().copied()).collect();
            let captions: Vec<Vec<u32>> =
                chunk.iter().map(|t| self.vocab.encode_caption(&t.caption, max_tokens)).collect();
            let caption_refs: Vec<&[u32]> = captions.iter().map(Vec::as_slice).collect();
            let trajectories: Vec<Trajectory> = chunk.iter().map(|t| t.trajectory.clone()).collect();
            let input =
                ModelInput::<B>::from_host(patches, self.run.feature_grid, &caption_refs, &trajectories, &self.device)?;
            let [_, steps, _] = input.trajectory.boxes.dims();
            let weights = TrajectoryBatch::<B>::host_roi_weights(&trajectories, steps, h, w, &self.device);
            let o = self.model.forward_with_roi_weights(
                input.patches,
                input.caption_ids,
                input.caption_mask,
                &input.trajectory,
                weights,
            );
            out.push(o.z_s);
        }
        Ok(out)
    }
}

/// Checks one triplet against the run's feature grid.
pub fn check_triplet(index: usize, t: &Triplet, run_grid: [usize; 3]) -> Result<(), String> {
    let at = |field: &str, msg: String| Err(format!("triplet {index}: {field}: {msg}"));
    if t.grid != run_grid {
        return at("grid", format!("{:?}, but the run was trained on features {run_grid:?}", t.grid));
    }
    let [h, w, c] = t.grid;
    if t.features.len() != h * w * c {
        return at("features", format!("{} values, expected {h}·{w}·{c} = {}", t.features.len(), h * w * c));
    }
    if let Some(k) = t.features.iter().position(|v| !v.is_finite()) {
        return at("features", format!("value {k} is {}", t.features[k]));
    }
    for (k, step) in t.trajectory.steps.iter().enumerate() {
        if !step.bbox.to_array().iter().all(|v| v.is_finite()) {
            return at(&format!("trajectory.steps[{k}].bbox"), format!("{:?} is not finite", step.bbox));
        }
        if !(step.duration.is_finite() && step.duration >= 0.0) {
            return at(&format!("trajectory.steps[{k}].duration"), format!("{} is not a duration", step.duration));
        }
    }
    Ok(())
}

/// Compares the parameter paths and shapes of `model_mpk` with those of the network `config`
/// builds (made on the CPU, so nothing is read back from a GPU), naming the first difference.
fn check_structure(config: &deper_model::DeperConfig, model_mpk: &[u8]) -> Result<(), String> {
    let fresh: Deper<NdArray> = config.init(&Default::default());
    let fresh_bytes = Recorder::<NdArray>::record(&recorder(), fresh.into_record(), ())
        .map_err(|e| format!("cannot describe the network of run.json: {e}"))?;
    let read = |bytes: &[u8]| -> Result<Vec<String>, String> {
        let node: Node = Recorder::<NdArray>::load_item(&recorder(), &mut bytes.to_vec())
            .map_err(|e| format!("model.mpk is not a burn MessagePack record: {e}"))?;
        let item = match node {
            Node::Map(entries) => entries.into_iter().find(|(k, _)| k == "item").map(|(_, v)| v),
            _ => None,
        }
        .ok_or("model.mpk is not a burn record (no `item`)")?;
        let mut out = Vec::new();
        item.flatten("", &mut out);
        Ok(out)
    };
    let expected = read(&fresh_bytes)?;
    let given = read(model_mpk)?;
    if let Some((e, g)) = expected.iter().zip(&given).find(|(e, g)| e != g) {
        return Err(format!("model.mpk does not match the network of run.json: expected `{e}`, found `{g}`"));
    }
    if expected.len() != given.len() {
        let (longer, what) =
            if expected.len() > given.len() { (&expected, "is missing") } else { (&given, "has an extra") };
        return Err(format!(
            "model.mpk does not match the network of run.json: it {what} `{}`",
            longer[expected.len().min(given.len())]
        ));
    }
    Ok(())
}

/// The structure of a deserialised record: maps and sequences with their scalars (tensor
/// shapes and dtypes), and the length of byte buffers (tensor data) instead of their content.
#[derive(Debug)]
enum Node {
    Map(Vec<(String, Node)>),
    Seq(Vec<Node>),
    Scalar(String),
    Bytes(usize),
}

impl Node {
    /// `path` for every map key and sequence element, `path=value` for scalars and byte lengths;
    /// parameter ids (random per initialisation) are left out.
    fn flatten(&self, path: &str, out: &mut Vec<String>) {
        match self {
            Node::Map(entries) => {
                for (k, v) in entries.iter().filter(|(k, _)| k != "id") {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    out.push(p.clone());
                    v.flatten(&p, out);
                }
            }
            Node::Seq(items) => {
                for (i, v) in items.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    out.push(p.clone());
                    v.flatten(&p, out);
                }
            }
            Node::Scalar(v) => out.push(format!("{path}={v}")),
            Node::Bytes(len) => out.push(format!("{path}=<{len} bytes>")),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a burn record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            entries.push((key, map.next_value::<Node>()?));
        }
        Ok(Node::Map(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_owned()))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Node, E> {
        Ok(Node::Bytes(v.len()))
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar("none".into()))
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar("unit".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::record::NamedMpkFileRecorder;
    use deper_core::{AttentionStep, BBox, TrajectorySource};
    use deper_model::run::{deper_config, mean_vector};

    type B = NdArray;

    fn run_json(d_model: usize, decoder_layers: usize, batch_size: usize) -> String {
        serde_json::json!({
            "stage": "stage1",
            "config": {
                "train": {"batch_size": batch_size, "max_caption_tokens": 6},
                "model": {"d_model": d_model, "n_heads": 2, "encoder_layers": 1, "decoder_layers": decoder_layers, "token_dim": 8}
            },
            "subjects": ["a", "b", "c"],
            "vocab": ["<pad>", "<unk>", "a", "red", "circle", "blue"],
            "feature_grid": [3, 2, 4],
            "data": "x"
        })
        .to_string()
    }

    /// A freshly initialised network written as training writes `model.mpk`, and read back as
    /// native evaluation reads it (deper-train's `load_model`): the model and the file's bytes.
    fn model_mpk(run: &str) -> (Deper<B>, Vec<u8>) {
        let run = RunModel::from_json(run).unwrap();
        let device = Default::default();
        let config = deper_config(&run.config.model, run.feature_grid, run.vocab.len(), run.subjects.len());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model");
        let file_recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        config.init::<B>(&device).save_file(path.clone(), &file_recorder).unwrap();
        let record = Recorder::<B>::load(&file_recorder, path.clone(), &device).unwrap();
        let model = config.init::<B>(&device).load_record(record);
        (model, std::fs::read(path.with_extension("mpk")).unwrap())
    }

    fn triplet(seed: usize, steps: usize, caption: &str) -> Triplet {
        let features = (0..24).map(|k| ((k * 7 + seed * 13) % 11) as f32 / 11.0 - 0.4).collect();
        let steps = (0..steps)
            .map(|k| {
                let x = 0.1 * (k + seed % 3) as f64;
                AttentionStep {
                    bbox: BBox::from_corners(x, 0.2, x + 0.3, 0.6),
                    duration: 0.2 + 0.05 * k as f64,
                    start: None,
                    words: vec![],
                }
            })
            .collect();
        Triplet {
            features,
            grid: [3, 2, 4],
            caption: caption.into(),
            trajectory: Trajectory { source: TrajectorySource::Mouse, steps },
        }
    }

    fn rows(batches: Vec<Tensor<B, 2>>) -> Vec<Vec<f32>> {
        let mut out = Vec::new();
        for z in batches {
            let [_, d] = z.dims();
            let v: Vec<f32> = z.into_data().to_vec().unwrap();
            out.extend(v.chunks(d).map(<[f32]>::to_vec));
        }
        out
    }

    /// What native evaluation computes: `ModelInput` + `Deper::forward` (device read-back path).
    fn native_z(model: &Deper<B>, triplets: &[Triplet], vocab: &WordVocab) -> Vec<Vec<f32>> {
        let device = Default::default();
        let patches: Vec<f32> = triplets.iter().flat_map(|t| t.features.clone()).collect();
        let captions: Vec<Vec<u32>> = triplets.iter().map(|t| vocab.encode_caption(&t.caption, 6)).collect();
        let refs: Vec<&[u32]> = captions.iter().map(Vec::as_slice).collect();
        let trajs: Vec<Trajectory> = triplets.iter().map(|t| t.trajectory.clone()).collect();
        let input = ModelInput::<B>::from_host(patches, [3, 2, 4], &refs, &trajs, &device).unwrap();
        rows(vec![model.forward(input.patches, input.caption_ids, input.caption_mask, &input.trajectory).z_s])
    }

    #[test]
    fn loads_a_run_and_matches_the_native_forward_pass() {
        let run = run_json(16, 1, 8);
        let (model, bytes) = model_mpk(&run);
        let engine = Engine::<B>::load(&run, bytes, &Default::default()).unwrap();
        assert_eq!(engine.dim(), 16);
        let triplets = vec![triplet(0, 3, "a red circle"), triplet(1, 5, "blue"), triplet(2, 1, "")];
        let got = rows(engine.z_s_batches(&triplets).unwrap());
        let want = native_z(&model, &triplets, &engine.vocab);
        let loaded = native_z(&engine.model, &triplets, &engine.vocab);
        assert_eq!(got.len(), 3);
        let max_diff = |a: &[Vec<f32>], b: &[Vec<f32>]| {
            a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max)
        };
        assert!(max_diff(&loaded, &want) < 1e-6, "weights: {}", max_diff(&loaded, &want));
        assert!(max_diff(&got, &want) < 1e-6, "forward: {}", max_diff(&got, &want));
        // The subject embedding is the mean of the rows.
        let mean = mean_vector(&got.iter().collect::<Vec<_>>());
        assert!((mean[0] - (got[0][0] + got[1][0] + got[2][0]) / 3.0).abs() < 1e-6);
    }

    #[test]
    fn batches_follow_the_runs_batch_size() {
        let run = run_json(16, 1, 2);
        let (_, bytes) = model_mpk(&run);
        let engine = Engine::<B>::load(&run, bytes, &Default::default()).unwrap();
        let triplets: Vec<Triplet> = (0..5).map(|i| triplet(i, 2 + i, "a circle")).collect();
        let batches = engine.z_s_batches(&triplets).unwrap();
        assert_eq!(batches.iter().map(|z| z.dims()[0]).collect::<Vec<_>>(), [2, 2, 1]);
    }

    #[test]
    fn foreign_or_mismatched_weights_are_errors() {
        let run = run_json(16, 1, 8);
        let device = Default::default();
        let err = Engine::<B>::load(&run, b"not a model".to_vec(), &device).unwrap_err();
        assert!(err.contains("model.mpk"), "{err}");
        // Another width: the first parameter's shape differs.
        let (_, wide) = model_mpk(&run_json(32, 1, 8));
        let err = Engine::<B>::load(&run, wide, &device).unwrap_err();
        assert!(err.contains("does not match the network of run.json"), "{err}");
        // More decoder layers: same shapes, one layer too many.
        let (_, deep) = model_mpk(&run_json(16, 2, 8));
        let err = Engine::<B>::load(&run, deep, &device).unwrap_err();
        assert!(err.contains("has an extra") || err.contains("does not match"), "{err}");
        let (_, mut cut) = model_mpk(&run);
        cut.truncate(cut.len() / 2);
        assert!(Engine::<B>::load(&run, cut, &device).is_err());
    }

    #[test]
    fn a_run_with_a_vlm_text_side_is_refused() {
        let mut run: serde_json::Value = serde_json::from_str(&run_json(16, 1, 8)).unwrap();
        let (_, bytes) = model_mpk(&run.to_string());
        run["text_embeddings"] = serde_json::json!({
            "vlm_dir": "/models/Qwen2-VL-2B-Instruct", "key": "model.embed_tokens.weight", "vocab_size": 151936, "hidden": 8
        });
        let err = Engine::<B>::load(&run.to_string(), bytes, &Default::default()).unwrap_err();
        assert!(err.contains("/models/Qwen2-VL-2B-Instruct") && err.contains("server computes z_s"), "{err}");
    }

    #[test]
    fn bad_triplets_name_the_index_and_field() {
        let run = run_json(16, 1, 8);
        let (_, bytes) = model_mpk(&run);
        let engine = Engine::<B>::load(&run, bytes, &Default::default()).unwrap();
        let mut short = triplet(0, 2, "a");
        short.features.pop();
        let err = engine.z_s_batches(&[triplet(1, 2, "a"), short]).unwrap_err();
        assert!(err.starts_with("triplet 1: features: 23 values"), "{err}");
        let mut grid = triplet(0, 2, "a");
        grid.grid = [2, 3, 4];
        assert!(engine.check(&[grid]).unwrap_err().starts_with("triplet 0: grid:"));
        let mut nan = triplet(0, 2, "a");
        nan.trajectory.steps[1].duration = f64::NAN;
        let err = engine.check(&[nan]).unwrap_err();
        assert!(err.contains("trajectory.steps[1].duration"), "{err}");
        assert_eq!(engine.check(&[]).unwrap_err(), "no triplets");
    }
}
