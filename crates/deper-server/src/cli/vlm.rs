//! `deper caption` and `deper vlm forward`: the frozen VLM from a Hugging Face model folder.

use super::train::{with_backend, DeviceKind};
use clap::{Args, Subcommand};
use deper_vlm::{AnyVlm, PersonaVectors};
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum VlmCommand {
    /// Logits for given inputs: IN holds `input_ids` i64 [1, L], optional `persona_embeddings` f32 [K, hidden]
    /// with `persona_token_ids` i64 [K], and images: for Qwen2-VL `pixel_values` f32 [N, 1176] with
    /// `image_grid_thw` i64 [n, 3]; for Idefics3/SmolVLM `pixel_values` f32 [N_tiles, 3, H, W] with an optional
    /// `pixel_attention_mask` [N_tiles, H, W]. OUT gets `logits` f32 [1, L, vocab]. The family is the folder's
    /// `model_type` (qwen2_vl, idefics3).
    Forward {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        inputs: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
        device: DeviceKind,
    },
}

pub fn run(cmd: VlmCommand) -> anyhow::Result<()> {
    match cmd {
        VlmCommand::Forward { model, inputs, out, device } => {
            with_backend!(device, B, AD, dev => {
                let vlm = AnyVlm::<B>::load(&model, &dev)?;
                vlm.forward_file(&inputs, &out).map_err(anyhow::Error::from)
            })?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
    }
}

#[derive(Debug, Args)]
pub struct CaptionArgs {
    /// Hugging Face model folder (config.json, *.safetensors, tokenizer.json, chat template, preprocessor config);
    /// Qwen2-VL or Idefics3/SmolVLM, by its `model_type`.
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub image: PathBuf,
    /// The user turn's text; the image is placed before it, as the HF processor does.
    #[arg(long, default_value = "Describe the image.")]
    pub prompt: String,
    /// Persona vectors (safetensors with `persona_embeddings` [K, hidden], optional `persona_token_ids`);
    /// the prompt must then contain the persona token(s).
    #[arg(long)]
    pub persona: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Greedy decoding (the default; sampling options arrive with the caption API).
    #[arg(long, default_value_t = true)]
    pub greedy: bool,
    /// Print {"text", "prompt_ids", "generated_ids"}.
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
}

pub fn caption(args: CaptionArgs) -> anyhow::Result<()> {
    let persona = args.persona.as_deref().map(PersonaVectors::from_file).transpose()?;
    let streaming = !args.json;
    let mut stderr = std::io::stderr();
    let mut on_token = |_| {
        if streaming {
            // A dot per token: progress while the text is produced.
            let _ = write!(stderr, ".");
            let _ = stderr.flush();
        }
        true
    };
    let caption = with_backend!(args.device, B, AD, dev => {
        let vlm = AnyVlm::<B>::load(&args.model, &dev)?;
        let generation = vlm.generation_config(args.max_new_tokens);
        vlm.caption(&args.image, &args.prompt, persona.as_ref(), &generation, &mut on_token).map_err(anyhow::Error::from)
    })?;
    if streaming {
        eprintln!();
    }
    if args.json {
        super::print_json(&caption)
    } else {
        println!("{}", caption.text);
        Ok(())
    }
}
