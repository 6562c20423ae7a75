//! The gateway configuration: raw TOML → validated, resolved settings in one pass.
//!
//! This crate owns the configuration contract of PRODUCT.md (`airlock.toml`), the embedded
//! default, and the duration and size notations operators write.
