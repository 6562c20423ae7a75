//! The package proxies' integration tests, one binary: each format served by
//! `airlock_packages` alone on loopback, against in-process fake upstreams and real clients
//! (pip, py-rattler, dnf, Maven, curl).

#[path = "conda.rs"]
mod conda;
#[path = "helm.rs"]
mod helm;
#[path = "maven.rs"]
mod maven;
#[path = "packages.rs"]
mod packages;
#[path = "pypi.rs"]
mod pypi;
#[path = "yum.rs"]
mod yum;
