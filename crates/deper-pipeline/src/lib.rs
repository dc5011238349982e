//! deper-pipeline: DEPER's stages as plain functions over domain configs, each reporting through one
//! progress callback ([`progress::Event`]). In the order of the paper's Figure 2: triplets in
//! ([`import`], [`dataset`]), image features ([`features`]), the subject encoder and z_s
//! ([`stage1`]), z_s → adapter → the frozen VLM ([`stage2`]), captions ([`caption`]) and their
//! evaluation ([`evaluate`]); [`demo`] runs them all on the synthetic world.
//!
//! The `deper` command line draws progress bars from the events and the study server's jobs stream
//! them as server-sent events; neither holds pipeline logic of its own. Backends are chosen here,
//! from a [`backend::DeviceKind`], with this crate's `cuda` and `wgpu` features; the crates below
//! stay generic over the burn backend.

pub mod backend;
pub mod caption;
pub mod dataset;
pub mod demo;
pub mod evaluate;
pub mod features;
pub mod import;
pub mod progress;
pub mod stage1;
pub mod stage2;

pub use backend::DeviceKind;
pub use progress::{Event, OnEvent};
