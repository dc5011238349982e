//! Eye patches → the 120 gaze features (CPU reference; `shaders/eye_patch_resize_grey.wgsl` and
//! `shaders/histogram_equalize.wgsl` compute the same numbers on the GPU, bit for bit).
//!
//! The features follow WebGazer (Papoutsaki et al., IJCAI 2016): each eye's patch, resized to
//! 10×6 grey and histogram-equalised, left eye then right eye → 2 × 60 = 120 values in 0..=255.
//!
//! # Steps
//!
//! 1. **Eye box** ([`eye_boxes`]). The eye's contour landmarks of MediaPipe's 468-point face mesh
//!    ([`LEFT_EYE_CONTOUR`], [`RIGHT_EYE_CONTOUR`]; the 16 points of `FACEMESH_LEFT_EYE` /
//!    `FACEMESH_RIGHT_EYE` in MediaPipe's `face_mesh_connections.py`, both lids from corner to
//!    corner) give the tight box `[min x, max x] × [min y, max y]` in pixels. It is grown on every
//!    side by `m = margin × (max x − min x)`: the margin follows the eye's *width* so that a blink,
//!    which flattens the lids, still leaves a patch of useful height. The pixel box is
//!    `x0 = floor(min x − m)`, `x1 = ceil(max x + m)` (exclusive), the same for y, then clamped to
//!    the frame. A box that is empty after clamping is [`GazeError::EyeOutsideFrame`].
//!    "Left" is MediaPipe's `LEFT_EYE` set, the subject's left eye in MediaPipe's naming. The
//!    order only has to stay the same between calibration and prediction (the regression learns
//!    which feature is which), and the landmarks must come from the same (mirrored or not) frame.
//! 2. **Grey** (per source pixel). RGBA → `(4899 R + 9617 G + 1868 B + 8192) >> 14`: ITU-R
//!    BT.601 luma (0.299, 0.587, 0.114) in OpenCV's 14-bit fixed point (`cvtColor` RGB→GRAY);
//!    alpha is ignored. Grey frames are used as they are.
//! 3. **Resize to 10×6, bilinear** ([`resize_grey`]). Half-pixel centres (OpenCV `INTER_LINEAR`,
//!    PyTorch `align_corners=False`): output index `d` of `n` samples the input at
//!    `s = (d + ½)·len/n − ½`, computed exactly as the integer fraction
//!    `((2d+1)·len − n) / (2n)`; `s < 0` reads pixel 0; the neighbour past the last pixel is the
//!    last pixel. The fractional part becomes an 11-bit weight `f = round(frac·2048)` (half up),
//!    and the output is `(Σ w_y w_x p + 2²¹) >> 22` with weights `2048 − f` and `f`: all-integer
//!    arithmetic, so the WGSL kernel gives identical bytes. (OpenCV also uses 11-bit weights but
//!    rounds its intermediate sums differently, so the two can differ by one grey level.)
//!    There is no anti-aliasing prefilter: each output reads only its 2×2 neighbours, so sharp
//!    detail between them is skipped (camera blur makes that harmless; see `tests/pipeline.rs`).
//! 4. **Histogram equalisation** ([`equalize_hist`]), as OpenCV `equalizeHist`: with `hist` the
//!    256-bin histogram of the 60 values, `cdf(v) = Σ_{u ≤ v} hist[u]`, `v_min` the smallest value
//!    present and `d = N − cdf(v_min)`, each value `v` becomes
//!    `floor((255·(cdf(v) − cdf(v_min)) + ⌊d/2⌋) / d)`, i.e. `255·(cdf(v) − cdf(v_min))/d`
//!    rounded half up, in integers. OpenCV rounds its float product half to even, so on an exact
//!    tie (possible only for even `d`, e.g. 255·1/6 = 42.5: 43 here, 42 in OpenCV) the two differ
//!    by one level; elsewhere they agree.
//!    A constant patch (`d = 0`) keeps its value, as OpenCV does.

use crate::error::{GazeError, Result};
use serde::{Deserialize, Serialize};

/// Landmarks of MediaPipe's face mesh (478 with iris refinement; the first 468 are the mesh).
pub const FACE_MESH_LANDMARKS: usize = 468;
/// The subject's left eye contour (`FACEMESH_LEFT_EYE`): lower lid 263 → 362, upper lid 263 → 362.
pub const LEFT_EYE_CONTOUR: [usize; 16] =
    [263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398];
/// The subject's right eye contour (`FACEMESH_RIGHT_EYE`): lower lid 33 → 133, upper lid 33 → 133.
pub const RIGHT_EYE_CONTOUR: [usize; 16] =
    [33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173];
/// Patch width in pixels.
pub const PATCH_WIDTH: u32 = 10;
/// Patch height in pixels.
pub const PATCH_HEIGHT: u32 = 6;
/// Values per eye patch.
pub const PATCH_LEN: usize = (PATCH_WIDTH * PATCH_HEIGHT) as usize;
/// Features per frame: left patch then right patch.
pub const FEATURE_LEN: usize = 2 * PATCH_LEN;
/// Bits of the bilinear weights (OpenCV's `INTER_RESIZE_COEF_BITS`).
pub const WEIGHT_BITS: u32 = 11;
const ONE: u32 = 1 << WEIGHT_BITS;

/// How a frame stores its pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PixelFormat {
    /// One byte per pixel.
    Grey,
    /// Four bytes per pixel, R G B A (what a canvas `ImageData` holds).
    Rgba,
}

impl PixelFormat {
    /// Bytes per pixel.
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Grey => 1,
            PixelFormat::Rgba => 4,
        }
    }

    fn name(self) -> &'static str {
        match self {
            PixelFormat::Grey => "grey",
            PixelFormat::Rgba => "RGBA",
        }
    }
}

/// A camera frame, rows top to bottom, no padding between rows.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    width: u32,
    height: u32,
    format: PixelFormat,
    data: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Checks that `data` holds exactly `width × height` pixels of `format`.
    pub fn new(width: u32, height: u32, format: PixelFormat, data: &'a [u8]) -> Result<Self> {
        let expected =
            (width as usize).checked_mul(height as usize).and_then(|n| n.checked_mul(format.bytes_per_pixel()));
        if expected != Some(data.len()) {
            return Err(GazeError::FrameSize {
                width,
                height,
                format: format.name(),
                expected: expected.unwrap_or(usize::MAX),
                got: data.len(),
            });
        }
        Ok(Self { width, height, format, data })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn format(&self) -> PixelFormat {
        self.format
    }

    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Grey level of pixel (x, y), which must be inside the frame (step 2 of the module docs).
    fn grey(&self, x: u32, y: u32) -> u32 {
        let i = y as usize * self.width as usize + x as usize;
        match self.format {
            PixelFormat::Grey => u32::from(self.data[i]),
            PixelFormat::Rgba => {
                let p = &self.data[4 * i..4 * i + 3];
                (4899 * u32::from(p[0]) + 9617 * u32::from(p[1]) + 1868 * u32::from(p[2]) + 8192) >> 14
            }
        }
    }
}

/// A pixel box: columns `x .. x + width`, rows `y .. y + height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchBox {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl PatchBox {
    /// Whether the box is non-empty and inside a `width × height` frame.
    pub fn fits(&self, width: u32, height: u32) -> bool {
        self.width > 0
            && self.height > 0
            && u64::from(self.x) + u64::from(self.width) <= u64::from(width)
            && u64::from(self.y) + u64::from(self.height) <= u64::from(height)
    }
}

/// Parameters of the eye box (step 1 of the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PatchParams {
    /// Margin added on every side, as a fraction of the eye's width (corner to corner). Default
    /// 0.1: the lid landmarks sit on the lid edge, and a little skin around it keeps the whole
    /// iris in the patch when the eye looks up or down.
    pub margin: f64,
}

impl Default for PatchParams {
    fn default() -> Self {
        Self { margin: 0.1 }
    }
}

/// Pixel boxes of the left and right eye (step 1 of the module docs).
///
/// `landmarks` are the face mesh's points in frame pixels; at least 468 (iris points past 468 are
/// ignored).
pub fn eye_boxes(landmarks: &[[f32; 2]], width: u32, height: u32, params: &PatchParams) -> Result<[PatchBox; 2]> {
    if landmarks.len() < FACE_MESH_LANDMARKS {
        return Err(GazeError::TooFewLandmarks { got: landmarks.len(), need: FACE_MESH_LANDMARKS });
    }
    if !(params.margin.is_finite() && params.margin >= 0.0) {
        return Err(GazeError::InvalidParam {
            field: "margin",
            message: format!("must be a finite number ≥ 0, got {}", params.margin),
        });
    }
    Ok([
        eye_box("left", landmarks, &LEFT_EYE_CONTOUR, width, height, params.margin)?,
        eye_box("right", landmarks, &RIGHT_EYE_CONTOUR, width, height, params.margin)?,
    ])
}

fn eye_box(
    eye: &'static str,
    landmarks: &[[f32; 2]],
    contour: &[usize],
    width: u32,
    height: u32,
    margin: f64,
) -> Result<PatchBox> {
    let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &i in contour {
        let [x, y] = landmarks[i];
        for (axis, v) in [("x", x), ("y", y)] {
            if !v.is_finite() {
                return Err(GazeError::NonFiniteLandmark { index: i, axis, value: v });
            }
        }
        let (x, y) = (f64::from(x), f64::from(y));
        (x_lo, x_hi, y_lo, y_hi) = (x_lo.min(x), x_hi.max(x), y_lo.min(y), y_hi.max(y));
    }
    let m = margin * (x_hi - x_lo);
    // Clamping in f64 first keeps the casts in range whatever the landmark values.
    let clamp = |v: f64, hi: u32| v.clamp(0.0, f64::from(hi)) as u32;
    let (x0, x1) = (clamp((x_lo - m).floor(), width), clamp((x_hi + m).ceil(), width));
    let (y0, y1) = (clamp((y_lo - m).floor(), height), clamp((y_hi + m).ceil(), height));
    let bbox = PatchBox { x: x0, y: y0, width: x1 - x0, height: y1 - y0 };
    if bbox.width == 0 || bbox.height == 0 {
        return Err(GazeError::EyeOutsideFrame { eye, bbox, width, height });
    }
    Ok(bbox)
}

/// Source index pair and 11-bit weight of output index `d` of `n` over an input of `len` pixels
/// (step 3 of the module docs): output = `(ONE − f)·p[i0] + f·p[i1]`.
pub fn sample_index(d: u32, n: u32, len: u32) -> (u32, u32, u32) {
    // s = ((2d+1)·len − n) / (2n), in u64 so that no frame size overflows.
    let num = (2 * u64::from(d) + 1) * u64::from(len);
    let den = 2 * u64::from(n);
    if num < u64::from(n) {
        return (0, 0, 0);
    }
    let s = num - u64::from(n);
    let i0 = (s / den) as u32;
    let f = (((s % den) << WEIGHT_BITS) + u64::from(n)) / den;
    let i1 = (i0 + 1).min(len - 1);
    (i0, i1, f as u32)
}

/// The box of `frame` resized to 10×6 grey, row-major (steps 2 and 3 of the module docs).
pub fn resize_grey(frame: &Frame<'_>, bbox: PatchBox, eye: &'static str) -> Result<[u8; PATCH_LEN]> {
    if !bbox.fits(frame.width, frame.height) {
        return Err(GazeError::BadBox { eye, bbox, width: frame.width, height: frame.height });
    }
    let mut out = [0u8; PATCH_LEN];
    for oy in 0..PATCH_HEIGHT {
        let (y0, y1, fy) = sample_index(oy, PATCH_HEIGHT, bbox.height);
        for ox in 0..PATCH_WIDTH {
            let (x0, x1, fx) = sample_index(ox, PATCH_WIDTH, bbox.width);
            let p = |x: u32, y: u32| frame.grey(bbox.x + x, bbox.y + y);
            // ≤ 2048·2048·255 < 2³²: fits the u32 the shader uses too.
            let top = (ONE - fx) * p(x0, y0) + fx * p(x1, y0);
            let bottom = (ONE - fx) * p(x0, y1) + fx * p(x1, y1);
            let v = ((ONE - fy) * top + fy * bottom + (1 << (2 * WEIGHT_BITS - 1))) >> (2 * WEIGHT_BITS);
            out[(oy * PATCH_WIDTH + ox) as usize] = v as u8;
        }
    }
    Ok(out)
}

/// Histogram equalisation of one patch, in place (step 4 of the module docs).
pub fn equalize_hist(values: &mut [u8]) {
    let mut hist = [0u32; 256];
    for &v in values.iter() {
        hist[usize::from(v)] += 1;
    }
    let n = values.len() as u32;
    let Some(v_min) = hist.iter().position(|&h| h > 0) else { return };
    let d = n - hist[v_min];
    if d == 0 {
        return;
    }
    let mut lut = [0u8; 256];
    let mut above = 0u32; // cdf(v) − cdf(v_min)
    for v in v_min + 1..256 {
        above += hist[v];
        lut[v] = ((255 * above + d / 2) / d) as u8;
    }
    for v in values.iter_mut() {
        *v = lut[usize::from(*v)];
    }
}

/// The 120 features of a frame: left patch then right patch, each resized and equalised.
pub fn features_from_boxes(frame: &Frame<'_>, boxes: &[PatchBox; 2]) -> Result<[u8; FEATURE_LEN]> {
    let mut out = [0u8; FEATURE_LEN];
    for (k, (eye, bbox)) in ["left", "right"].into_iter().zip(boxes).enumerate() {
        let mut patch = resize_grey(frame, *bbox, eye)?;
        equalize_hist(&mut patch);
        out[k * PATCH_LEN..(k + 1) * PATCH_LEN].copy_from_slice(&patch);
    }
    Ok(out)
}

/// Eye boxes from the landmarks, then [`features_from_boxes`].
pub fn eye_features(frame: &Frame<'_>, landmarks: &[[f32; 2]], params: &PatchParams) -> Result<[u8; FEATURE_LEN]> {
    let boxes = eye_boxes(landmarks, frame.width, frame.height, params)?;
    features_from_boxes(frame, &boxes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(values: &[(u8, usize)]) -> Vec<u8> {
        values.iter().flat_map(|&(v, n)| std::iter::repeat_n(v, n)).collect()
    }

    #[test]
    fn equalize_two_levels_spreads_to_full_range() {
        let mut p = patch(&[(10, 30), (200, 30)]);
        equalize_hist(&mut p);
        assert_eq!(p, patch(&[(0, 30), (255, 30)]));
    }

    #[test]
    fn equalize_three_levels_rounds_half_up() {
        // d = 40: the middle level maps to 255·20/40 = 127.5 → 128.
        let mut p = patch(&[(150, 20), (50, 20), (100, 20)]);
        equalize_hist(&mut p);
        assert_eq!(p, patch(&[(255, 20), (0, 20), (128, 20)]));
        // d = 6: 255·1/6 = 42.5 → 43 (OpenCV's half-to-even would give 42; see the module docs).
        let mut p = patch(&[(0, 54), (1, 1), (2, 5)]);
        equalize_hist(&mut p);
        assert_eq!(p, patch(&[(0, 54), (43, 1), (255, 5)]));
        // d = 50: 255·20/50 = 102 exactly.
        let mut p = patch(&[(9, 30), (0, 10), (5, 20)]);
        equalize_hist(&mut p);
        assert_eq!(p, patch(&[(255, 30), (0, 10), (102, 20)]));
    }

    #[test]
    fn equalize_constant_patch_keeps_its_value() {
        let mut p = vec![77u8; PATCH_LEN];
        equalize_hist(&mut p);
        assert_eq!(p, vec![77u8; PATCH_LEN]);
        let mut empty: Vec<u8> = Vec::new();
        equalize_hist(&mut empty);
        assert!(empty.is_empty());
    }

    fn grey_frame(width: u32, height: u32, f: impl Fn(u32, u32) -> u8) -> Vec<u8> {
        (0..height).flat_map(|y| (0..width).map(move |x| (x, y))).map(|(x, y)| f(x, y)).collect()
    }

    #[test]
    fn resize_same_size_is_a_copy() {
        let data = grey_frame(14, 9, |x, y| (x * 17 + y * 3) as u8);
        let frame = Frame::new(14, 9, PixelFormat::Grey, &data).unwrap();
        let out = resize_grey(&frame, PatchBox { x: 3, y: 2, width: 10, height: 6 }, "left").unwrap();
        for oy in 0..6 {
            for ox in 0..10 {
                assert_eq!(u32::from(out[(oy * 10 + ox) as usize]), (ox + 3) * 17 + (oy + 2) * 3);
            }
        }
    }

    #[test]
    fn resize_halving_averages_two_by_two_blocks() {
        // Box 20×12 at (5, 1): output (ox, oy) samples the centre of input block (2ox..2ox+1, 2oy..2oy+1),
        // weights ½·½; p = 10·x' + y' (box coordinates) averages to 20ox + 2oy + 5.5 → 6 after half-up.
        let data = grey_frame(30, 14, |x, y| {
            if (5..25).contains(&x) && (1..13).contains(&y) {
                (10 * (x - 5) + (y - 1)) as u8
            } else {
                255
            }
        });
        let frame = Frame::new(30, 14, PixelFormat::Grey, &data).unwrap();
        let out = resize_grey(&frame, PatchBox { x: 5, y: 1, width: 20, height: 12 }, "left").unwrap();
        for oy in 0..6u32 {
            for ox in 0..10u32 {
                assert_eq!(u32::from(out[(oy * 10 + ox) as usize]), 20 * ox + 2 * oy + 6, "({ox}, {oy})");
            }
        }
    }

    #[test]
    fn resize_upsampling_clamps_at_both_edges() {
        // 5 → 10: positions (2d+1)/4 − ½ = −0.25, 0.25, 0.75, …, 4.25.
        assert_eq!(sample_index(0, 10, 5), (0, 0, 0));
        assert_eq!(sample_index(1, 10, 5), (0, 1, 512));
        assert_eq!(sample_index(2, 10, 5), (0, 1, 1536));
        assert_eq!(sample_index(9, 10, 5), (4, 4, 512));
        // 3 → 6 rows (same fractions) with rows 0, 40, 80; 5 columns 0, 40, …, 160.
        let data = grey_frame(5, 3, |x, y| (40 * x + 40 * y) as u8);
        let frame = Frame::new(5, 3, PixelFormat::Grey, &data).unwrap();
        let out = resize_grey(&frame, PatchBox { x: 0, y: 0, width: 5, height: 3 }, "right").unwrap();
        let cols = [0, 10, 30, 50, 70, 90, 110, 130, 150, 160];
        let rows = [0, 10, 30, 50, 70, 80];
        for (oy, r) in rows.iter().enumerate() {
            for (ox, c) in cols.iter().enumerate() {
                assert_eq!(u32::from(out[oy * 10 + ox]), c + r, "({ox}, {oy})");
            }
        }
    }

    #[test]
    fn rgba_grey_uses_bt601_fixed_point() {
        // R, G, B, white, black, and a grey with alpha 0 (alpha is ignored).
        let pixels: [[u8; 4]; 6] = [
            [255, 0, 0, 255],
            [0, 255, 0, 255],
            [0, 0, 255, 255],
            [255, 255, 255, 255],
            [0, 0, 0, 255],
            [90, 90, 90, 0],
        ];
        let data: Vec<u8> = pixels.iter().flatten().copied().collect();
        let frame = Frame::new(6, 1, PixelFormat::Rgba, &data).unwrap();
        let grey: Vec<u32> = (0..6).map(|x| frame.grey(x, 0)).collect();
        // 0.299·255 = 76.2, 0.587·255 = 149.7, 0.114·255 = 29.1.
        assert_eq!(grey, vec![76, 150, 29, 255, 0, 90]);
    }

    /// Landmarks all at (500, 500) except the two eye contours, spread over the given ranges.
    fn landmarks(left: [f32; 4], right: [f32; 4]) -> Vec<[f32; 2]> {
        let mut l = vec![[500.0, 500.0]; FACE_MESH_LANDMARKS];
        for (contour, [x0, x1, y0, y1]) in [(LEFT_EYE_CONTOUR, left), (RIGHT_EYE_CONTOUR, right)] {
            for (k, &i) in contour.iter().enumerate() {
                // Corners at k = 0 and 8 on x; the lids' middle points at the y extremes.
                let t = k as f32 / 8.0;
                let x = if k <= 8 { x0 + (x1 - x0) * t } else { x0 + (x1 - x0) * (t - 1.0) };
                let y = if k == 4 {
                    y1
                } else if k == 12 {
                    y0
                } else {
                    (y0 + y1) / 2.0
                };
                l[i] = [x, y];
            }
        }
        l
    }

    #[test]
    fn eye_boxes_grow_by_margin_of_eye_width_and_clamp_to_frame() {
        // Left: x 100.4..129.6 (width 29.2, margin 2.92), y 50..60 →
        // x floor(97.48) = 97 .. ceil(132.52) = 133, y floor(47.08) = 47 .. ceil(62.92) = 63.
        // Right: x −2..28 (margin 3) → 0 .. 31; y 150..158 → 147 .. clamped to the 160-row frame.
        let l = landmarks([100.4, 129.6, 50.0, 60.0], [-2.0, 28.0, 150.0, 158.0]);
        let boxes = eye_boxes(&l, 640, 160, &PatchParams::default()).unwrap();
        assert_eq!(boxes[0], PatchBox { x: 97, y: 47, width: 36, height: 16 });
        assert_eq!(boxes[1], PatchBox { x: 0, y: 147, width: 31, height: 13 });
        // 478 landmarks (iris refinement) are accepted; the extra ones are ignored.
        let mut l478 = l.clone();
        l478.extend([[f32::NAN, f32::NAN]; 10]);
        assert_eq!(eye_boxes(&l478, 640, 160, &PatchParams::default()).unwrap(), boxes);
        // No margin: the tight box, ceil of the far edge.
        let tight = eye_boxes(&l, 640, 160, &PatchParams { margin: 0.0 }).unwrap();
        assert_eq!(tight[0], PatchBox { x: 100, y: 50, width: 30, height: 10 });
    }

    #[test]
    fn eye_boxes_report_bad_input() {
        let l = landmarks([100.0, 130.0, 50.0, 60.0], [10.0, 40.0, 50.0, 60.0]);
        let p = PatchParams::default();
        assert_eq!(eye_boxes(&l[..467], 640, 480, &p), Err(GazeError::TooFewLandmarks { got: 467, need: 468 }));
        let mut nan = l.clone();
        nan[159][1] = f32::NAN;
        let err = eye_boxes(&nan, 640, 480, &p).unwrap_err();
        assert!(matches!(err, GazeError::NonFiniteLandmark { index: 159, axis: "y", .. }), "{err}");
        assert!(err.to_string().starts_with("landmarks[159].y:"), "{err}");
        // The left eye lies right of a 90-px-wide frame.
        let err = eye_boxes(&l, 90, 480, &p).unwrap_err();
        assert!(matches!(err, GazeError::EyeOutsideFrame { eye: "left", .. }), "{err}");
        assert!(matches!(
            eye_boxes(&l, 640, 480, &PatchParams { margin: -0.1 }),
            Err(GazeError::InvalidParam { field: "margin", .. })
        ));
    }

    #[test]
    fn frame_and_box_errors() {
        let err = Frame::new(4, 3, PixelFormat::Rgba, &[0; 47]).unwrap_err();
        assert_eq!(err, GazeError::FrameSize { width: 4, height: 3, format: "RGBA", expected: 48, got: 47 });
        let data = [0u8; 12];
        let frame = Frame::new(4, 3, PixelFormat::Grey, &data).unwrap();
        for b in [PatchBox { x: 1, y: 0, width: 4, height: 1 }, PatchBox { x: 0, y: 0, width: 0, height: 3 }] {
            assert!(matches!(resize_grey(&frame, b, "right"), Err(GazeError::BadBox { eye: "right", .. })));
        }
    }

    #[test]
    fn features_are_left_then_right_equalised_patches() {
        // Grey 64×32 frame: the left eye's box (32..52 × 4..16) is dark on its left half and bright
        // on its right half; the right eye's box (2..22 × 10..22) is a gradient.
        let data = grey_frame(64, 32, |x, y| match (x, y) {
            (32..=51, 4..=15) => {
                if x < 42 {
                    40
                } else {
                    90
                }
            }
            (2..=21, 10..=21) => (3 * (x - 2) + y) as u8,
            _ => 200,
        });
        let frame = Frame::new(64, 32, PixelFormat::Grey, &data).unwrap();
        let boxes = [PatchBox { x: 32, y: 4, width: 20, height: 12 }, PatchBox { x: 2, y: 10, width: 20, height: 12 }];
        let f = features_from_boxes(&frame, &boxes).unwrap();
        // Left: columns 0..5 sample x < 42 only (dark), 5..10 bright → 0 and 255 after equalisation.
        for (i, &v) in f[..PATCH_LEN].iter().enumerate() {
            assert_eq!(v, if i % 10 < 5 { 0 } else { 255 }, "left[{i}]");
        }
        let mut right = resize_grey(&frame, boxes[1], "right").unwrap();
        equalize_hist(&mut right);
        assert_eq!(&f[PATCH_LEN..], &right[..]);
        // Gradient: strictly increasing along a row, from 0 to 255 over the patch.
        assert_eq!((f[PATCH_LEN], f[FEATURE_LEN - 1]), (0, 255));
        assert!(f[PATCH_LEN..PATCH_LEN + 10].windows(2).all(|w| w[0] < w[1]));
    }
}
