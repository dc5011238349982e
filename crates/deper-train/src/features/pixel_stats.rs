//! `pixel-stats`: a fixed, parameter-free patch descriptor for the synthetic world (no pretrained
//! weights needed). Each 32×32 patch of the 448×448 image gives 16 numbers: mean, standard
//! deviation and maximum of R, G, B; mean absolute horizontal and vertical differences of R, G, B;
//! and the standard deviation of luminance. Grid 14×14.

use std::path::Path;

use crate::TrainError;

pub const PIXEL_STATS: &str = "pixel-stats";
/// Input side and patch side of the descriptor.
pub const PIXEL_STATS_SIZE: u32 = 448;
const PIXEL_STATS_PATCH: u32 = 32;
pub const PIXEL_STATS_GRID: usize = (PIXEL_STATS_SIZE / PIXEL_STATS_PATCH) as usize;
pub const PIXEL_STATS_DIM: usize = 16;

/// The pixel-stats descriptor of one image file.
pub fn pixel_stats(path: &Path) -> Result<Vec<f32>, TrainError> {
    let img = super::decode_image(path)?.to_rgb8();
    let img = if img.dimensions() == (PIXEL_STATS_SIZE, PIXEL_STATS_SIZE) {
        img
    } else {
        image::imageops::resize(&img, PIXEL_STATS_SIZE, PIXEL_STATS_SIZE, image::imageops::FilterType::Triangle)
    };
    let grid = (PIXEL_STATS_SIZE / PIXEL_STATS_PATCH) as usize;
    let p = PIXEL_STATS_PATCH;
    let mut out = Vec::with_capacity(grid * grid * PIXEL_STATS_DIM);
    let px = |x: u32, y: u32| -> [f32; 3] {
        let v = img.get_pixel(x, y).0;
        [f32::from(v[0]) / 255.0, f32::from(v[1]) / 255.0, f32::from(v[2]) / 255.0]
    };
    for gy in 0..grid as u32 {
        for gx in 0..grid as u32 {
            let (mut sum, mut sq, mut max) = ([0f32; 3], [0f32; 3], [0f32; 3]);
            let (mut dx, mut dy) = ([0f32; 3], [0f32; 3]);
            let (mut lum_sum, mut lum_sq) = (0f32, 0f32);
            for y in gy * p..(gy + 1) * p {
                for x in gx * p..(gx + 1) * p {
                    let c = px(x, y);
                    let right = if x + 1 < (gx + 1) * p { px(x + 1, y) } else { c };
                    let below = if y + 1 < (gy + 1) * p { px(x, y + 1) } else { c };
                    for k in 0..3 {
                        sum[k] += c[k];
                        sq[k] += c[k] * c[k];
                        max[k] = max[k].max(c[k]);
                        dx[k] += (right[k] - c[k]).abs();
                        dy[k] += (below[k] - c[k]).abs();
                    }
                    let lum = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
                    lum_sum += lum;
                    lum_sq += lum * lum;
                }
            }
            let n = (p * p) as f32;
            let mean: Vec<f32> = sum.iter().map(|s| s / n).collect();
            out.extend(&mean);
            out.extend((0..3).map(|k| (sq[k] / n - mean[k] * mean[k]).max(0.0).sqrt()));
            out.extend(max);
            out.extend(dx.iter().map(|d| d / n));
            out.extend(dy.iter().map(|d| d / n));
            let lum_mean = lum_sum / n;
            out.push((lum_sq / n - lum_mean * lum_mean).max(0.0).sqrt());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_stats_of_a_flat_and_a_split_image() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img.png");
        // Left half red, right half blue: patches are flat except none straddle (448/32 = 14, split at 224 = 7·32).
        let img =
            image::RgbImage::from_fn(
                448,
                448,
                |x, _| if x < 224 { image::Rgb([255, 0, 0]) } else { image::Rgb([0, 0, 255]) },
            );
        img.save(&path).unwrap();
        let f = pixel_stats(&path).unwrap();
        assert_eq!(f.len(), 14 * 14 * 16);
        let patch = |gy: usize, gx: usize| &f[(gy * 14 + gx) * 16..(gy * 14 + gx + 1) * 16];
        let left = patch(3, 0);
        assert_eq!(&left[0..3], &[1.0, 0.0, 0.0], "mean rgb");
        assert!(left[3..6].iter().all(|s| s.abs() < 1e-6), "flat patch has no spread");
        assert_eq!(&left[6..9], &[1.0, 0.0, 0.0], "max rgb");
        assert!(left[9..15].iter().all(|d| *d == 0.0), "no gradients");
        let right = patch(3, 13);
        assert_eq!(&right[0..3], &[0.0, 0.0, 1.0]);
    }

    #[test]
    fn gradients_and_spread_inside_a_patch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stripes.png");
        // Vertical stripes of width 1: every horizontal neighbour differs by 1 in all channels.
        let img = image::RgbImage::from_fn(448, 448, |x, _| {
            if x % 2 == 0 {
                image::Rgb([0, 0, 0])
            } else {
                image::Rgb([255, 255, 255])
            }
        });
        img.save(&path).unwrap();
        let f = pixel_stats(&path).unwrap();
        let p = &f[0..16];
        assert!((p[0] - 0.5).abs() < 1e-6, "mean {}", p[0]);
        assert!((p[3] - 0.5).abs() < 1e-5, "std {}", p[3]);
        // 31 of 32 columns have a right neighbour inside the patch.
        assert!((p[9] - 31.0 / 32.0).abs() < 1e-6, "dx {}", p[9]);
        assert_eq!(p[12], 0.0, "dy");
        assert!((p[15] - 0.5).abs() < 1e-4, "luminance std {}", p[15]);
    }
}
