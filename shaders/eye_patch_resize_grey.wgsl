// Eye patches: crop each eye's box from the camera frame, convert to grey and resize to 10×6
// (bilinear, half-pixel centres, 11-bit integer weights). Integer arithmetic throughout, so the
// result equals the CPU reference bit for bit: crates/deper-gaze/src/patch.rs, steps 2 and 3 of
// its module docs (`resize_grey`, `sample_index`).
//
// Dispatch: 2 workgroups of 64 invocations (one invocation per output pixel, 120 used).
// Plain WGSL for WebGPU: no push constants, no f16, ≤ 256 invocations per workgroup.

struct Params {
    // Frame size in pixels.
    frame_width: u32,
    frame_height: u32,
    // 0: grey, one byte per pixel, four pixels per u32 (pixel i in bits 8·(i mod 4) of word i/4);
    // 1: RGBA, one pixel per u32 (R in the low byte, then G, B, A).
    format: u32,
    _pad: u32,
    // boxes[e] = (x, y, width, height) of eye e's box (0: left, 1: right), inside the frame,
    // width and height ≥ 1 (checked on the CPU before dispatch).
    boxes: array<vec4<u32>, 2>,
}

// binding 0 (uniform, 48 bytes): Params above.
@group(0) @binding(0) var<uniform> params: Params;
// binding 1 (storage, read): the frame's bytes, rows top to bottom without padding, packed
// little-endian into u32 words (the last word zero-padded).
@group(0) @binding(1) var<storage, read> frame: array<u32>;
// binding 2 (storage, read_write): 120 u32, the grey level (0..=255) of eye e, row oy, column ox
// at index e·60 + oy·10 + ox.
@group(0) @binding(2) var<storage, read_write> patches: array<u32>;

const PATCH_W: u32 = 10u;
const PATCH_H: u32 = 6u;
const WEIGHT_BITS: u32 = 11u;
const ONE: u32 = 2048u; // 1 << WEIGHT_BITS

// Grey level of frame pixel (x, y): BT.601 luma in OpenCV's 14-bit fixed point.
fn grey(x: u32, y: u32) -> u32 {
    let i = y * params.frame_width + x;
    if (params.format == 0u) {
        return (frame[i / 4u] >> (8u * (i % 4u))) & 0xffu;
    }
    let p = frame[i];
    let r = p & 0xffu;
    let g = (p >> 8u) & 0xffu;
    let b = (p >> 16u) & 0xffu;
    return (4899u * r + 9617u * g + 1868u * b + 8192u) >> 14u;
}

// (i0, i1, f) for output index d of n over len input pixels: the input position is
// s = ((2d+1)·len − n) / (2n), i0 = floor(s), i1 = min(i0 + 1, len − 1), f = round(frac(s)·2048).
fn sample_index(d: u32, n: u32, len: u32) -> vec3<u32> {
    let num = (2u * d + 1u) * len;
    if (num < n) {
        return vec3<u32>(0u, 0u, 0u);
    }
    let s = num - n;
    let den = 2u * n;
    let i0 = s / den;
    let f = (((s % den) << WEIGHT_BITS) + n) / den;
    return vec3<u32>(i0, min(i0 + 1u, len - 1u), f);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let k = gid.x;
    if (k >= 2u * PATCH_W * PATCH_H) {
        return;
    }
    let eye = k / (PATCH_W * PATCH_H);
    let j = k % (PATCH_W * PATCH_H);
    let b = params.boxes[eye];
    let sx = sample_index(j % PATCH_W, PATCH_W, b.z);
    let sy = sample_index(j / PATCH_W, PATCH_H, b.w);
    let y0 = b.y + sy.x;
    let y1 = b.y + sy.y;
    // Each sum ≤ 2048·255, the total ≤ 2048·2048·255 < 2^32.
    let top = (ONE - sx.z) * grey(b.x + sx.x, y0) + sx.z * grey(b.x + sx.y, y0);
    let bottom = (ONE - sx.z) * grey(b.x + sx.x, y1) + sx.z * grey(b.x + sx.y, y1);
    patches[k] = ((ONE - sy.z) * top + sy.z * bottom + (1u << (2u * WEIGHT_BITS - 1u))) >> (2u * WEIGHT_BITS);
}
