//! Helpers shared by the registry's integration tests.

// Each test module uses its own subset of these.
#![allow(dead_code, unused_imports)]

pub use airlock_testkit::http::{client, get, get_accepting, raw_get};
