//! deper-pipeline: DEPER's stages as plain functions over domain configs, each reporting through one
//! progress callback ([`progress::Event`]): import, split, features, stage 1, stage 2, evaluation,
//! captions and the demo. The `deper` command line draws progress bars from the events and the study
//! server's jobs stream them as server-sent events; neither holds pipeline logic of its own.
//!
//! Backends are chosen here, from a [`backend::DeviceKind`], with the crate's `cuda` and `wgpu`
//! features; the crates below stay generic over the burn backend.

pub mod demo;
