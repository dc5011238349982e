//! `deper demo`: the whole pipeline on the synthetic world with embedded defaults.

pub mod captioner;
