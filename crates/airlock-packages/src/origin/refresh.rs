//! The two freshness rules that keep a file under a cache key: [`Freshness::Ttl`] (fresh
//! for `metadata_ttl`, then revalidated with `If-None-Match`/`If-Modified-Since`, served
//! stale when the upstream cannot answer) and [`Freshness::Pinned`] (fetched once, kept).
//! An upstream 404 is remembered for `negative_ttl` by both.
//!
//! [`Freshness::Ttl`]: super::Freshness::Ttl
//! [`Freshness::Pinned`]: super::Freshness::Pinned

use std::time::Duration;

use airlock_store::{FileRecord, unix_now};
use airlock_types::{CacheOutcome, Digest};
use airlock_upstream::{Target, UpstreamError};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use reqwest::Method;

use super::ingest::{Refused, Verify};
use super::{Entry, Expected, Origin, Spec, internal};
use crate::PackageError;

impl Origin {
    /// The cache entry of `spec.key`: fresh from the cache, revalidated, fetched, or stale.
    pub(super) async fn refresh(&self, spec: &Spec<'_>) -> Result<Entry, PackageError> {
        let path = spec.path();
        if let Some(found) = self.fresh(spec).await? {
            return Ok(found);
        }
        // One upstream conversation per key: concurrent requests wait, then find the result.
        let _turn = self.locks.lock(&spec.key).await;
        if let Some(found) = self.fresh(spec).await? {
            return Ok(found);
        }
        let cached = self.cached(&spec.key).await?;
        if self.config.offline {
            return cached
                .map(|(_, entry)| entry)
                .ok_or_else(|| self.offline(path));
        }
        let mut conditional = HeaderMap::new();
        if let Some(accept) = spec.accept.and_then(|v| HeaderValue::from_str(v).ok()) {
            conditional.insert(header::ACCEPT, accept);
        }
        if let Some((record, _)) = &cached {
            let value =
                |v: &Option<String>| v.as_deref().and_then(|v| HeaderValue::from_str(v).ok());
            if let Some(etag) = value(&record.etag) {
                conditional.insert(header::IF_NONE_MATCH, etag);
            }
            if let Some(date) = value(&record.last_modified) {
                conditional.insert(header::IF_MODIFIED_SINCE, date);
            }
        }
        let stale = |why: String| self.stale(path, cached.clone(), why);
        let response = match self
            .upstream
            .send(Method::GET, spec.source.clone(), conditional, "")
            .await
        {
            Ok(response) => response,
            Err(e @ (UpstreamError::PathRefused { .. } | UpstreamError::UrlRefused { .. })) => {
                return Err(self.request_error(path, e));
            }
            Err(e) => return stale(e.to_string()),
        };
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED {
            if let Some((record, entry)) = &cached {
                let refreshed = FileRecord {
                    checked_at: unix_now(),
                    ..record.clone()
                };
                self.index
                    .set_file(&self.config.name, &spec.key, &refreshed)
                    .await
                    .map_err(internal)?;
                return Ok(Entry {
                    outcome: CacheOutcome::Revalidated,
                    ..entry.clone()
                });
            }
        }
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            self.remember_missing(&spec.key);
            return Err(PackageError::NotFoundUpstream {
                path: path.to_owned(),
            });
        }
        if status != StatusCode::OK {
            return stale(format!("upstream answered {status}"));
        }
        let verify = match spec.checked {
            Some((max, check)) => Verify::Checked(max, check),
            None => Verify::Nothing,
        };
        match self.ingest(path, &spec.key, response, verify).await {
            Ok((record, committed)) => Ok(entry(
                record,
                committed.digest,
                committed.size,
                CacheOutcome::Miss,
            )),
            Err(Refused::Unusable(why)) => stale(why),
            Err(Refused::Failed(error)) => Err(error),
        }
    }

    /// The cache entry of `spec.key` if it is within its TTL (or remembered missing).
    async fn fresh(&self, spec: &Spec<'_>) -> Result<Option<Entry>, PackageError> {
        if self.known_missing(&spec.key) {
            return Err(PackageError::NotFoundUpstream {
                path: spec.path().to_owned(),
            });
        }
        let Some(record) = self
            .index
            .file(&self.config.name, &spec.key)
            .await
            .map_err(internal)?
        else {
            return Ok(None);
        };
        let age = Duration::from_secs(unix_now().saturating_sub(record.checked_at));
        // Fetch times are whole seconds: an age equal to the TTL may be a moment old, so a
        // file is fresh for at least `metadata_ttl`, up to a second more (0 is never fresh).
        let ttl = self.config.metadata_ttl.0;
        if (age > ttl || ttl.is_zero()) && !self.config.offline {
            return Ok(None);
        }
        Ok(self
            .with_content(record, CacheOutcome::Hit)
            .await?
            .map(|(_, e)| e))
    }

    /// The record of `key` and its entry, when the store still holds its content.
    async fn cached(&self, key: &str) -> Result<Option<(FileRecord, Entry)>, PackageError> {
        match self
            .index
            .file(&self.config.name, key)
            .await
            .map_err(internal)?
        {
            Some(record) => self.with_content(record, CacheOutcome::Hit).await,
            None => Ok(None),
        }
    }

    async fn with_content(
        &self,
        record: FileRecord,
        outcome: CacheOutcome,
    ) -> Result<Option<(FileRecord, Entry)>, PackageError> {
        let Some(digest) = record.digest.clone() else {
            return Ok(None);
        };
        let Some(size) = self.store.stat(&digest).await.map_err(internal)? else {
            return Ok(None);
        };
        let found = entry(record.clone(), digest, size, outcome);
        Ok(Some((record, found)))
    }

    /// The cached copy when the upstream could not answer, or the upstream's failure.
    fn stale(
        &self,
        path: &str,
        cached: Option<(FileRecord, Entry)>,
        why: String,
    ) -> Result<Entry, PackageError> {
        let Some((_, entry)) = cached else {
            return Err(self.upstream_error(path, why));
        };
        tracing::warn!(
            target: "airlock::packages",
            proxy = %self.config.name,
            path,
            reason = why,
            "serving cached file stale: upstream could not revalidate it"
        );
        Ok(Entry {
            outcome: CacheOutcome::Stale,
            ..entry
        })
    }

    /// A file that never changes once cached under `key`: from the store, or fetched once
    /// (concurrent requests wait for it, then read the store) after `expected` resolved,
    /// and kept only when its bytes matched (with `None`, the upstream published no
    /// checksum and the bytes are kept as they came).
    pub(super) async fn pinned(
        &self,
        source: &Target,
        key: &str,
        expected: &Expected<'_>,
    ) -> Result<Entry, PackageError> {
        let path = source.as_str();
        if let Some(found) = self.kept(path, key).await? {
            return Ok(found);
        }
        let _turn = self.locks.lock(key).await;
        if let Some(found) = self.kept(path, key).await? {
            return Ok(found);
        }
        let expected = expected().await?;
        if self.config.offline {
            return Err(self.offline(path));
        }
        let response = self
            .upstream
            .send(Method::GET, source.clone(), HeaderMap::new(), "")
            .await
            .map_err(|e| self.request_error(path, e))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            self.remember_missing(key);
            return Err(PackageError::NotFoundUpstream {
                path: path.to_owned(),
            });
        }
        if status != StatusCode::OK {
            return Err(self.upstream_error(path, format!("upstream answered {status}")));
        }
        let verify = expected.as_ref().map_or(Verify::Nothing, Verify::Checksum);
        match self.ingest(path, key, response, verify).await {
            Ok((record, committed)) => Ok(entry(
                record,
                committed.digest,
                committed.size,
                CacheOutcome::Miss,
            )),
            Err(Refused::Failed(error)) => Err(error),
            Err(Refused::Unusable(why)) => Err(self.upstream_error(path, why)),
        }
    }

    /// A pinned file as cached before; a 404 remembered for `negative_ttl` is an error.
    async fn kept(&self, path: &str, key: &str) -> Result<Option<Entry>, PackageError> {
        if self.known_missing(key) {
            return Err(PackageError::NotFoundUpstream {
                path: path.to_owned(),
            });
        }
        Ok(self.cached(key).await?.map(|(_, entry)| entry))
    }
}

fn entry(record: FileRecord, digest: Digest, size: u64, outcome: CacheOutcome) -> Entry {
    Entry {
        digest,
        size,
        content_type: record.content_type,
        outcome,
    }
}
