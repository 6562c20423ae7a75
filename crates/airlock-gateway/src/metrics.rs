//! `/metrics` in Prometheus text format: requests by route and status, cache results,
//! bytes served from cache and fetched upstream, upstream errors by proxy, downloads in
//! flight, store size and evictions, the s3 backend's hot tier, and the listener's open,
//! refused and timed-out connections.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use airlock_registry::Registry;
use airlock_types::{CacheOutcome, ServedBy, UpstreamFailure};

use crate::limits::{ConnectionLimits, Expiry, Refused};

/// Counters the request path and the maintenance task update.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// By proxy and cache result.
    cache: Mutex<BTreeMap<(String, &'static str), u64>>,
    upstream_errors: Mutex<BTreeMap<String, u64>>,
    /// By proxy: the latest request an upstream failure ended.
    last_upstream_error: Mutex<BTreeMap<String, LastUpstreamError>>,
    served_from_cache: AtomicU64,
    pub evicted_blobs: AtomicU64,
    pub evicted_bytes: AtomicU64,
    refused: Mutex<BTreeMap<&'static str, u64>>,
    timed_out: Mutex<BTreeMap<&'static str, u64>>,
}

/// The latest request a proxy's upstream failed, for the admin API's health column.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct LastUpstreamError {
    /// Unix seconds.
    pub at: u64,
    /// The status the client was answered with.
    pub status: u16,
    pub path: String,
}

/// One proxy's counters, for the admin API.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProxyCounters {
    /// Responses the proxy served, whatever the cache result.
    pub responses: u64,
    /// Of those, the ones served from the cache (hit, revalidated, stale).
    pub from_cache: u64,
    pub upstream_errors: u64,
    pub last_upstream_error: Option<LastUpstreamError>,
}

/// Writes one metric family: help, type and sample lines (suffixes after the name).
fn section(out: &mut String, name: &str, kind: &str, help: &str, lines: Vec<String>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for line in lines {
        let _ = writeln!(out, "{name}{line}");
    }
}

/// The route label of a path: a small fixed set, never the raw path.
fn route_of(path: &str) -> &'static str {
    match path {
        "/v2" | "/v2/" => "v2_base",
        "/healthz" => "healthz",
        "/metrics" => "metrics",
        "/ca.crt" => "ca",
        "/" => "status",
        p if p.starts_with("/api/v1/") => "admin_api",
        p if p.starts_with("/ui/") => "ui",
        p if p.starts_with("/api/") => "harbor_api",
        p if p.starts_with("/repository/") => "package",
        p if p.starts_with("/v2/") && p.contains("/manifests/") => "manifest",
        p if p.starts_with("/v2/") && p.contains("/blobs/") => "blob",
        p if p.starts_with("/v2/") && p.ends_with("/tags/list") => "tags",
        _ => "other",
    }
}

impl Metrics {
    pub(crate) fn record(
        &self,
        path: &str,
        status: u16,
        served: Option<&ServedBy>,
        failure: Option<&UpstreamFailure>,
        bytes: Option<u64>,
    ) {
        count(&self.requests, (route_of(path), status));
        if let Some(served) = served {
            count(&self.cache, (served.proxy.clone(), served.cache.as_str()));
            if served.cache.from_cache() {
                self.served_from_cache
                    .fetch_add(bytes.unwrap_or(0), Ordering::Relaxed);
            }
        }
        if let Some(failure) = failure {
            count(&self.upstream_errors, failure.proxy.clone());
            let path: String = path.chars().take(256).collect();
            self.last_upstream_error
                .lock()
                .expect("metrics lock")
                .insert(
                    failure.proxy.clone(),
                    LastUpstreamError {
                        at: airlock_store::unix_now(),
                        status,
                        path,
                    },
                );
        }
    }

    /// What the counters say of `proxy`.
    pub(crate) fn proxy(&self, proxy: &str) -> ProxyCounters {
        let mut counters = ProxyCounters::default();
        for ((p, result), n) in self.cache.lock().expect("metrics lock").iter() {
            if p == proxy {
                counters.responses += n;
                if CacheOutcome::parse(result).is_some_and(CacheOutcome::from_cache) {
                    counters.from_cache += n;
                }
            }
        }
        counters.upstream_errors = self
            .upstream_errors
            .lock()
            .expect("metrics lock")
            .get(proxy)
            .copied()
            .unwrap_or(0);
        counters.last_upstream_error = self
            .last_upstream_error
            .lock()
            .expect("metrics lock")
            .get(proxy)
            .cloned();
        counters
    }

    /// A connection closed on arrival because a cap was reached.
    pub(crate) fn connection_refused(&self, reason: Refused) {
        count(&self.refused, reason.as_str());
    }

    /// A connection closed for being slow or idle.
    pub(crate) fn connection_timed_out(&self, reason: Expiry) {
        count(&self.timed_out, reason.as_str());
    }

    pub(crate) fn render(
        &self,
        registry: &Registry,
        store: &dyn airlock_store::BlobStore,
        connections: &ConnectionLimits,
        egress: Option<&std::sync::Arc<airlock_egress::EgressPolicy>>,
    ) -> String {
        let mut out = String::new();
        section(
            &mut out,
            "airlock_connections_open",
            "gauge",
            "Connections open on the gateway listener.",
            vec![format!(" {}", connections.open())],
        );
        section(
            &mut out,
            "airlock_connection_clients",
            "gauge",
            "Client addresses with a connection open on the gateway listener.",
            vec![format!(" {}", connections.clients())],
        );
        section(
            &mut out,
            "airlock_connections_refused_total",
            "counter",
            "Connections closed on arrival because a [server] cap was reached, by cap.",
            by_reason(&self.refused),
        );
        section(
            &mut out,
            "airlock_connections_timed_out_total",
            "counter",
            "Connections closed for a slow TLS handshake, a slow request head or idleness.",
            by_reason(&self.timed_out),
        );
        section(
            &mut out,
            "airlock_http_requests_total",
            "counter",
            "HTTP requests by route and status.",
            self.requests
                .lock()
                .expect("metrics lock")
                .iter()
                .map(|((route, status), n)| {
                    format!("{{route=\"{route}\",status=\"{status}\"}} {n}")
                })
                .collect(),
        );
        section(
            &mut out,
            "airlock_cache_requests_total",
            "counter",
            "Registry and package responses by proxy and cache result (hit, miss, revalidated, stale, pass).",
            self.cache
                .lock()
                .expect("metrics lock")
                .iter()
                .map(|((p, r), n)| format!("{{proxy=\"{p}\",result=\"{r}\"}} {n}"))
                .collect(),
        );
        section(
            &mut out,
            "airlock_cache_served_bytes_total",
            "counter",
            "Bytes of responses served from the cache.",
            vec![format!(
                " {}",
                self.served_from_cache.load(Ordering::Relaxed)
            )],
        );
        let stats = registry.downloads().stats();
        section(
            &mut out,
            "airlock_upstream_fetched_bytes_total",
            "counter",
            "Blob bytes received from upstreams.",
            vec![format!(" {}", stats.bytes_fetched.load(Ordering::Relaxed))],
        );
        section(
            &mut out,
            "airlock_upstream_downloads_total",
            "counter",
            "Blob downloads started, joined by a concurrent request, or failed.",
            vec![
                format!(
                    "{{result=\"started\"}} {}",
                    stats.started.load(Ordering::Relaxed)
                ),
                format!(
                    "{{result=\"joined\"}} {}",
                    stats.joined.load(Ordering::Relaxed)
                ),
                format!(
                    "{{result=\"failed\"}} {}",
                    stats.failed.load(Ordering::Relaxed)
                ),
            ],
        );
        section(
            &mut out,
            "airlock_upstream_errors_total",
            "counter",
            "Requests that failed because an upstream failed, by proxy.",
            self.upstream_errors
                .lock()
                .expect("metrics lock")
                .iter()
                .map(|(p, n)| format!("{{proxy=\"{p}\"}} {n}"))
                .collect(),
        );
        section(
            &mut out,
            "airlock_downloads_in_flight",
            "gauge",
            "Blob downloads under way.",
            vec![format!(" {}", registry.downloads().in_flight())],
        );
        section(
            &mut out,
            "airlock_store_bytes",
            "gauge",
            "Bytes held in the store.",
            vec![format!(" {}", registry.index().total_size())],
        );
        section(
            &mut out,
            "airlock_evicted_blobs_total",
            "counter",
            "Blobs removed by eviction.",
            vec![format!(" {}", self.evicted_blobs.load(Ordering::Relaxed))],
        );
        section(
            &mut out,
            "airlock_evicted_bytes_total",
            "counter",
            "Bytes removed by eviction.",
            vec![format!(" {}", self.evicted_bytes.load(Ordering::Relaxed))],
        );
        if let Some(tier) = store.tier_stats() {
            write_tier(&mut out, tier);
        }
        if let Some(egress) = egress {
            egress.metrics().write_prometheus(&mut out);
        }
        out
    }
}

/// The s3 backend's hot tier.
fn write_tier(out: &mut String, tier: airlock_store::TierStats) {
    let families = [
        (
            "airlock_hot_tier_bytes",
            "gauge",
            "Bytes of bucket objects held on local disk.",
            tier.held_bytes,
        ),
        (
            "airlock_hot_tier_budget_bytes",
            "gauge",
            "The hot tier's size limit ([storage] local_cache).",
            tier.budget_bytes,
        ),
        (
            "airlock_hot_tier_reads_total",
            "counter",
            "Reads the hot tier answered without the bucket.",
            tier.hits,
        ),
        (
            "airlock_hot_tier_fills_total",
            "counter",
            "Objects copied into the hot tier.",
            tier.fills,
        ),
    ];
    for (name, kind, help, value) in families {
        section(out, name, kind, help, vec![format!(" {value}")]);
    }
}

/// Adds one to `key`'s counter.
fn count<K: Ord>(counters: &Mutex<BTreeMap<K, u64>>, key: K) {
    *counters
        .lock()
        .expect("metrics lock")
        .entry(key)
        .or_default() += 1;
}

/// One `{reason="…"} n` sample line per reason counted.
fn by_reason(counters: &Mutex<BTreeMap<&'static str, u64>>) -> Vec<String> {
    counters
        .lock()
        .expect("metrics lock")
        .iter()
        .map(|(reason, n)| format!("{{reason=\"{reason}\"}} {n}"))
        .collect()
}
