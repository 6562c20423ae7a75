//! The OCI registry's integration tests, one binary: pulls over HTTP against in-process
//! fake upstream registries.

#[path = "cache.rs"]
mod cache;
#[path = "pull.rs"]
mod pull;
