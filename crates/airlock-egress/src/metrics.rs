//! Counters for the egress proxy, rendered as Prometheus text by whoever serves `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::decision::Reason;

/// Request, tunnel and byte counters. Lock-free; cheap to update per read.
#[derive(Debug)]
pub struct EgressMetrics {
    requests: Vec<AtomicU64>,
    active_tunnels: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

impl Default for EgressMetrics {
    fn default() -> Self {
        Self {
            requests: Reason::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            active_tunnels: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
        }
    }
}

impl EgressMetrics {
    pub fn record(&self, reason: Reason) {
        self.requests[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn requests(&self, reason: Reason) -> u64 {
        self.requests[reason as usize].load(Ordering::Relaxed)
    }

    pub fn active_tunnels(&self) -> u64 {
        self.active_tunnels.load(Ordering::Relaxed)
    }

    pub fn bytes_up(&self) -> u64 {
        self.bytes_up.load(Ordering::Relaxed)
    }

    pub fn bytes_down(&self) -> u64 {
        self.bytes_down.load(Ordering::Relaxed)
    }

    pub(crate) fn add_up(&self, n: u64) {
        self.bytes_up.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_down(&self, n: u64) {
        self.bytes_down.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one open tunnel until the guard drops.
    pub(crate) fn tunnel_opened(&self) -> ActiveTunnel<'_> {
        self.active_tunnels.fetch_add(1, Ordering::Relaxed);
        ActiveTunnel(self)
    }

    /// Append the metrics in the Prometheus text exposition format.
    pub fn write_prometheus(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP airlock_egress_requests_total Egress proxy requests by decision and reason.\n\
             # TYPE airlock_egress_requests_total counter"
        );
        for reason in Reason::ALL {
            let decision = if reason.is_allowed() { "allow" } else { "deny" };
            let _ = writeln!(
                out,
                "airlock_egress_requests_total{{decision=\"{decision}\",reason=\"{}\"}} {}",
                reason.as_str(),
                self.requests(*reason)
            );
        }
        let _ = writeln!(
            out,
            "# HELP airlock_egress_active_tunnels Tunnels open now.\n\
             # TYPE airlock_egress_active_tunnels gauge\n\
             airlock_egress_active_tunnels {}\n\
             # HELP airlock_egress_bytes_total Bytes relayed through tunnels.\n\
             # TYPE airlock_egress_bytes_total counter\n\
             airlock_egress_bytes_total{{direction=\"up\"}} {}\n\
             airlock_egress_bytes_total{{direction=\"down\"}} {}",
            self.active_tunnels(),
            self.bytes_up(),
            self.bytes_down()
        );
    }
}

pub(crate) struct ActiveTunnel<'a>(&'a EgressMetrics);

impl Drop for ActiveTunnel<'_> {
    fn drop(&mut self) {
        self.0.active_tunnels.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text() {
        let m = EgressMetrics::default();
        m.record(Reason::Allowed);
        m.record(Reason::NotAllowlisted);
        m.record(Reason::NotAllowlisted);
        m.add_up(10);
        m.add_down(20);
        let guard = m.tunnel_opened();
        let mut out = String::new();
        m.write_prometheus(&mut out);
        assert!(
            out.contains(
                "airlock_egress_requests_total{decision=\"allow\",reason=\"allowed\"} 1\n"
            )
        );
        assert!(out.contains(
            "airlock_egress_requests_total{decision=\"deny\",reason=\"not_allowlisted\"} 2\n"
        ));
        assert!(out.contains("airlock_egress_active_tunnels 1\n"));
        assert!(out.contains("airlock_egress_bytes_total{direction=\"up\"} 10\n"));
        assert!(out.contains("airlock_egress_bytes_total{direction=\"down\"} 20\n"));
        drop(guard);
        assert_eq!(m.active_tunnels(), 0);
        // Every sample line is `name{labels} value` or `name value`.
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<u64>().is_ok(), "{line}");
        }
    }
}
