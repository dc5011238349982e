//! `deper caption` and `deper vlm forward`: the frozen VLM from a Hugging Face model folder.

use super::{print_json, print_text, DEVICE_HELP};
use clap::{Args, Subcommand};
use deper_pipeline::caption::{caption as run_caption, vlm_forward, CaptionRequest};
use deper_pipeline::DeviceKind;
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
        /// Hugging Face model folder.
        #[arg(long)]
        model: PathBuf,
        /// safetensors file with the inputs above.
        #[arg(long)]
        inputs: PathBuf,
        /// safetensors file to write the logits to.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "cpu", help = DEVICE_HELP)]
        device: DeviceKind,
    },
}

pub fn run(cmd: VlmCommand) -> anyhow::Result<()> {
    match cmd {
        VlmCommand::Forward { model, inputs, out, device } => {
            vlm_forward(&model, &inputs, &out, device)?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
    }
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  deper caption --model Qwen2-VL-2B-Instruct --image photo.jpg\n  deper caption --model deper-data/demo/captioner --image scene.png --prompt 'Describe the image in the style of <|persona|>.' --persona persona.safetensors"
)]
pub struct CaptionArgs {
    /// Hugging Face model folder (config.json, *.safetensors, tokenizer.json, chat template, preprocessor config);
    /// Qwen2-VL or Idefics3/SmolVLM, by its `model_type`.
    #[arg(long)]
    pub model: PathBuf,
    /// The image to caption (PNG or JPEG).
    #[arg(long)]
    pub image: PathBuf,
    /// The user turn's text; the image is placed before it, as the HF processor does.
    #[arg(long, default_value = "Describe the image.")]
    pub prompt: String,
    /// Persona vectors (safetensors with `persona_embeddings` [K, hidden], optional `persona_token_ids`);
    /// the prompt must then contain the persona token(s).
    #[arg(long)]
    pub persona: Option<PathBuf>,
    /// Most tokens to generate (decoding is greedy).
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Print {"text", "prompt_ids", "generated_ids"}.
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value = "cpu", help = DEVICE_HELP)]
    pub device: DeviceKind,
}

pub fn caption(args: CaptionArgs) -> anyhow::Result<()> {
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
    let request = CaptionRequest {
        model: args.model,
        image: args.image,
        prompt: args.prompt,
        persona: args.persona,
        max_new_tokens: args.max_new_tokens,
    };
    let caption = run_caption(&request, args.device, &mut on_token)?;
    if streaming {
        eprintln!();
    }
    if args.json {
        print_json(&caption)
    } else {
        print_text(&format!("{}\n", caption.text))
    }
}
