//! Errors of the gaze pipeline. Each names the field, index or sample that is wrong, so a
//! message from the page (or a researcher's log) says what to fix.

use crate::patch::PatchBox;

/// Everything that can go wrong in deper-gaze.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GazeError {
    /// The frame's byte count does not match width × height × bytes per pixel.
    #[error("frame: {width}×{height} {format} needs {expected} bytes, got {got}")]
    FrameSize { width: u32, height: u32, format: &'static str, expected: usize, got: usize },
    /// Fewer landmarks than the face-mesh model's 468.
    #[error("landmarks: need at least {need} (x, y) points, got {got}")]
    TooFewLandmarks { got: usize, need: usize },
    /// An eye-contour landmark is NaN or infinite.
    #[error("landmarks[{index}].{axis}: not a finite number ({value})")]
    NonFiniteLandmark { index: usize, axis: &'static str, value: f32 },
    /// The eye's box, after the margin, lies entirely outside the frame.
    #[error("{eye} eye: its box {bbox:?} lies outside the {width}×{height} frame")]
    EyeOutsideFrame { eye: &'static str, bbox: PatchBox, width: u32, height: u32 },
    /// A box does not fit in the frame (a caller-made box, e.g. handed to the GPU runner).
    #[error("{eye} eye: box {bbox:?} is empty or exceeds the {width}×{height} frame")]
    BadBox { eye: &'static str, bbox: PatchBox, width: u32, height: u32 },
    /// A feature vector of the wrong length.
    #[error("{what}[{index}].features: expected {expected} values, got {got}")]
    FeatureLength { what: &'static str, index: usize, expected: usize, got: usize },
    /// A NaN or infinite number in the input.
    #[error("{field}: not a finite number ({value})")]
    NonFinite { field: String, value: f64 },
    /// Not enough samples to fit or summarise.
    #[error("{what}: need at least {need} samples, got {got}")]
    TooFewSamples { what: &'static str, got: usize, need: usize },
    /// Two lists that must pair up have different lengths.
    #[error("{what}: {left} targets but {right} predictions")]
    LengthMismatch { what: &'static str, left: usize, right: usize },
    /// The normal equations are singular (or numerically so) at the given pivot.
    #[error("ridge: the system is singular at pivot {pivot} (pivot value {value:e}); add more distinct calibration points or raise lambda")]
    Singular { pivot: usize, value: f64 },
    /// A parameter outside its valid range.
    #[error("{field}: {message}")]
    InvalidParam { field: &'static str, message: String },
    /// Time going backwards in a stream that must be ordered.
    #[error("{what}[{index}].t: {t} is before the previous sample's {previous}")]
    TimeBackwards { what: &'static str, index: usize, t: f64, previous: f64 },
    /// The GPU runner failed (no adapter, device lost, mapping failed).
    #[error("gpu: {0}")]
    Gpu(String),
}

/// Result with [`GazeError`].
pub type Result<T, E = GazeError> = std::result::Result<T, E>;

/// `Ok(())` when `value` is finite, else [`GazeError::NonFinite`] naming `field`.
pub(crate) fn check_finite(field: impl FnOnce() -> String, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(GazeError::NonFinite { field: field(), value })
    }
}
