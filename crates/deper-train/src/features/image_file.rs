//! Reading a picture file strictly: a truncated JPEG or PNG is an error, not a grey bottom half.
//!
//! The `image` crate decodes a JPEG cut off mid-scan without complaint (the missing rows come out
//! flat), so JPEG data is first walked marker by marker and must reach its end-of-image marker.
//! Decoder limits keep a small file that declares a huge canvas from taking the machine's memory.

use std::path::Path;

use crate::{Result, TrainError};

/// Largest side and decoder allocation accepted (a 16k × 16k RGBA canvas is 1 GiB).
const MAX_SIDE: u32 = 16_384;
const MAX_ALLOC: u64 = 1 << 30;

/// Decodes a PNG or JPEG file, naming the file in every error.
pub fn decode_image(path: &Path) -> Result<image::DynamicImage> {
    let fail = |message: String| TrainError::Image { path: path.into(), message };
    let bytes = std::fs::read(path).map_err(|e| TrainError::Io { path: path.into(), source: e })?;
    let format = image::guess_format(&bytes).map_err(|e| fail(e.to_string()))?;
    if format == image::ImageFormat::Jpeg {
        check_jpeg_complete(&bytes).map_err(fail)?;
    }
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(&bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    reader.decode().map_err(|e| fail(e.to_string()))
}

/// Walks a JPEG's segments and entropy-coded scans up to the end-of-image marker.
fn check_jpeg_complete(bytes: &[u8]) -> std::result::Result<(), String> {
    let truncated = || "truncated JPEG: the data ends before the end-of-image marker".to_string();
    if bytes.len() < 4 || bytes[0..2] != [0xFF, 0xD8] {
        return Err("not a JPEG (no start-of-image marker)".into());
    }
    let mut i = 2;
    loop {
        // Markers may be padded with any number of 0xFF bytes.
        while i < bytes.len() && bytes[i] == 0xFF && i + 1 < bytes.len() && bytes[i + 1] == 0xFF {
            i += 1;
        }
        if i + 1 >= bytes.len() {
            return Err(truncated());
        }
        if bytes[i] != 0xFF {
            return Err(format!("corrupt JPEG: expected a marker at byte {i}"));
        }
        let marker = bytes[i + 1];
        i += 2;
        match marker {
            0xD9 => return Ok(()),
            // Restart markers and TEM carry no length.
            0xD0..=0xD7 | 0x01 => continue,
            _ => {}
        }
        if i + 2 > bytes.len() {
            return Err(truncated());
        }
        let len = usize::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        if len < 2 || i + len > bytes.len() {
            return Err(truncated());
        }
        i += len;
        if marker == 0xDA {
            // Entropy-coded data runs to the next marker that is not a stuffed 0xFF00 or a restart.
            loop {
                if i + 1 >= bytes.len() {
                    return Err(truncated());
                }
                if bytes[i] == 0xFF && bytes[i + 1] != 0x00 && !(0xD0..=0xD7).contains(&bytes[i + 1]) {
                    break;
                }
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(path: &Path) -> Vec<u8> {
        let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 90]));
        img.save(path).unwrap();
        std::fs::read(path).unwrap()
    }

    #[test]
    fn a_whole_jpeg_decodes_and_a_truncated_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("whole.jpg");
        let bytes = jpeg(&path);
        assert_eq!(decode_image(&path).unwrap().width(), 64);
        let cut = dir.path().join("cut.jpg");
        std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let err = decode_image(&cut).unwrap_err().to_string();
        assert!(err.contains("cut.jpg") && err.contains("truncated JPEG"), "{err}");
        // Only the end-of-image marker missing.
        std::fs::write(&cut, &bytes[..bytes.len() - 2]).unwrap();
        assert!(decode_image(&cut).unwrap_err().to_string().contains("truncated"));
    }

    #[test]
    fn a_truncated_png_and_a_non_image_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 90])).save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = decode_image(&path).unwrap_err().to_string();
        assert!(err.contains("a.png"), "{err}");
        let text = dir.path().join("notes.png");
        std::fs::write(&text, b"hello").unwrap();
        assert!(decode_image(&text).unwrap_err().to_string().contains("notes.png"));
    }

    #[test]
    fn a_canvas_beyond_the_limits_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wide.png");
        image::GrayImage::new(MAX_SIDE + 1, 1).save(&path).unwrap();
        let err = decode_image(&path).unwrap_err().to_string();
        assert!(err.contains("wide.png"), "{err}");
    }
}
