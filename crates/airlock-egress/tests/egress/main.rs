//! Integration tests for the egress proxy, against real sockets on 127.0.0.1.
//!
//! `bypass` is the regression suite of bypass and abuse attempts; `tunnels` covers relay
//! behaviour (half-close, timeouts, caps, shutdown); `clients` drives curl and Python's
//! urllib through the proxy; `observability` checks the decision log and the metrics.

mod bypass;
mod clients;
mod observability;
mod support;
mod tunnels;
