//! What the access log and the metrics learn about a response from the handler that made
//! it: which proxy served it, how it relates to the cache, and whether an upstream failed.
//!
//! The OCI registry and the package proxies both mark their responses with these (as
//! response extensions), so they live here, below both, rather than in either.

/// How a response relates to the cache; the access log and `X-Airlock-Cache` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Served from the cache without asking the upstream.
    Hit,
    /// Served from the cache after the upstream confirmed it is current.
    Revalidated,
    /// Served from the cache because the upstream could not be asked.
    Stale,
    /// Fetched from the upstream (and cached).
    Miss,
    /// Passed through from the upstream without caching, or failed before the cache had
    /// anything to say.
    Pass,
}

impl CacheOutcome {
    /// The `X-Airlock-Cache` value and the metrics label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Revalidated => "revalidated",
            CacheOutcome::Stale => "stale",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Pass => "pass",
        }
    }

    /// The outcome an `X-Airlock-Cache` value names; `None` for anything else.
    #[must_use]
    pub fn parse(value: &str) -> Option<Self> {
        [
            CacheOutcome::Hit,
            CacheOutcome::Revalidated,
            CacheOutcome::Stale,
            CacheOutcome::Miss,
            CacheOutcome::Pass,
        ]
        .into_iter()
        .find(|outcome| outcome.as_str() == value)
    }

    /// Whether the response body came out of the cache.
    #[must_use]
    pub fn from_cache(self) -> bool {
        matches!(
            self,
            CacheOutcome::Hit | CacheOutcome::Revalidated | CacheOutcome::Stale
        )
    }
}

/// Which proxy served a response; the access log reads it from the response extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedBy {
    pub proxy: String,
    pub cache: CacheOutcome,
}

/// Which proxy's upstream made a request fail; the metrics count it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamFailure {
    pub proxy: String,
}

#[cfg(test)]
mod tests {
    use super::CacheOutcome;

    #[test]
    fn every_outcome_parses_back_from_its_header_value() {
        for outcome in [
            CacheOutcome::Hit,
            CacheOutcome::Revalidated,
            CacheOutcome::Stale,
            CacheOutcome::Miss,
            CacheOutcome::Pass,
        ] {
            assert_eq!(CacheOutcome::parse(outcome.as_str()), Some(outcome));
        }
        assert_eq!(CacheOutcome::parse("HIT"), None);
        assert_eq!(CacheOutcome::parse(""), None);
    }
}
