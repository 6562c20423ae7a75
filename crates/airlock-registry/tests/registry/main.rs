//! The OCI registry's integration tests, one binary: `airlock_registry` alone on loopback,
//! pulling against in-process fake upstream registries. What only the gateway adds (status
//! endpoints, TLS, metrics) is tested in airlock-gateway.

mod common;

mod cache;
mod policy;
mod pull;
