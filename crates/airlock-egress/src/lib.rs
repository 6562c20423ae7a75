//! The egress proxy: `CONNECT` to an allowlist only, the one outbound door of the enclave.
//!
//! A request goes through named steps, each in its own module: [`request`] parses the head
//! strictly, [`host`] canonicalizes the name, [`allowlist`] decides whether it may be
//! reached, [`resolve`] turns it into addresses once, [`address`] refuses non-public
//! answers, [`tunnel`] relays bytes, and [`decision`] writes one log line per request.
//! Through the site's outbound proxy, [`UpstreamChain`] asks it for the tunnel instead.
//! [`serve`] ties the steps together behind connection caps and a shutdown signal.
//!
//! ```no_run
//! # async fn run(text: &str) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! let config: airlock_egress::Egress = toml::from_str(text)?; // the [egress] table
//! let policy = Arc::new(airlock_egress::EgressPolicy::from_config(&config)?);
//! let listener = tokio::net::TcpListener::bind(policy.listen()).await?;
//! let metrics = Arc::clone(policy.metrics()); // for /metrics: metrics.write_prometheus(&mut s)
//! airlock_egress::serve(policy, listener, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # drop(metrics);
//! # Ok(())
//! # }
//! ```

pub mod address;
mod chain;
pub mod decision;
mod metrics;
mod policy;
pub mod request;
pub mod resolve;
mod server;
pub mod tunnel;

pub use airlock_config::{Egress, EgressConfigError, EgressSettings, Limits};
pub use airlock_types::{allowlist, host};
pub use chain::{ChainError, UpstreamChain};
pub use metrics::EgressMetrics;
pub use policy::EgressPolicy;
pub use resolve::{Resolver, StaticResolver, SystemResolver};
pub use server::serve;
