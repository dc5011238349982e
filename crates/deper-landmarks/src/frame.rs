//! Camera frames and the image-to-tensor step: an RGB(A) frame is sampled inside a (possibly rotated)
//! rectangle into a square NHWC float tensor, bilinearly, as MediaPipe's `ImageToTensorCalculator` does
//! (mediapipe/calculators/tensor/image_to_tensor_calculator.cc): the detector gets the whole frame
//! letterboxed (zero border) into 128x128 in [-1, 1], the landmark model the rotated face ROI
//! (edge-replicating border) into 192x192 in [0, 1].

use crate::error::{LandmarkError, Result};
use crate::roi::Roi;

/// Largest accepted frame side; far above any camera, small enough that sizes never overflow.
pub const MAX_FRAME_SIDE: u32 = 16_384;

/// Pixel layout of a frame: 8-bit RGB, or RGBA as a canvas `ImageData` gives it (alpha ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    Rgb8,
    Rgba8,
}

impl PixelFormat {
    pub fn channels(self) -> usize {
        match self {
            PixelFormat::Rgb8 => 3,
            PixelFormat::Rgba8 => 4,
        }
    }
}

/// A borrowed, validated camera frame (row-major, top row first).
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    width: u32,
    height: u32,
    format: PixelFormat,
    data: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Checks that `data` holds exactly `width * height` pixels of `format`.
    pub fn new(width: u32, height: u32, format: PixelFormat, data: &'a [u8]) -> Result<Self> {
        for (field, v) in [("frame.width", width), ("frame.height", height)] {
            if v == 0 || v > MAX_FRAME_SIDE {
                return Err(LandmarkError::input(field, format!("{v} is outside 1..={MAX_FRAME_SIDE}")));
            }
        }
        let expected = width as usize * height as usize * format.channels();
        if data.len() != expected {
            return Err(LandmarkError::input(
                "frame.data",
                format!("{} bytes, expected {expected} for {width}x{height} {format:?}", data.len()),
            ));
        }
        Ok(Self { width, height, format, data })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// The RGB value at integer pixel (x, y), which must be inside the frame.
    fn rgb(&self, x: usize, y: usize) -> [f32; 3] {
        let c = self.format.channels();
        let i = (y * self.width as usize + x) * c;
        [self.data[i] as f32, self.data[i + 1] as f32, self.data[i + 2] as f32]
    }
}

/// What lies outside the frame when the sampling rectangle reaches past its edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Border {
    /// Black (pixel value 0), as the detector's letterbox.
    Zero,
    /// The nearest edge pixel, as the landmark model's crop.
    Replicate,
}

/// Maps 8-bit values into the model's float range `[lo, hi]` as `lo + v / (255 / (hi - lo))`,
/// which for the two ranges used here is the same float arithmetic as the reference script
/// (`v / 127.5 - 1` and `v / 255`), so model-sized inputs give bit-identical tensors.
pub fn normalize(v: f32, range: (f32, f32)) -> f32 {
    range.0 + v / (255.0 / (range.1 - range.0))
}

/// Converts model-sized RGB bytes (already `size x size`) into an NHWC tensor in `range`.
pub fn rgb_to_tensor(rgb: &[u8], range: (f32, f32)) -> Vec<f32> {
    rgb.iter().map(|&v| normalize(v as f32, range)).collect()
}

/// Samples the rotated rectangle `roi` of `frame` into a `size x size` RGB tensor (NHWC, values in
/// `range`). Output pixel centres map to `roi` centre + R(rotation) * offset, then the frame is
/// sampled bilinearly at that point (pixel centres at integer + 0.5).
pub fn sample_roi(frame: &Frame<'_>, roi: &Roi, size: usize, border: Border, range: (f32, f32)) -> Vec<f32> {
    let (sin, cos) = roi.rotation.sin_cos();
    let mut out = Vec::with_capacity(size * size * 3);
    for v in 0..size {
        let ly = ((v as f32 + 0.5) / size as f32 - 0.5) * roi.height;
        for u in 0..size {
            let lx = ((u as f32 + 0.5) / size as f32 - 0.5) * roi.width;
            let x = roi.x_center + cos * lx - sin * ly;
            let y = roi.y_center + sin * lx + cos * ly;
            let px = bilinear(frame, x - 0.5, y - 0.5, border);
            out.extend(px.map(|c| normalize(c, range)));
        }
    }
    out
}

/// Bilinear sample at continuous pixel coordinates (integer = pixel centre).
fn bilinear(frame: &Frame<'_>, x: f32, y: f32, border: Border) -> [f32; 3] {
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let (x0, y0) = (x0 as i64, y0 as i64);
    let p00 = texel(frame, x0, y0, border);
    let p10 = texel(frame, x0 + 1, y0, border);
    let p01 = texel(frame, x0, y0 + 1, border);
    let p11 = texel(frame, x0 + 1, y0 + 1, border);
    // Exact pixel centres (weights 0) return the texel unchanged.
    std::array::from_fn(|c| {
        let top = p00[c] + (p10[c] - p00[c]) * fx;
        let bottom = p01[c] + (p11[c] - p01[c]) * fx;
        top + (bottom - top) * fy
    })
}

fn texel(frame: &Frame<'_>, x: i64, y: i64, border: Border) -> [f32; 3] {
    let (w, h) = (frame.width as i64, frame.height as i64);
    let inside = (0..w).contains(&x) && (0..h).contains(&y);
    match border {
        Border::Zero if !inside => [0.0; 3],
        _ => frame.rgb(x.clamp(0, w - 1) as usize, y.clamp(0, h - 1) as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_rejects_bad_sizes() {
        let data = vec![0u8; 12];
        assert!(Frame::new(2, 2, PixelFormat::Rgb8, &data).is_ok());
        let err = Frame::new(2, 2, PixelFormat::Rgba8, &data[..11]).unwrap_err().to_string();
        assert!(err.contains("frame.data") && err.contains("11 bytes, expected 16"), "{err}");
        let err = Frame::new(0, 2, PixelFormat::Rgb8, &[]).unwrap_err().to_string();
        assert!(err.contains("frame.width"), "{err}");
        let err = Frame::new(2, MAX_FRAME_SIDE + 1, PixelFormat::Rgb8, &data).unwrap_err().to_string();
        assert!(err.contains("frame.height"), "{err}");
    }

    #[test]
    fn identity_roi_copies_pixels_and_rgba_drops_alpha() {
        // 2x2 RGBA frame sampled into 2x2 with the full-frame ROI: exact copy of RGB.
        let data: Vec<u8> = (0..16).map(|i| (i * 10) as u8).collect();
        let frame = Frame::new(2, 2, PixelFormat::Rgba8, &data).unwrap();
        let roi = Roi { x_center: 1.0, y_center: 1.0, width: 2.0, height: 2.0, rotation: 0.0 };
        let t = sample_roi(&frame, &roi, 2, Border::Zero, (0.0, 255.0));
        assert_eq!(t, vec![0.0, 10.0, 20.0, 40.0, 50.0, 60.0, 80.0, 90.0, 100.0, 120.0, 130.0, 140.0]);
    }

    #[test]
    fn rotation_by_quarter_turn_permutes_pixels() {
        // 2x2 frame with values 1 2 / 3 4, sampled through a ROI rotated by +90 degrees.
        let px = |v: u8| [v, v, v];
        let data: Vec<u8> = [px(1), px(2), px(3), px(4)].concat();
        let frame = Frame::new(2, 2, PixelFormat::Rgb8, &data).unwrap();
        let roi = Roi { x_center: 1.0, y_center: 1.0, width: 2.0, height: 2.0, rotation: std::f32::consts::FRAC_PI_2 };
        let t = sample_roi(&frame, &roi, 2, Border::Zero, (0.0, 255.0));
        let grey: Vec<f32> = t.chunks(3).map(|c| c[0].round()).collect();
        // Output x axis follows frame +y, output y axis follows frame -x.
        assert_eq!(grey, vec![2.0, 4.0, 1.0, 3.0]);
    }

    #[test]
    fn borders_zero_and_replicate() {
        let data = vec![200u8; 3];
        let frame = Frame::new(1, 1, PixelFormat::Rgb8, &data).unwrap();
        // A 3x3 ROI around the single pixel: centre is the pixel, corners are outside.
        let roi = Roi { x_center: 0.5, y_center: 0.5, width: 3.0, height: 3.0, rotation: 0.0 };
        let zero = sample_roi(&frame, &roi, 3, Border::Zero, (0.0, 255.0));
        assert!(zero[0].abs() < 1e-3, "{}", zero[0]);
        assert!((zero[4 * 3] - 200.0).abs() < 1e-3, "{}", zero[4 * 3]);
        let rep = sample_roi(&frame, &roi, 3, Border::Replicate, (0.0, 1.0));
        assert!(rep.iter().all(|&v| (v - 200.0 / 255.0).abs() < 1e-6));
    }

    #[test]
    fn normalize_matches_reference_arithmetic() {
        for v in 0..=255u8 {
            let v = v as f32;
            assert_eq!(normalize(v, (-1.0, 1.0)), v / 127.5 - 1.0);
            assert_eq!(normalize(v, (0.0, 1.0)), v / 255.0);
        }
    }
}
