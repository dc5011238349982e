//! (stub) importer: authors
