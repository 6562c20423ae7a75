//! The package proxies' integration tests, one binary: each format served by
//! `airlock_packages` alone on loopback, against in-process fake upstreams and real clients
//! (pip, py-rattler, dnf, Maven, curl).

mod common;

mod conda;
mod helm;
mod maven;
mod offline;
mod packages;
mod policy;
mod pypi;
mod pypi_cache;
mod yum;
