//! DEPER in burn: the stage-1 subject-embedding network of Xue et al., "DEPER" (CVPR 2026,
//! arXiv 2512.06662), generic over the backend.
//!
//! - [`traj_tokens`]: trajectory tokens (RoI-pooled patch features + encodings) and batching.
//! - [`encoder`]: the dual-context encoder producing `Z_dual`.
//! - [`extractor`]: subject embedding `z_s`, scanpath latent `z_scan`, subject classifier.
//! - [`decoder`]: non-autoregressive trajectory decoder with FiLM from `z_s`.
//! - [`loss`]: cross-entropy, SupCon with a memory bank, Smooth-L1 + BCE trajectory loss.
//! - [`model`]: [`Deper`], tying them together.
//!
//! The authors' code (cvlab-stonybrook/Personalized-Image-Description, commit 1526bed) was read
//! for the facts; module docs say where this follows it and where it departs.

pub mod backbone;
pub mod decoder;
pub mod encoder;
pub mod extractor;
pub mod layers;
pub mod loss;
pub mod model;
pub mod traj_tokens;

pub use encoder::EncoderForm;
pub use loss::{Stage1LossConfig, Stage1Losses, SubjectMemoryBank};
pub use model::{Deper, DeperConfig, DeperOutput, TokenEmbedding};
pub use traj_tokens::TrajectoryBatch;

#[cfg(test)]
mod tests;
