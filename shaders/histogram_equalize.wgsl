// Histogram equalisation of 10×6 eye patches, as OpenCV equalizeHist: each value v becomes
// floor((255·(cdf(v) − cdf(v_min)) + floor(d/2)) / d) with d = 60 − cdf(v_min); a constant patch
// keeps its value. Integer arithmetic, equal to the CPU reference bit for bit:
// crates/deper-gaze/src/patch.rs, step 4 of its module docs (`equalize_hist`).
//
// Dispatch: one workgroup of 64 invocations per patch (2 for a frame: left, right); invocation i
// < 60 owns pixel i of its patch. Plain WGSL for WebGPU: no push constants, no f16.

// binding 0 (storage, read): 60 u32 grey levels (0..=255) per patch, patch p at 60·p.
@group(0) @binding(0) var<storage, read> patches: array<u32>;
// binding 1 (storage, read_write): the equalised levels, same layout.
@group(0) @binding(1) var<storage, read_write> equalised: array<u32>;

const N: u32 = 60u;

var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> lut: array<u32, 256>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    for (var i = li; i < 256u; i += 64u) {
        atomicStore(&hist[i], 0u);
    }
    workgroupBarrier();
    let base = wg.x * N;
    var v = 0u;
    if (li < N) {
        v = min(patches[base + li], 255u);
        atomicAdd(&hist[v], 1u);
    }
    workgroupBarrier();
    // The 256-entry running sum is serial: 256 adds, nothing next to a dispatch.
    if (li == 0u) {
        var v_min = 0u;
        while (v_min < 255u && atomicLoad(&hist[v_min]) == 0u) {
            v_min += 1u;
        }
        let d = N - atomicLoad(&hist[v_min]);
        if (d == 0u) {
            lut[v_min] = v_min;
        } else {
            lut[v_min] = 0u;
            var above = 0u;
            for (var u = v_min + 1u; u < 256u; u += 1u) {
                above += atomicLoad(&hist[u]);
                lut[u] = (255u * above + d / 2u) / d;
            }
        }
    }
    workgroupBarrier();
    if (li < N) {
        equalised[base + li] = lut[v];
    }
}
