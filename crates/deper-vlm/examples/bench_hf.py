"""HF transformers counterpart of `examples/bench.rs`: prefill and greedy decode tokens/s on the CPU or a GPU.

    ../venv/bin/python crates/deper-vlm/examples/bench_hf.py MODEL_DIR IMAGE [NEW_TOKENS] [REPEATS] [THREADS] [DEVICE]

DEVICE is `cpu` (default) or `cuda`; on `cuda` each timing waits for the device and the peak is torch's
peak allocated GPU memory.

Same prompt ("Describe the image.", image before text, generation prompt), greedy `generate` with the KV cache
(prefill = a 1-token generation, decode = the remaining steps of a longer one), float32, eager attention. Compare with the Rust bench run with
RAYON_NUM_THREADS=THREADS on the same machine.
"""
import resource
import sys
import time

import torch
from PIL import Image
from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

model_dir, image_path = sys.argv[1], sys.argv[2]
new_tokens = int(sys.argv[3]) if len(sys.argv) > 3 else 32
repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 3
threads = int(sys.argv[5]) if len(sys.argv) > 5 else 1
device = sys.argv[6] if len(sys.argv) > 6 else "cpu"
torch.set_num_threads(threads)


def sync():
    if device != "cpu":
        torch.cuda.synchronize()


model = Qwen2VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
model = model.to(device).eval()
processor = AutoProcessor.from_pretrained(model_dir)
messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
text = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(text=[text], images=[Image.open(image_path).convert("RGB")], return_tensors="pt").to(device)
L = inputs["input_ids"].shape[1]

kw = dict(do_sample=False, eos_token_id=None, min_new_tokens=0, use_cache=True)
best_prefill = best_total = float("inf")
with torch.inference_mode():
    for _ in range(repeats):
        # Prefill = generate one token; decode = the rest of a (1 + new_tokens)-token generation.
        sync()
        t = time.perf_counter()
        model.generate(**inputs, max_new_tokens=1, **kw)
        sync()
        best_prefill = min(best_prefill, time.perf_counter() - t)
        t = time.perf_counter()
        model.generate(**inputs, max_new_tokens=1 + new_tokens, **kw)
        sync()
        best_total = min(best_total, time.perf_counter() - t)
best_decode = best_total - best_prefill

print(f"prompt tokens: {L}, threads: {threads}")
print(f"prefill: {L / best_prefill:.1f} tokens/s ({best_prefill * 1e3:.1f} ms, best of {repeats})")
print(f"decode: {new_tokens / best_decode:.1f} tokens/s ({new_tokens} tokens, {best_decode * 1e3:.1f} ms)")
if device == "cpu":
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB")
else:
    print(f"peak GPU memory (torch allocated): {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB")
