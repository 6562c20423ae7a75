//! Integration tests for the egress proxy, against real sockets on 127.0.0.1.
//!
//! `bypass` is the regression suite of bypass and abuse attempts; `tunnels` covers relay
//! behaviour (half-close, timeouts, caps, shutdown); `clients` drives curl and Python's
//! urllib through the proxy; `chained` goes through a site's outbound proxy (tinyproxy);
//! `observability` checks the decision log and the metrics.

mod bypass;
mod chained;
mod clients;
mod observability;
mod support;
mod tunnels;
