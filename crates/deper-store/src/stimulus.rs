//! Uploaded images: validated, stored once under `DATA/stimuli/` as PNG by SHA-256.
//!
//! PNG uploads are stored byte for byte. JPEG uploads (COCO, Flickr30k and camera pictures are
//! JPEG) are decoded and stored as the PNG of their pixels, so every stored stimulus decodes the same
//! way everywhere (browser, backbone, VLM) and no second lossy step happens later; the SHA-256 is that
//! of the stored PNG. Other formats are recognised by their magic bytes so the error can say what was
//! sent.

use crate::error::{Result, StoreError};
use crate::{sha256_hex, NewStimulus, Stimulus, Store};
use std::io::Cursor;
use std::path::Path;

/// Largest accepted image side, in pixels (decoding is bounded by this too).
pub const MAX_SIDE: u32 = 8192;

/// Checks that `bytes` is a PNG image that decodes; returns its width and height.
pub fn validate_png(bytes: &[u8]) -> Result<(u32, u32)> {
    let img = decode(bytes, image::ImageFormat::Png, "PNG")?;
    Ok((img.width(), img.height()))
}

/// The PNG to store for an upload: PNG bytes as they are, a JPEG as the PNG of its decoded pixels
/// (RGB, or grey for a greyscale JPEG); with its width and height.
pub fn stored_png(bytes: &[u8]) -> Result<(std::borrow::Cow<'_, [u8]>, u32, u32)> {
    match sniff(bytes) {
        "PNG" => {
            let (w, h) = validate_png(bytes)?;
            Ok((std::borrow::Cow::Borrowed(bytes), w, h))
        }
        "JPEG" => {
            let img = decode(bytes, image::ImageFormat::Jpeg, "JPEG")?;
            let img = match img.color().channel_count() {
                1 | 2 => image::DynamicImage::ImageLuma8(img.to_luma8()),
                _ => image::DynamicImage::ImageRgb8(img.to_rgb8()),
            };
            let mut png = Cursor::new(Vec::new());
            img.write_to(&mut png, image::ImageFormat::Png)
                .map_err(|e| StoreError::Invalid(format!("the JPEG image could not be stored as PNG: {e}")))?;
            Ok((std::borrow::Cow::Owned(png.into_inner()), img.width(), img.height()))
        }
        kind => {
            let what = if kind.is_empty() { "not an image".to_string() } else { format!("a {kind} image") };
            Err(StoreError::Invalid(format!("the upload is {what}; PNG and JPEG images are accepted")))
        }
    }
}

fn decode(bytes: &[u8], format: image::ImageFormat, name: &str) -> Result<image::DynamicImage> {
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    reader.decode().map_err(|e| StoreError::Invalid(format!("the {name} image does not decode: {e}")))
}

/// Names the image format from the first bytes ("" when unknown).
fn sniff(bytes: &[u8]) -> &'static str {
    const SIGNATURES: [(&[u8], &str); 6] = [
        (b"\x89PNG\r\n\x1a\n", "PNG"),
        (b"\xff\xd8\xff", "JPEG"),
        (b"GIF8", "GIF"),
        (b"RIFF", "WebP"),
        (b"BM", "BMP"),
        (b"II*\0", "TIFF"),
    ];
    SIGNATURES.iter().find(|(sig, _)| bytes.starts_with(sig)).map_or("", |(_, name)| name)
}

/// Validates `bytes` (PNG or JPEG), writes the PNG to `DATA/stimuli/<aa>/<sha256>.png` (once) and
/// registers it.
pub async fn save_stimulus(store: &dyn Store, data_dir: &Path, bytes: &[u8]) -> Result<Stimulus> {
    let (png, width, height) = stored_png(bytes)?;
    let bytes: &[u8] = &png;
    let sha = sha256_hex(bytes);
    let rel = format!("stimuli/{}/{sha}.png", &sha[..2]);
    let path = data_dir.join(&rel);
    if !path.is_file() {
        let dir = path.parent().unwrap_or(data_dir);
        tokio::fs::create_dir_all(dir).await.map_err(|e| StoreError::io(dir, e))?;
        // Write then rename: a half-written file never carries the final name.
        let tmp = path.with_extension(format!("png.{}.tmp", crate::random_hex(4)?));
        tokio::fs::write(&tmp, bytes).await.map_err(|e| StoreError::io(&tmp, e))?;
        tokio::fs::rename(&tmp, &path).await.map_err(|e| StoreError::io(&path, e))?;
    }
    store.insert_stimulus(&NewStimulus { sha256: sha, file: rel, width, height, bytes: bytes.len() as u64 }).await
}
