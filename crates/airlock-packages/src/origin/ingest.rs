//! The one way an upstream response that is not named by a digest reaches the store: read
//! the body, verify it (a published checksum, or a format's check on a bounded document),
//! and only then commit it and record it under its cache key. Bytes that fail are dropped
//! with the unfinished blob; the cache never holds them. (Files named by a digest go
//! through the shared download machinery, [`Downloads`](airlock_upstream::fetch::Downloads),
//! which verifies the same way and is shared with the registry.)

use airlock_store::{Committed, FileRecord, StoreError, unix_now};
use airlock_types::Digest;
use futures_util::StreamExt;
use http::header;

use super::{Check, Origin, internal};
use crate::PackageError;
use crate::checksum::{Algorithm, Checksum, Hasher};

/// What a body is verified against before it is committed.
#[derive(Clone, Copy)]
pub(super) enum Verify<'a> {
    /// Nothing known in advance: the bytes are kept as they came (named by their hash).
    Nothing,
    /// A checksum the upstream published for the file.
    Checksum(&'a Checksum),
    /// A document: at most `max` bytes, accepted by `check`.
    Checked(usize, &'a Check<'a>),
}

/// Why a body was not ingested.
pub(super) enum Refused {
    /// The upstream sent a document that is too large or fails its check: an upstream
    /// failure the previous copy can stand in for.
    Unusable(String),
    /// Anything else, as the client sees it.
    Failed(PackageError),
}

impl From<PackageError> for Refused {
    fn from(error: PackageError) -> Self {
        Refused::Failed(error)
    }
}

impl Origin {
    /// Reads `response` (a 200 for `path`), verifies it as `verify` says, commits it, and
    /// records it under `key` as fetched now.
    pub(super) async fn ingest(
        &self,
        path: &str,
        key: &str,
        response: reqwest::Response,
        verify: Verify<'_>,
    ) -> Result<(FileRecord, Committed), Refused> {
        let text = |name: header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let record = FileRecord {
            digest: None,
            content_type: text(header::CONTENT_TYPE),
            etag: text(header::ETAG),
            last_modified: text(header::LAST_MODIFIED),
            checked_at: unix_now(),
        };
        let committed = match verify {
            Verify::Checked(max, check) => {
                let bytes = airlock_upstream::read_body(response, max)
                    .await
                    .map_err(|e| Refused::Unusable(e.to_string()))?;
                check(&bytes, record.content_type.as_deref()).map_err(Refused::Unusable)?;
                let mut writer = self.store.create(None).await.map_err(internal)?;
                writer.write(&bytes).await.map_err(internal)?;
                writer.commit().await.map_err(internal)?
            }
            Verify::Nothing => self.stream_in(path, response, None).await?,
            Verify::Checksum(expected) => self.stream_in(path, response, Some(expected)).await?,
        };
        let record = FileRecord {
            digest: Some(committed.digest.clone()),
            checked_at: unix_now(),
            ..record
        };
        self.index
            .record_file_blob(
                &committed.digest,
                committed.size,
                &self.config.name,
                key,
                &record,
            )
            .await
            .map_err(internal)?;
        Ok((record, committed))
    }

    /// Streams a body into the store, hashing it against `expected` on the way; commits
    /// only a complete body that matched.
    async fn stream_in(
        &self,
        path: &str,
        response: reqwest::Response,
        expected: Option<&Checksum>,
    ) -> Result<Committed, PackageError> {
        let declared = response.content_length();
        // A sha256 is checked by the store itself; other algorithms alongside it.
        let sha256 = match expected {
            Some(c) if c.algorithm == Algorithm::Sha256 => {
                Some(Digest::sha256_hex(&c.hex).map_err(internal)?)
            }
            _ => None,
        };
        let mut hasher = expected.map(|c| Hasher::new(c.algorithm));
        let mut writer = self.store.create(sha256.as_ref()).await.map_err(internal)?;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                self.upstream_error(path, airlock_upstream::error_chain(&e.without_url()))
            })?;
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(&chunk);
            }
            writer.write(&chunk).await.map_err(internal)?;
        }
        if let Some(declared) = declared.filter(|n| *n != writer.written()) {
            return Err(self.upstream_error(
                path,
                format!("body ended after {} of {declared} bytes", writer.written()),
            ));
        }
        if let (Some(expected), Some(hasher)) = (expected, hasher) {
            let actual = hasher.finish();
            if actual != expected.hex {
                // Dropping the writer discards the bytes: nothing was stored.
                return Err(self.verification_error(
                    path,
                    format!(
                        "its {} is {actual}, the upstream's .{} file says {}",
                        expected.algorithm.extension(),
                        expected.algorithm.extension(),
                        expected.hex
                    ),
                ));
            }
        }
        writer.commit().await.map_err(|e| match e {
            StoreError::DigestMismatch { .. } => self.verification_error(path, e.to_string()),
            other => internal(other),
        })
    }
}
