"""A random Qwen2-VL of benchmark size (not a fixture: nothing here is committed but this script).

    ../venv/bin/python crates/deper-vlm/examples/make_bench_model.py OUT_DIR [--hidden 1024] [--layers 8]

The tiny test fixture (tests/fixtures/qwen2_vl_tiny) is too small to time anything but overheads. This
writes the same architecture at a size where the matrix products dominate: text hidden 1024, 8 layers,
16 query / 4 KV heads (head_dim 64), SwiGLU 2816, vocabulary 32000 (the fixture's 400-token BPE
tokenizer is reused, so only its ids occur in prompts; the LM head still multiplies the full table),
vision tower 256 wide × 4 blocks. Weights are random (seeded), float32, saved with `save_pretrained`
with the fixture's tokenizer, chat template and processor, so `examples/bench.rs` and
`examples/bench_hf.py` load the same folder.
"""
import argparse
import os
import shutil

import torch
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

here = os.path.dirname(os.path.abspath(__file__))
fixture = os.path.join(here, "..", "..", "..", "tests", "fixtures", "qwen2_vl_tiny", "model")

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("--hidden", type=int, default=1024)
parser.add_argument("--layers", type=int, default=8)
parser.add_argument("--vocab", type=int, default=32000)
args = parser.parse_args()

torch.manual_seed(0)
tiny = Qwen2VLConfig.from_pretrained(fixture)
text = tiny.text_config.to_dict()
head_dim = 64
text.update(
    hidden_size=args.hidden,
    num_hidden_layers=args.layers,
    num_attention_heads=args.hidden // head_dim,
    num_key_value_heads=max(1, args.hidden // head_dim // 4),
    intermediate_size=int(args.hidden * 2.75),
    vocab_size=args.vocab,
    layer_types=["full_attention"] * args.layers,
)
# M-RoPE sections cover head_dim / 2 frequencies in Qwen2-VL's 1 : 1.5 : 1.5 split.
text["rope_parameters"] = dict(text["rope_parameters"], mrope_section=[8, 12, 12])
vision = tiny.vision_config.to_dict()
vision.update(embed_dim=256, depth=4, num_heads=4, hidden_size=args.hidden)
config = Qwen2VLConfig(
    text_config=text,
    vision_config=vision,
    image_token_id=tiny.image_token_id,
    video_token_id=tiny.video_token_id,
    vision_start_token_id=getattr(tiny, "vision_start_token_id", None),
    vision_end_token_id=getattr(tiny, "vision_end_token_id", None),
    tie_word_embeddings=True,
)
model = Qwen2VLForConditionalGeneration(config).eval()
os.makedirs(args.out, exist_ok=True)
model.save_pretrained(args.out)
for name in os.listdir(fixture):
    if name not in ("config.json", "model.safetensors") and not name.startswith("model-"):
        shutil.copy(os.path.join(fixture, name), os.path.join(args.out, name))
params = sum(p.numel() for p in model.parameters())
print(f"{args.out}: {params / 1e6:.1f} M parameters")
