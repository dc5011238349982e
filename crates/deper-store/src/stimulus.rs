//! Uploaded images: validated as PNG, stored once under `DATA/stimuli/` by SHA-256.
//!
//! Only PNG is accepted because the workspace's `image` build has only the PNG codec;
//! other formats are recognised by their magic bytes so the error can say what was sent.

use crate::error::{Result, StoreError};
use crate::{sha256_hex, NewStimulus, Stimulus, Store};
use std::io::Cursor;
use std::path::Path;

/// Largest accepted image side, in pixels (decoding is bounded by this too).
pub const MAX_SIDE: u32 = 8192;

/// Checks that `bytes` is a PNG image that decodes; returns its width and height.
pub fn validate_png(bytes: &[u8]) -> Result<(u32, u32)> {
    let kind = sniff(bytes);
    if kind != "PNG" {
        let what = if kind.is_empty() { "not an image".to_string() } else { format!("a {kind} image") };
        return Err(StoreError::Invalid(format!(
            "the upload is {what}; only PNG images are accepted (this build has no JPEG or other decoder yet)"
        )));
    }
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), image::ImageFormat::Png);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| StoreError::Invalid(format!("the PNG image does not decode: {e}")))?;
    Ok((img.width(), img.height()))
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

/// Validates `bytes`, writes them to `DATA/stimuli/<aa>/<sha256>.png` (once) and registers them.
pub async fn save_stimulus(store: &dyn Store, data_dir: &Path, bytes: &[u8]) -> Result<Stimulus> {
    let (width, height) = validate_png(bytes)?;
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
