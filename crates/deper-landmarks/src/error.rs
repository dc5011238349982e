//! Errors of the landmark pipeline. Input errors name the field that was wrong; model errors name
//! the model and carry tract's message.

/// Everything that can go wrong when loading the models or processing a frame.
#[derive(Debug, thiserror::Error)]
pub enum LandmarkError {
    /// A frame or tensor argument is malformed (sizes, lengths, values).
    #[error("invalid input: {field}: {message}")]
    Input { field: &'static str, message: String },
    /// The ONNX bytes could not be parsed or optimised, or running the model failed.
    #[error("{model} model: {message}")]
    Model { model: &'static str, message: String },
    /// The model ran but its output does not have the shape this crate decodes.
    #[error("{model} model: output `{output}` has {got} values, expected {expected}")]
    OutputShape { model: &'static str, output: &'static str, got: usize, expected: usize },
}

impl LandmarkError {
    pub(crate) fn input(field: &'static str, message: impl Into<String>) -> Self {
        Self::Input { field, message: message.into() }
    }

    pub(crate) fn model(model: &'static str, err: impl std::fmt::Display) -> Self {
        // `{:#}` prints tract's (anyhow) context chain on one line.
        Self::Model { model, message: format!("{err:#}") }
    }
}

pub type Result<T> = std::result::Result<T, LandmarkError>;
