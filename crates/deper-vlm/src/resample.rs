//! The separable fixed-point resampling pass both image processors use: torchvision's uint8 antialias
//! kernel (Qwen2-VL) and Pillow's `ImagingResample` (Idefics3) differ in their weights, not in how they
//! apply them. Each output pixel is the rounded, clamped sum of a run of input pixels times integer
//! weights with `precision` fractional bits; the other axis is untouched.
//!
//! Reference: Pillow `src/libImaging/Resample.c` (`ImagingResampleHorizontal_8bpc`); PyTorch
//! `aten/src/ATen/native/cpu/UpSampleKernel.cpp` (uint8 antialias).

/// One pass over interleaved RGB `[h, w, 3]` with `weights[i] = (first input index, integer weights)`
/// for output index `i`: `along_x` resizes rows to `weights.len()`, else columns.
pub(crate) fn resample_pass(
    src: &[u8],
    h: usize,
    w: usize,
    weights: &[(usize, Vec<i64>)],
    precision: u32,
    along_x: bool,
) -> Vec<u8> {
    let out_len = weights.len();
    let (oh, ow) = if along_x { (h, out_len) } else { (out_len, w) };
    let mut out = vec![0u8; oh * ow * 3];
    let round = 1i64 << precision.saturating_sub(1);
    for y in 0..oh {
        for x in 0..ow {
            let (i, fixed) = if along_x { (x, y) } else { (y, x) };
            let (start, ws) = &weights[i];
            for c in 0..3 {
                let mut acc = round;
                for (k, wt) in ws.iter().enumerate() {
                    let (sy, sx) = if along_x { (fixed, start + k) } else { (start + k, fixed) };
                    acc += wt * i64::from(src[(sy * w + sx) * 3 + c]);
                }
                out[(y * ow + x) * 3 + c] = (acc >> precision).clamp(0, 255) as u8;
            }
        }
    }
    out
}
