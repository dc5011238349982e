"""PyTorch counterpart of `examples/stage1_bench.rs`: DEPER stage-1 training samples/s on the CPU or a GPU.

    ../venv/bin/python crates/deper-train/examples/stage1_bench_torch.py [STEPS] [WARMUP] [BATCH] [PATCH_DIM] [THREADS] [DEVICE]

DEVICE is `cpu` (default) or `cuda`; on `cuda` the peak is torch's peak allocated GPU memory, not the RSS.

The same network as deper-model (read from its sources, module by module: `layers.rs`, `traj_tokens.rs`,
`encoder.rs` in its default interleaved form, `extractor.rs`, `decoder.rs`, `model.rs`), at the paper preset
(D = 384, 4 heads, 2 encoder layers, 4 decoder layers, FFN width D, dropout 0.1), the same losses (`loss.rs`:
cross-entropy, SupCon against a full 4096 memory bank at tau = 0.07, Smooth-L1 beta = 1/9 on boxes + BCE on
validity; total = traj + 1.0 cls + 0.1 con), AdamW (lr 5e-4, betas 0.9/0.999, eps 1e-5, weight decay 0.01)
with each parameter's gradient clipped to norm 1.0 as burn's `GradientClippingConfig::Norm`, and the same
synthetic batch shapes, lengths, boxes and labels. float32, training mode (dropout on).
Prints the `RESULT` line format of the Rust bench; compare at the same thread count (RAYON_NUM_THREADS there).

Needs torch only (`python3 -m venv V && V/bin/pip install torch`). Not run in CI.
"""
import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
warmup = int(sys.argv[2]) if len(sys.argv) > 2 else 2
batch = int(sys.argv[3]) if len(sys.argv) > 3 else 32
patch_dim = int(sys.argv[4]) if len(sys.argv) > 4 else 384
threads = int(sys.argv[5]) if len(sys.argv) > 5 else 1
device = sys.argv[6] if len(sys.argv) > 6 else "cpu"
torch.set_num_threads(threads)
# Every tensor and parameter below is made on this device (the batch, the bank, the model).
torch.set_default_device(device)
torch.manual_seed(0)

GRID, VOCAB, SUBJECTS, MAX_STEPS = 28, 1000, 9, 30
D, HEADS, ENC_LAYERS, DEC_LAYERS, DROPOUT = 384, 4, 2, 4, 0.1
LR, WEIGHT_DECAY, CLIP_NORM, EPS = 5e-4, 0.01, 1.0, 1e-5
W_TRAJ, W_CLS, W_CON, TAU, BETA, BANK = 1.0, 1.0, 0.1, 0.07, 1.0 / 9.0, 4096


class AttentionBlock(nn.Module):
    """x <- LN(x + Dropout(MHA(q = x, k = v = memory))), post-LN (layers.rs)."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(D, HEADS, dropout=DROPOUT, batch_first=True)
        self.norm = nn.LayerNorm(D)
        self.dropout = nn.Dropout(DROPOUT)

    def forward(self, x, memory, pad=None):
        # need_weights=False: burn returns the weights too, but torch's fused attention path is its fast one.
        attended = self.attn(x, memory, memory, key_padding_mask=pad, need_weights=False)[0]
        return self.norm(x + self.dropout(attended))


class FfnBlock(nn.Module):
    """x <- LN(x + Dropout(W2 Dropout(ReLU(W1 x))))."""

    def __init__(self):
        super().__init__()
        self.linear1, self.linear2 = nn.Linear(D, D), nn.Linear(D, D)
        self.norm = nn.LayerNorm(D)
        self.dropout = nn.Dropout(DROPOUT)

    def forward(self, x):
        h = self.linear2(self.dropout(F.relu(self.linear1(x))))
        return self.norm(x + self.dropout(h))


def zero_padded(x, pad):
    return x.masked_fill(pad.unsqueeze(-1), 0.0)


def sinusoidal(pos, dim):
    """Interleaved sin/cos: channel 2i = sin(p w_i), 2i+1 = cos(p w_i), w_i = 10000^(-2i/dim)."""
    i = torch.arange(dim // 2, dtype=torch.float64)
    freqs = torch.exp(-math.log(10000.0) * 2 * i / dim).to(torch.float32)
    angles = pos.unsqueeze(-1) * freqs  # [b, l, dim/2]
    return torch.stack([angles.sin(), angles.cos()], dim=3).reshape(*pos.shape, dim)


def cell_range(a, b, n):
    """First and last grid cell overlapping [a, b] with positive length (traj_tokens.rs `cell_range`)."""
    a, b = a.clamp(0, 1) * n, b.clamp(0, 1) * n
    lo = (a + 1e-5).floor().clamp(0, n - 1)
    hi = torch.maximum((b - 1e-5).ceil() - 1, lo).clamp(max=n - 1)
    return lo, hi


def roi_weights(boxes, mask, h, w):
    """RoI mean-pooling weights [b, s, h w]: 1/n on the n cells a valid step's box overlaps."""
    j0, j1 = cell_range(boxes[..., 0], boxes[..., 2], w)
    i0, i1 = cell_range(boxes[..., 1], boxes[..., 3], h)
    cols = torch.arange(w, dtype=boxes.dtype)
    rows = torch.arange(h, dtype=boxes.dtype)
    in_x = (cols >= j0.unsqueeze(-1)) & (cols <= j1.unsqueeze(-1))  # [b, s, w]
    in_y = (rows >= i0.unsqueeze(-1)) & (rows <= i1.unsqueeze(-1))  # [b, s, h]
    cells = (in_y.unsqueeze(-1) & in_x.unsqueeze(-2)).flatten(2).float() * mask.unsqueeze(-1)  # [b, s, h w]
    return cells / cells.sum(-1, keepdim=True).clamp(min=1.0)


class TrajTokens(nn.Module):
    """t_s = W RoIMean(V, box_s) + PE2(centre_s) + E_order[s] + PE1(100 duration_s)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(patch_dim, D)
        self.order = nn.Embedding(MAX_STEPS, D)

    def forward(self, patches, boxes, durations, mask):
        b, h, w, c = patches.shape
        s = boxes.shape[1]
        pooled = roi_weights(boxes, mask, h, w) @ patches.reshape(b, h * w, c)  # [b, s, c]
        cx = (boxes[..., 0] + boxes[..., 2]) * (0.5 * w)
        cy = (boxes[..., 1] + boxes[..., 3]) * (0.5 * h)
        spatial = torch.cat([sinusoidal(cx, D // 2), sinusoidal(cy, D // 2)], dim=2)
        return self.proj(pooled) + spatial + self.order.weight[:s].unsqueeze(0) + sinusoidal(durations * 100.0, D)


class StreamLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn, self.cross_attn, self.ffn = AttentionBlock(), AttentionBlock(), FfnBlock()

    def forward(self, x, pad, memory, memory_pad):
        x = self.self_attn(x, x, pad)
        x = zero_padded(self.cross_attn(x, memory, memory_pad), pad)
        return zero_padded(self.ffn(x), pad)


class DualEncoder(nn.Module):
    """The interleaved form: per layer T <- layer(T, [V; L]), then L <- layer(L, [V; T]) with the new T."""

    def __init__(self):
        super().__init__()
        self.traj_layers = nn.ModuleList([StreamLayer() for _ in range(ENC_LAYERS)])
        self.caption_layers = nn.ModuleList([StreamLayer() for _ in range(ENC_LAYERS)])

    def forward(self, image, t, traj_mask, l, caption_mask):
        image_pad = torch.zeros(image.shape[:2], dtype=torch.bool)
        traj_pad, caption_pad = ~traj_mask, ~caption_mask
        for tl, cl in zip(self.traj_layers, self.caption_layers):
            t = tl(t, traj_pad, torch.cat([image, l], 1), torch.cat([image_pad, caption_pad], 1))
            l = cl(l, caption_pad, torch.cat([image, t], 1), torch.cat([image_pad, traj_pad], 1))
        return torch.cat([t, l], 1), torch.cat([traj_mask, caption_mask], 1)


def projection_head():
    return nn.Sequential(nn.LayerNorm(D), nn.Linear(D, D), nn.GELU(), nn.Linear(D, D))


class SubjectExtractor(nn.Module):
    def __init__(self):
        super().__init__()
        self.subject_queries = nn.Parameter(torch.randn(1, D))
        self.scan_query = nn.Parameter(torch.randn(1, D))
        self.subject_attn, self.scan_attn = AttentionBlock(), AttentionBlock()
        self.subject_head, self.scan_head = projection_head(), projection_head()
        self.classifier = nn.Linear(D, SUBJECTS)

    def forward(self, z, mask):
        b = z.shape[0]
        pad = ~mask
        pooled = self.subject_attn(self.subject_queries.unsqueeze(0).expand(b, -1, -1), z, pad)  # [b, n_q, d]
        scores = torch.softmax(pooled.tanh().mean(2, keepdim=True), dim=1)  # [b, n_q, 1]
        z_s = self.subject_head((pooled * scores).sum(1))
        z_scan = self.scan_head(self.scan_attn(self.scan_query.unsqueeze(0).expand(b, -1, -1), z, pad).reshape(b, D))
        return z_s, z_scan, self.classifier(z_s)


class DecoderLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn, self.latent_attn, self.context_attn = AttentionBlock(), AttentionBlock(), AttentionBlock()
        self.ffn = FfnBlock()


class TrajectoryDecoder(nn.Module):
    """All 30 steps at once: self-attn, cross to z_scan, cross to [V; L], FiLM from z_s, FFN per layer."""

    def __init__(self):
        super().__init__()
        self.step_queries = nn.Embedding(MAX_STEPS, D)
        self.layers = nn.ModuleList([DecoderLayer() for _ in range(DEC_LAYERS)])
        self.film_norm = nn.LayerNorm(D)
        self.film = nn.Linear(D, 2 * DEC_LAYERS * D)
        self.head = nn.Linear(D, 5)

    def forward(self, z_s, z_scan, context, context_mask):
        b = z_s.shape[0]
        latent = z_scan.unsqueeze(1)  # [b, 1, d]
        latent_pad = torch.zeros(b, 1, dtype=torch.bool)
        context_pad = ~context_mask
        film = self.film(self.film_norm(z_s)).tanh().reshape(b, 2, DEC_LAYERS, D)
        x = self.step_queries.weight.unsqueeze(0) + latent  # [b, 30, d]
        for i, layer in enumerate(self.layers):
            x = layer.self_attn(x, x, None)
            x = layer.latent_attn(x, latent, latent_pad)
            x = layer.context_attn(x, context, context_pad)
            x = x * (1.0 + film[:, 0, i].unsqueeze(1)) + film[:, 1, i].unsqueeze(1)
            x = layer.ffn(x)
        out = self.head(x)  # [b, 30, 5]
        c = torch.sigmoid(out[..., :4])
        xa, ya, xb, yb = c[..., 0], c[..., 1], c[..., 2], c[..., 3]
        boxes = torch.stack([torch.minimum(xa, xb), torch.minimum(ya, yb), torch.maximum(xa, xb), torch.maximum(ya, yb)], 2)
        return boxes, out[..., 4]


class Deper(nn.Module):
    def __init__(self):
        super().__init__()
        self.image_proj = nn.Linear(patch_dim, D)
        self.table = nn.Embedding(VOCAB, D)
        self.table.weight.requires_grad_(False)  # frozen caption table; the projection trains
        self.token_proj = nn.Linear(D, D)
        self.traj_tokens = TrajTokens()
        self.encoder = DualEncoder()
        self.extractor = SubjectExtractor()
        self.decoder = TrajectoryDecoder()

    def forward(self, patches, ids, caption_mask, boxes, durations, traj_mask):
        b, h, w, c = patches.shape
        image = self.image_proj(patches.reshape(b, h * w, c))
        # Patch-centre positions in grid units, encoded as the trajectory tokens' box centres
        # (model.rs `patch_position_encoding`).
        k = torch.arange(h * w, dtype=torch.float32)
        cx, cy = (k % w + 0.5).unsqueeze(0), (torch.div(k, w, rounding_mode="floor") + 0.5).unsqueeze(0)
        image = image + torch.cat([sinusoidal(cx, D // 2), sinusoidal(cy, D // 2)], dim=2)
        caption = self.token_proj(self.table(ids))
        caption = caption + sinusoidal(torch.arange(ids.shape[1], dtype=torch.float32).unsqueeze(0), D)
        t = self.traj_tokens(patches, boxes, durations, traj_mask)
        z, z_mask = self.encoder(image, t, traj_mask, caption, caption_mask)
        z_s, z_scan, logits = self.extractor(z, z_mask)
        context = torch.cat([image, caption], 1)
        context_mask = torch.cat([torch.ones(b, h * w, dtype=torch.bool), caption_mask], 1)
        pred_boxes, valid_logits = self.decoder(z_s, z_scan, context, context_mask)
        return z_s, logits, pred_boxes, valid_logits


class MemoryBank:
    """Latest normalised z_s per subject plus a FIFO of the last BANK ones (loss.rs `SubjectMemoryBank`)."""

    def __init__(self):
        self.latest = torch.zeros(SUBJECTS, D)
        self.has_latest = torch.zeros(SUBJECTS, dtype=torch.bool)
        self.fifo = torch.zeros(BANK, D)
        self.fifo_labels = torch.zeros(BANK, dtype=torch.long)
        self.count, self.head = 0, 0

    def update(self, z, labels):
        z = F.normalize(z.detach(), dim=1, eps=1e-12)
        for row, label in zip(z, labels.tolist()):
            self.latest[label], self.has_latest[label] = row, True
            self.fifo[self.head], self.fifo_labels[self.head] = row, label
            self.head, self.count = (self.head + 1) % BANK, min(self.count + 1, BANK)

    def entries(self):
        subjects = self.has_latest.nonzero().squeeze(1)
        return (torch.cat([self.latest[subjects], self.fifo[: self.count]]),
                torch.cat([subjects, self.fifo_labels[: self.count]]))


def supcon(z, labels, bank):
    """SupCon of the batch against batch + bank, the anchor itself excluded (loss.rs `supcon_loss`)."""
    n = z.shape[0]
    z = z / z.pow(2).sum(1, keepdim=True).sqrt().clamp(min=1e-12)
    bank_z, bank_labels = bank.entries()
    keys, key_labels = torch.cat([z, bank_z]), torch.cat([labels, bank_labels])
    self_mask = torch.zeros(n, keys.shape[0], dtype=torch.bool)
    self_mask[torch.arange(n), torch.arange(n)] = True
    positive = (labels.unsqueeze(1) == key_labels.unsqueeze(0)) & ~self_mask
    counts = positive.sum(1)
    n_valid = (counts > 0).sum()
    if n_valid == 0:
        return z.new_zeros(())
    weights = positive.float() / (counts.clamp(min=1) * n_valid).unsqueeze(1).float()
    logits = (z @ keys.T / TAU).masked_fill(self_mask, -1e9)
    top = logits.max(1, keepdim=True).values.detach()
    log_prob = logits - ((logits - top).exp().sum(1, keepdim=True).log() + top)
    return -(log_prob * weights).sum()


def losses(out, boxes, traj_mask, labels, bank):
    z_s, logits, pred_boxes, valid_logits = out
    b, n_steps = valid_logits.shape
    extra = n_steps - boxes.shape[1]  # targets padded to the decoded length as invalid steps
    target = F.pad(boxes, (0, 0, 0, extra))
    valid = F.pad(traj_mask.float(), (0, extra))
    weight = valid.unsqueeze(-1).expand(-1, -1, 4)
    box = (F.smooth_l1_loss(pred_boxes, target, beta=BETA, reduction="none") * weight).sum() / weight.sum().clamp(min=1.0)
    validity = F.binary_cross_entropy_with_logits(valid_logits, valid)
    traj, cls, con = box + validity, F.cross_entropy(logits, labels), supcon(z_s, labels, bank)
    return W_TRAJ * traj + W_CLS * cls + W_CON * con, traj, cls, con


def synthetic_batch(n):
    """The Rust bench's batch: caption b has 40 - (7b mod 9) tokens, trajectory b 30 - (11b mod 21) steps."""
    patches = torch.rand(n, GRID, GRID, patch_dim) * 2 - 1
    cap_lens = [40 - (7 * b) % 9 for b in range(n)]
    length = max(cap_lens)
    ids = torch.zeros(n, length, dtype=torch.long)
    caption_mask = torch.zeros(n, length, dtype=torch.bool)
    for b, cl in enumerate(cap_lens):
        ids[b, :cl] = torch.tensor([2 + (b * 31 + i * 17) % (VOCAB - 2) for i in range(cl)])
        caption_mask[b, :cl] = True
    traj_lens = [min(30 - (11 * b) % 21, MAX_STEPS) for b in range(n)]
    s = max(traj_lens)
    boxes, durations = torch.zeros(n, s, 4), torch.zeros(n, s)
    traj_mask = torch.zeros(n, s, dtype=torch.bool)
    for b, tl in enumerate(traj_lens):
        for j in range(tl):
            x, y = ((b * 13 + j * 7) % 20) / 27.0, ((b * 5 + j * 11) % 20) / 27.0
            side = 0.05 + ((b + j) % 5) * 0.05
            boxes[b, j] = torch.tensor([x, y, x + side, y + side])
            durations[b, j] = 0.1 + ((b + 3 * j) % 8) * 0.1
            traj_mask[b, j] = True
    labels = torch.tensor([b % SUBJECTS for b in range(n)])
    return patches, ids, caption_mask, boxes, durations, traj_mask, labels


def peak_mib():
    if device != "cpu":
        return torch.cuda.max_memory_allocated() / 2**20
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024.0


model = Deper().train()
params = sum(p.numel() for p in model.parameters())
trainable = [p for p in model.parameters() if p.requires_grad]
optim = torch.optim.AdamW(trainable, lr=LR, betas=(0.9, 0.999), eps=EPS, weight_decay=WEIGHT_DECAY)
patches, ids, caption_mask, boxes, durations, traj_mask, labels = synthetic_batch(batch)
bank = MemoryBank()
bank.update(torch.rand(BANK, D) * 2 - 1, torch.arange(BANK) % SUBJECTS)  # full, as in the Rust bench


def step():
    out = model(patches, ids, caption_mask, boxes, durations, traj_mask)
    total, traj, cls, con = losses(out, boxes, traj_mask, labels, bank)
    values = [v.item() for v in (total, traj, cls, con)]  # the trainer reads all four back
    optim.zero_grad(set_to_none=True)
    total.backward()
    # burn's GradientClippingConfig::Norm clips each parameter's gradient on its own.
    grads = [p.grad for p in trainable]
    norms = torch._foreach_norm(grads)
    torch._foreach_mul_(grads, [(CLIP_NORM / (n + 1.1754944e-38)).clamp(max=1.0) for n in norms])
    optim.step()
    bank.update(out[0], labels)
    return values[0]


for _ in range(warmup):
    step()
started = time.perf_counter()
loss = float("nan")
for _ in range(steps):
    loss = step()
seconds = time.perf_counter() - started
print(
    f"RESULT impl=torch device={device} threads={threads} batch={batch} steps={steps} params={params} "
    f"trainable={sum(p.numel() for p in trainable)} samples_per_s={batch * steps / seconds:.2f} "
    f"step_ms={1000 * seconds / max(steps, 1):.1f} peak_mib={peak_mib():.1f} loss={loss:.4f}"
)
