#!/usr/bin/env python3
"""The transformers side of backbone_bench.sh (not a test; not run in CI).

    python backbone_bench_torch.py make OUT_DIR
        writes OUT_DIR/vits16 (DINOv3ViTModel, the ViT-S/16 architecture of
        facebook/dinov3-vits16-pretrain-lvd1689m: hidden 384, 12 layers, 6 heads, MLP 1536, patch 16,
        4 registers) and OUT_DIR/convnext_tiny (DINOv3ConvNextModel, ConvNeXt-Tiny: depths [3, 3, 9, 3],
        hidden sizes [96, 192, 384, 768]) with random weights, via save_pretrained.
    python backbone_bench_torch.py time MODEL_DIR THREADS [IMAGES] [SIZE] [BATCHES]
        times MODEL_DIR's forward pass on the CPU (float32, eager attention, torch.inference_mode,
        torch.set_num_threads(THREADS)): IMAGES images (default 16) per batch size after one warm-up
        batch, SIZE x SIZE inputs (default 448), BATCHES a comma list (default 1,8). Prints RESULT lines
        and a PEAK line (VmHWM of this process, which includes `import torch`).
"""
import math
import os
import sys
import time

import torch


def peak_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def make(out):
    from transformers import DINOv3ConvNextConfig, DINOv3ConvNextModel, DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(0)
    vit = DINOv3ViTConfig(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
        patch_size=16,
        num_register_tokens=4,
        image_size=224,
        layerscale_value=1.0,
        key_bias=False,
        use_gated_mlp=False,
        hidden_act="gelu",
        rope_theta=100.0,
    )
    DINOv3ViTModel(vit).eval().save_pretrained(os.path.join(out, "vits16"))
    cnx = DINOv3ConvNextConfig(depths=[3, 3, 9, 3], hidden_sizes=[96, 192, 384, 768])
    DINOv3ConvNextModel(cnx).eval().save_pretrained(os.path.join(out, "convnext_tiny"))
    print("made", out)


def time_model(model_dir, threads, images=16, size=448, batches="1,8"):
    from transformers import AutoConfig, AutoModel

    torch.set_num_threads(threads)
    torch.manual_seed(7)
    config = AutoConfig.from_pretrained(model_dir)
    kwargs = {"attn_implementation": "eager"} if config.model_type == "dinov3_vit" else {}
    model = AutoModel.from_pretrained(model_dir, **kwargs).eval()
    family = config.model_type
    for batch in [int(b) for b in batches.split(",")]:
        x = torch.randn(batch, 3, size, size)
        with torch.inference_mode():
            model(pixel_values=x)  # warm-up
            calls = math.ceil(images / batch)
            t = time.perf_counter()
            for _ in range(calls):
                model(pixel_values=x).last_hidden_state
            secs = time.perf_counter() - t
        done = calls * batch
        print(
            f"RESULT impl=torch family={family} batch={batch} size={size} images={done} "
            f"seconds={secs:.3f} images_per_s={done / secs:.3f}"
        )
    print(f"PEAK impl=torch family={family} peak_mib={peak_mib():.0f}")


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "make":
        make(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "time":
        model_dir, threads, rest = sys.argv[2], int(sys.argv[3]), sys.argv[4:]
        images = int(rest[0]) if len(rest) > 0 else 16
        size = int(rest[1]) if len(rest) > 1 else 448
        batches = rest[2] if len(rest) > 2 else "1,8"
        time_model(model_dir, threads, images, size, batches)
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
