//! Stage 1 with the VLM's text side (`deper train stage1 --text-embeddings VLM_DIR`) on the small
//! synthetic world, with the tiny Qwen2-VL fixture as the VLM: captions are the fixture tokenizer's
//! ids, run.json records the folder and its table, evaluation and embedding read captions the same
//! way (z_s recomputed here from rows of the table, and by the server's encoder from caption text),
//! stage 2 trains the encoder on the same text side and exports it with it, and a folder that no
//! longer holds the table is an error naming it.

#![allow(clippy::unwrap_used)] // a broken fixture should fail the test loudly

use burn::backend::{Autodiff, NdArray};
use burn::prelude::*;
use deper_core::dataset::Dataset;
use deper_pipeline::stage1::{embed_subjects, eval_fewshot};
use deper_pipeline::DeviceKind;
use deper_train::data::{make_batch, Sample};
use deper_train::eval::HostTriplet;
use deper_train::stage1::{self, RunInfo};
use deper_train::stage2::{self, Method};
use deper_train::text::TextSide;
use deper_vlm::Qwen2VlTokenizer;
use deper_weights::Checkpoint;
use std::path::{Path, PathBuf};

mod common;

type Cpu = NdArray;
type Train = Autodiff<NdArray>;

const KEY: &str = "model.embed_tokens.weight";

fn fixture_vlm() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qwen2_vl_tiny/model")
}

/// The mean z_s of `samples` computed without the text side's code: each caption's rows taken
/// from the whole table of the fixture, then the network's forward from embeddings.
fn z_s_by_hand(model: &deper_model::Deper<Cpu>, prep: &stage1::Prepared, samples: &[&Sample]) -> Vec<f32> {
    let device = Default::default();
    let table = Checkpoint::open(&fixture_vlm()).unwrap().f32(KEY, &[400, 64]).unwrap();
    let len = samples.iter().map(|s| s.caption.len()).max().unwrap();
    let mut values = vec![0.0f32; samples.len() * len * 64];
    for (b, s) in samples.iter().enumerate() {
        for (i, &id) in s.caption.iter().enumerate() {
            let at = (b * len + i) * 64;
            values[at..at + 64].copy_from_slice(&table[id as usize * 64..(id as usize + 1) * 64]);
        }
    }
    let embeddings = Tensor::<Cpu, 3>::from_data(TensorData::new(values, [samples.len(), len, 64]), &device);
    let batch = make_batch::<Cpu>(samples, &prep.features, &device).unwrap();
    assert!(batch.caption_embeddings.is_none(), "make_batch packs ids only");
    let out = model.forward_embedded(batch.patches, embeddings, batch.caption_mask, &batch.trajectory);
    let [n, d] = out.z_s.dims();
    let z: Vec<f32> = out.z_s.into_data().to_vec().unwrap();
    (0..d).map(|k| (0..n).map(|r| z[r * d + k]).sum::<f32>() / n as f32).collect()
}

/// A Qwen2-VL folder like the fixture whose input embeddings are 32 wide instead of 64.
fn narrower_vlm(dir: &Path) -> PathBuf {
    let out = dir.join("narrow-vlm");
    std::fs::create_dir_all(&out).unwrap();
    for file in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"] {
        std::fs::copy(fixture_vlm().join(file), out.join(file)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_vlm().join("config.json")).unwrap()).unwrap();
    config["text_config"]["hidden_size"] = 32.into();
    config["text_config"]["num_attention_heads"] = 2.into();
    config["vision_config"]["hidden_size"] = 32.into(); // the merger's output, the text width
    std::fs::write(out.join("config.json"), config.to_string()).unwrap();
    let table = vec![0.5f32; 400 * 32];
    deper_weights::write_safetensors(
        &out.join(deper_weights::SINGLE_FILE),
        &[(KEY, deper_weights::TensorData::F32(&table, &[400, 32]))],
    )
    .unwrap();
    out
}

#[test]
fn stage1_reads_captions_with_the_vlm_tokenizer_and_table() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::world(dir.path());
    let run = dir.path().join("run");
    let device = Default::default();
    let mut config = common::tiny(1);
    config.train.text_embeddings = Some(fixture_vlm());
    stage1::train::<Train>(&data, &run, config, false, &device, &mut |_| {}).unwrap();

    // run.json: the folder (absolute), its table, the width the network reads, 256 tokens.
    let run_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    let vlm_dir = std::fs::canonicalize(fixture_vlm()).unwrap().display().to_string();
    assert_eq!(
        run_json["text_embeddings"],
        serde_json::json!({"vlm_dir": vlm_dir, "key": KEY, "vocab_size": 400, "hidden": 64})
    );
    assert!(run_json.get("vocab").is_none(), "a VLM text side has no word vocabulary");
    assert_eq!(run_json["config"]["train"]["max_caption_tokens"], 256);
    assert_eq!(run_json["config"]["train"]["text_embeddings"], vlm_dir.as_str());
    assert_eq!(run_json["config"]["model"]["token_dim"], 64);

    // Caption ids are the fixture tokenizer's.
    let info = RunInfo::load(&run).unwrap();
    let prep = info.prepare(&data).unwrap();
    assert!(matches!(prep.text, TextSide::Vlm(_)));
    let tokenizer = Qwen2VlTokenizer::from_dir(&fixture_vlm()).unwrap();
    let triplets = Dataset::open(&data).unwrap().load_triplets().unwrap();
    assert_eq!(prep.samples.len(), triplets.len());
    for (s, t) in prep.samples.iter().zip(&triplets) {
        assert_eq!(s.triplet_id, t.id);
        let mut expected = tokenizer.encode(&t.description.text).unwrap();
        expected.truncate(256);
        assert_eq!(s.caption, expected, "{}", t.description.text);
    }
    assert!(prep.samples.iter().any(|s| s.caption.len() > 5));

    let report = eval_fewshot(&run, &data, 5, DeviceKind::Cpu).unwrap();
    assert_eq!((report.unseen_subjects, report.unseen_acc), (1, 1.0));
    assert!(report.seen_samples > 0 && report.unseen_queries > 0);

    // z_s of `deper embed` equals the one recomputed from rows of the table.
    let emb = embed_subjects(&run, &data, None, 5, DeviceKind::Cpu).unwrap();
    assert_eq!((emb.dim, emb.subjects.len()), (32, 4));
    let model = stage1::load_model::<Cpu>(&run, &info, &device).unwrap();
    for (subject, e) in &emb.subjects {
        let samples: Vec<&Sample> =
            e.support.iter().map(|id| prep.samples.iter().find(|s| &s.triplet_id == id).unwrap()).collect();
        let by_hand = z_s_by_hand(&model, &prep, &samples);
        let diff = by_hand.iter().zip(&e.z_s).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "{subject}: z_s differs by {diff}");
    }

    // The server's encoder (triplets outside the dataset) gives the same z_s from caption text.
    let encoder = deper_train::eval::Encoder::<Cpu>::open(&run, &device).unwrap();
    let support = &emb.subjects["s03"].support;
    let samples: Vec<&Sample> =
        support.iter().map(|id| prep.samples.iter().find(|s| &s.triplet_id == id).unwrap()).collect();
    let patches: Vec<f32> =
        make_batch::<Cpu>(&samples, &prep.features, &device).unwrap().patches.into_data().to_vec().unwrap();
    let host: Vec<HostTriplet> = samples
        .iter()
        .zip(patches.chunks(patches.len() / samples.len()))
        .map(|(s, features)| HostTriplet {
            features: features.to_vec(),
            caption: triplets.iter().find(|t| t.id == s.triplet_id).unwrap().description.text.clone(),
            trajectory: s.trajectory.to_trajectory(),
        })
        .collect();
    let z = encoder.mean_z_s(&host).unwrap();
    let diff = z.iter().zip(&emb.subjects["s03"].z_s).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff < 1e-5, "server encoder z_s differs by {diff}");

    // Stage 2 prepares the encoder's captions with the stage-1 run's text side.
    let sd = stage2::prepare_stage2::<Cpu>(&data, &fixture_vlm(), Some(&info), &device).unwrap();
    assert!(matches!(sd.prep.text, TextSide::Vlm(_)));
    let captions: Vec<&Vec<u32>> = sd.prep.samples.iter().map(|s| &s.caption).collect();
    assert_eq!(captions, prep.samples.iter().map(|s| &s.caption).collect::<Vec<_>>());

    // Stage 2 fine-tunes that encoder on the same text side; its exported encoder keeps it.
    let s2 = dir.path().join("stage2");
    let s2_config = stage2::Stage2Config { epochs: 1, ..stage2::Stage2Config::default() };
    stage2::train::<Train>(
        &data,
        Some(&run),
        &fixture_vlm(),
        &s2,
        Method::Deper,
        s2_config,
        false,
        &device,
        &mut |_| {},
    )
    .unwrap();
    let exported = dir.path().join("encoder");
    stage2::export_encoder(&s2, &exported).unwrap();
    assert_eq!(RunInfo::load(&exported).unwrap().text_embeddings, info.text_embeddings);
    let fine_tuned = embed_subjects(&exported, &data, Some(&["s03".to_string()]), 5, DeviceKind::Cpu).unwrap();
    assert_eq!(fine_tuned.subjects["s03"].z_s.len(), 32);

    // Reopened with a folder whose table is narrower, or with no folder: errors naming it.
    let narrow = narrower_vlm(dir.path());
    let mut moved = run_json.clone();
    moved["text_embeddings"]["vlm_dir"] = narrow.display().to_string().into();
    std::fs::write(run.join("run.json"), moved.to_string()).unwrap();
    let err = format!("{:#}", eval_fewshot(&run, &data, 5, DeviceKind::Cpu).unwrap_err());
    assert!(err.contains("narrow-vlm") && err.contains("[400, 64]") && err.contains("[400, 32]"), "{err}");
    moved["text_embeddings"]["vlm_dir"] = dir.path().join("gone").display().to_string().into();
    std::fs::write(run.join("run.json"), moved.to_string()).unwrap();
    let err = format!("{:#}", embed_subjects(&run, &data, None, 5, DeviceKind::Cpu).unwrap_err());
    assert!(err.contains("gone"), "{err}");
}
