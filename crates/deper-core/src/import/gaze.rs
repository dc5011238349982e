//! (stub) importer: gaze
