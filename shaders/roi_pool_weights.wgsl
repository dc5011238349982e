// RoI mean-pooling weights of trajectory boxes on an h×w patch grid, built on the device.
//
// Plain-tensor reference: `deper_model::traj_tokens::roi_pool_weights`; launched through burn's
// wgpu backend by crates/deper-model/src/roi_kernel.rs and compared with the reference by the
// `cpu_and_wgpu_roi` tests in crates/deper-model/src/tests.rs.
//
// One invocation per output weight. A row is one trajectory step (rows = batch·steps). For a
// valid step each of the n cells its box overlaps gets 1/n; a padded step gets zeros.
//
// Which cells a box overlaps is decided by `bounds`: per axis and per cell index k, the smallest
// f32 coordinate that reaches k. The host derives them from the reference rule itself (clamp to
// [0, 1], overlaps under 1e-5 of a cell ignored, computed in f64); the rule is monotone in each
// coordinate, so counting the bounds a coordinate reaches gives the reference's cell exactly.
// f32 arithmetic here could not: near the epsilon, x·n rounded to f32 picks the other cell.
// The sub-cell rule (a box smaller than a cell, even a point, takes its cell) is the `max` below.

// Every storage binding is read_write although the kernel writes `weights` only: cubecl places
// tensors in shared pool buffers, and wgpu forbids binding one buffer both read-only and
// read-write in a dispatch.

// boxes: [rows·4] f32, row-major `x1, y1, x2, y2` per step, normalised image coordinates.
@group(0) @binding(0) var<storage, read_write> boxes: array<f32>;

// valid: [rows] f32, non-zero for a valid step, 0.0 for a padded one.
@group(0) @binding(1) var<storage, read_write> valid: array<f32>;

// bounds: [2·w + 2·h] f32, four ascending tables of one entry per cell (entry 0 unused):
//   [0, w)            first column: smallest x1 whose first overlapped column is >= k
//   [w, 2·w)          last column:  smallest x2 whose last overlapped column is >= k
//   [2·w, 2·w + h)    first row, from y1
//   [2·w + h, 2·w+2h) last row, from y2
@group(0) @binding(2) var<storage, read_write> bounds: array<f32>;

// weights: [rows·h·w] f32 output, row-major: weight of cell (i, j) of row r at r·h·w + i·w + j.
@group(0) @binding(3) var<storage, read_write> weights: array<f32>;

// info: [3] u64 (cubecl's metadata words, little-endian, high halves zero): rows, h, w.
struct Info {
    rows: u32,
    rows_hi: u32,
    h: u32,
    h_hi: u32,
    w: u32,
    w_hi: u32,
}
@group(0) @binding(4) var<uniform> info: Info;

// The last cell index whose bound `v` reaches in the table of `n` cells at `start`.
fn reached(v: f32, start: u32, n: u32) -> u32 {
    var k = 1u;
    while k < n && v >= bounds[start + k] {
        k += 1u;
    }
    return k - 1u;
}

@compute @workgroup_size({{ workgroup_size }}, 1, 1)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let h = info.h;
    let w = info.w;
    let cells = h * w;
    // The dispatch is two-dimensional so that large batches stay under 65535 workgroups per axis.
    let index = gid.y * groups.x * {{ workgroup_size }}u + gid.x;
    if index >= info.rows * cells {
        return;
    }
    let row = index / cells;
    let i = (index % cells) / w;
    let j = index % w;

    var weight = 0.0;
    if valid[row] != 0.0 {
        let b = row * 4u;
        let j0 = reached(boxes[b], 0u, w);
        let j1 = max(j0, reached(boxes[b + 2u], w, w));
        let i0 = reached(boxes[b + 1u], 2u * w, h);
        let i1 = max(i0, reached(boxes[b + 3u], 2u * w + h, h));
        if j0 <= j && j <= j1 && i0 <= i && i <= i1 {
            weight = 1.0 / f32((j1 - j0 + 1u) * (i1 - i0 + 1u));
        }
    }
    weights[index] = weight;
}
