//! DEPER in burn: the stage-1 subject-embedding network of Xue et al., "DEPER" (CVPR 2026,
//! arXiv 2512.06662), generic over the backend.
//!
//! - [`traj_tokens`]: trajectory tokens (RoI-pooled patch features + encodings) and batching;
//!   with the `wgpu` feature the pooling weights for burn's wgpu backend come from a WGSL
//!   kernel (`roi_kernel`, `shaders/roi_pool_weights.wgsl`).
//! - [`encoder`]: the dual-context encoder producing `Z_dual`.
//! - [`extractor`]: subject embedding `z_s`, scanpath latent `z_scan`, subject classifier.
//! - [`decoder`]: non-autoregressive trajectory decoder with FiLM from `z_s`.
//! - [`loss`]: cross-entropy, SupCon with a memory bank, Smooth-L1 + BCE trajectory loss.
//! - [`model`]: [`Deper`], tying them together.
//! - [`adapter`]: the persona adapter, z_s → the frozen VLM's persona embedding (stage 2 trains
//!   it; evaluation and the caption API apply the same forward).
//! - [`input`]: padded model inputs from host data (features, caption ids, trajectories).
//! - [`text`]: the caption word vocabulary.
//! - [`run`]: what a stage-1 `run.json` says about the network.
//!
//! The authors' code (cvlab-stonybrook/Personalized-Image-Description, commit 1526bed) was read
//! for the facts; module docs say where this follows it and where it departs.

pub mod adapter;
pub mod backbone;
pub mod decoder;
pub mod encoder;
pub mod extractor;
pub mod input;
pub mod layers;
pub mod loss;
pub mod model;
#[cfg(feature = "wgpu")]
mod roi_kernel;
pub mod run;
pub mod text;
pub mod traj_tokens;

pub use encoder::EncoderForm;
pub use input::ModelInput;
pub use loss::{Stage1LossConfig, Stage1Losses, SubjectMemoryBank};
pub use model::{Deper, DeperConfig, DeperOutput, TokenEmbedding};
pub use traj_tokens::TrajectoryBatch;

#[cfg(test)]
mod tests;
