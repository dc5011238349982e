//! (stub) importer: ln
