//! deper-core: the plain data model of DEPER and its I/O.
//!
//! Triplets (image, description, attention trajectory) of subjects, the
//! importers that stream them from Localized Narratives, the authors' JSON
//! records and raw eye-tracker samples, the builders that turn mouse traces
//! and gaze samples into attention steps, deterministic splits, and the
//! on-disk dataset format. No burn, no tokio: this crate builds for wasm32.

pub mod dataset;
pub mod error;
pub mod import;
pub mod rng;
pub mod split;
pub mod stats;
pub mod trajectory;
pub mod types;

pub use error::{Error, RecordError, Result};
pub use types::*;
