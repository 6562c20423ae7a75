//! The last 24 hours per proxy, in 5-minute buckets, for the console's charts and overview:
//! responses served from the cache and fetched from the internet, and their bytes; the
//! latest upstream failure; and the egress decisions per minute over the last hour.
//!
//! Fed by the access-log layer (one call per response) and the egress counters; memory is
//! fixed per proxy (288 buckets), and proxies are the configuration's, so a client cannot
//! grow it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// Width of one bucket.
pub(crate) const BUCKET_SECS: u64 = 300;
/// Buckets kept: 24 hours.
pub(crate) const BUCKETS: usize = 288;

/// One bucket's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Bucket {
    /// Responses served from the cache (hit, revalidated, stale).
    pub hits: u64,
    /// Responses fetched from the upstream (miss, pass).
    pub misses: u64,
    pub bytes_cached: u64,
    pub bytes_upstream: u64,
}

/// The last failed upstream answer of a proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub at: SystemTime,
    pub status: u16,
    pub path: String,
}

#[derive(Debug, Default)]
struct Ring {
    /// Bucket number (seconds since the epoch / `BUCKET_SECS`) → slot `n % BUCKETS`.
    slots: Vec<(u64, Bucket)>,
    last_failure: Option<Failure>,
    last_success: Option<SystemTime>,
}

impl Ring {
    fn slot(&mut self, number: u64) -> &mut Bucket {
        if self.slots.is_empty() {
            self.slots = vec![(u64::MAX, Bucket::default()); BUCKETS];
        }
        let slot = &mut self.slots[(number % BUCKETS as u64) as usize];
        if slot.0 != number {
            *slot = (number, Bucket::default());
        }
        &mut slot.1
    }
}

#[derive(Debug, Default)]
pub(crate) struct History {
    proxies: Mutex<HashMap<String, Ring>>,
    /// The egress counter's total at the start of each of the last 60 minutes.
    egress: Mutex<Vec<(u64, u64)>>,
}

fn bucket_of(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / BUCKET_SECS
}

impl History {
    /// One response of `proxy`: from the cache or not, its bytes.
    pub(crate) fn record(&self, proxy: &str, from_cache: bool, bytes: u64, at: SystemTime) {
        let mut proxies = self.proxies.lock().unwrap_or_else(PoisonError::into_inner);
        if !proxies.contains_key(proxy) {
            proxies.insert(proxy.to_owned(), Ring::default());
        }
        let ring = proxies.get_mut(proxy).expect("inserted above");
        let bucket = ring.slot(bucket_of(at));
        if from_cache {
            bucket.hits += 1;
            bucket.bytes_cached += bytes;
        } else {
            bucket.misses += 1;
            bucket.bytes_upstream += bytes;
        }
        ring.last_success = Some(at);
    }

    /// A response of `proxy` that failed because of its upstream.
    pub(crate) fn failure(&self, proxy: &str, status: u16, path: &str, at: SystemTime) {
        let mut proxies = self.proxies.lock().unwrap_or_else(PoisonError::into_inner);
        let ring = proxies.entry(proxy.to_owned()).or_default();
        ring.last_failure = Some(Failure {
            at,
            status,
            // A path is the client's: bounded, so one request cannot hold much memory.
            path: path.chars().take(200).collect(),
        });
    }

    /// The 288 buckets of `proxy` ending with the one holding `now`, oldest first.
    pub(crate) fn series(&self, proxy: &str, now: SystemTime) -> Vec<Bucket> {
        let proxies = self.proxies.lock().unwrap_or_else(PoisonError::into_inner);
        let last = bucket_of(now);
        let first = last + 1 - BUCKETS as u64;
        (first..=last)
            .map(|n| {
                proxies
                    .get(proxy)
                    .and_then(|ring| ring.slots.get((n % BUCKETS as u64) as usize))
                    .filter(|(number, _)| *number == n)
                    .map(|(_, bucket)| *bucket)
                    .unwrap_or_default()
            })
            .collect()
    }

    /// The sum of `proxy`'s last 24 hours.
    pub(crate) fn day(&self, proxy: &str, now: SystemTime) -> Bucket {
        self.series(proxy, now)
            .iter()
            .fold(Bucket::default(), |mut sum, b| {
                sum.hits += b.hits;
                sum.misses += b.misses;
                sum.bytes_cached += b.bytes_cached;
                sum.bytes_upstream += b.bytes_upstream;
                sum
            })
    }

    /// The latest failure and the latest good answer of `proxy`.
    pub(crate) fn health(&self, proxy: &str) -> (Option<Failure>, Option<SystemTime>) {
        let proxies = self.proxies.lock().unwrap_or_else(PoisonError::into_inner);
        proxies
            .get(proxy)
            .map(|r| (r.last_failure.clone(), r.last_success))
            .unwrap_or_default()
    }

    /// Notes the egress decision counter's `total` at `now` (called once a minute).
    pub(crate) fn sample_egress(&self, total: u64, now: SystemTime) {
        let minute = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / 60;
        let mut samples = self.egress.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.last().is_some_and(|(m, _)| *m == minute) {
            return;
        }
        samples.push((minute, total));
        if samples.len() > 61 {
            samples.remove(0);
        }
    }

    /// Egress decisions per minute, averaged over the samples of the last hour (`None`
    /// before two samples exist).
    pub(crate) fn egress_per_minute(&self, total: u64, now: SystemTime) -> Option<f64> {
        let minute = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / 60;
        let samples = self.egress.lock().unwrap_or_else(PoisonError::into_inner);
        let (first_minute, first_total) = *samples.first()?;
        let minutes = minute.saturating_sub(first_minute);
        (minutes > 0).then(|| total.saturating_sub(first_total) as f64 / minutes as f64)
    }
}

/// The egress proxy's decisions so far, every reason together.
pub(crate) fn egress_decisions(egress: &airlock_egress::EgressPolicy) -> u64 {
    airlock_egress::decision::Reason::ALL
        .iter()
        .map(|r| egress.metrics().requests(*r))
        .sum()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn buckets_count_where_the_bytes_came_from_and_age_out_after_a_day() {
        let h = History::default();
        h.record("hub", true, 100, at(0));
        h.record("hub", false, 1000, at(10));
        h.record("hub", true, 50, at(BUCKET_SECS * 3));
        let series = h.series("hub", at(BUCKET_SECS * 3));
        assert_eq!(series.len(), BUCKETS);
        let day = h.day("hub", at(BUCKET_SECS * 3));
        assert_eq!((day.hits, day.misses), (2, 1));
        assert_eq!((day.bytes_cached, day.bytes_upstream), (150, 1000));
        assert_eq!(series.last().unwrap().hits, 1);
        // A day later the first buckets are gone, the newest one stays.
        let later = at(BUCKET_SECS * (BUCKETS as u64 + 2));
        assert_eq!(h.day("hub", later).hits, 1);
        // A slot reused after a day starts from zero.
        h.record("hub", true, 7, at(BUCKET_SECS * BUCKETS as u64));
        assert_eq!(
            h.series("hub", at(BUCKET_SECS * BUCKETS as u64))
                .last()
                .unwrap()
                .bytes_cached,
            7
        );
        assert_eq!(h.day("other", later), Bucket::default());
    }

    #[test]
    fn health_keeps_the_latest_failure_with_a_bounded_path() {
        let h = History::default();
        assert_eq!(h.health("hub"), (None, None));
        h.failure("hub", 502, &"x".repeat(10_000), at(5));
        h.record("hub", false, 1, at(9));
        let (failure, success) = h.health("hub");
        let failure = failure.unwrap();
        assert_eq!((failure.status, failure.path.len()), (502, 200));
        assert_eq!(success, Some(at(9)));
    }

    #[test]
    fn egress_rate_is_per_minute_over_the_samples() {
        let h = History::default();
        assert_eq!(h.egress_per_minute(0, at(0)), None);
        h.sample_egress(10, at(0));
        h.sample_egress(999, at(30));
        assert_eq!(h.egress_per_minute(70, at(180)), Some(20.0));
        for m in 0..200 {
            h.sample_egress(m, at(m * 60));
        }
        assert!(h.egress.lock().unwrap().len() <= 61);
    }
}
