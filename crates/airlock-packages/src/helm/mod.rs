//! `format = "helm"`: a Helm chart repository at `/repository/<name>/`, the upstream being
//! the repository URL (`helm repo add x https://<host>/repository/<name>`).
//!
//! Paths below the proxy:
//!
//! ```text
//! index.yaml                     refreshed by TTL, checked to be a Helm index before it is
//!                                cached (stale on error); served with every chart URL in
//!                                entries.<chart>[].urls rewritten to the gateway
//! <path of a chart>              a chart the index lists under the upstream (relative URLs
//!                                and absolute ones below the repository URL); immutable,
//!                                verified against the entry's digest
//! _ext/<scheme>/<host>/<port>/<path>
//!                                a chart the index lists on another host; the same
//! <chart path>.prov              its provenance file, passed through, refreshed by TTL
//! anything else                  refreshed by TTL, under the upstream only
//! ```
//!
//! Only URLs the current index lists are fetched from other hosts, so the gateway is never
//! an open proxy; a `.tgz` the index does not list, or lists without a sha256 `digest`, is
//! refused: airlock never serves a chart it cannot verify. Offline, `index.yaml` lists only
//! the charts the store holds (`offline.rs`).

mod index;
mod offline;
#[cfg(test)]
mod proptests;

use std::sync::Arc;

use airlock_types::Digest;
use airlock_types::{CacheOutcome, ClientRequest};
use airlock_upstream::Target;
use axum::response::Response;
use futures_util::future::BoxFuture;

use crate::checksum::{Algorithm, Checksum};
use crate::derived::{blocking, in_place};
use crate::{Check, Entry, Origin, PackageError, Spec};

const INDEX: &str = "index.yaml";
/// The largest public index (Bitnami's, before it was trimmed) was about 30 MiB.
const MAX_INDEX: usize = 128 * 1024 * 1024;
const YAML: &str = "application/x-yaml";

/// Rewritten indexes kept per proxy: the current one, and the previous one while a
/// refresh is picked up.
const INDEXES_KEPT: usize = 2;
/// The derived table holding them, by upstream URL (the rewrite depends on it and the
/// proxy, the table's owner) and the digest of the upstream bytes, so a chart request
/// costs a lookup rather than a parse.
const TABLE: &str = "helm-index";

/// Maps a request path below `/repository/<name>/` to the index, a chart or a file.
pub(crate) async fn serve(
    origin: &Origin,
    path: &str,
    request: &ClientRequest,
) -> Result<Response, PackageError> {
    if path.is_empty() || path.ends_with('/') {
        return Err(PackageError::NotFound);
    }
    if path == INDEX && origin.is_offline() {
        return offline::serve_index(origin, request).await;
    }
    let (rewritten, cache) = current(origin).await?;
    if path == INDEX {
        return Ok(Origin::serve_derived(
            rewritten.bytes.clone(),
            YAML,
            request,
            cache,
        ));
    }
    if let Some(chart) = rewritten.charts.get(path) {
        let Some(digest) = &chart.digest else {
            return Err(PackageError::Verification {
                proxy: origin.config().name.clone(),
                path: path.to_owned(),
                detail: "index.yaml gives no usable sha256 digest for this chart, so it \
                         cannot be verified"
                    .to_owned(),
            });
        };
        // Kept by digest: a chart republished under the same URL is fetched anew. The
        // download is verified before the first byte goes out, so a mismatch is a clean 502.
        let key = format!("{path}#{digest}");
        let checksum = Checksum {
            algorithm: Algorithm::Sha256,
            hex: digest.hex().to_owned(),
        };
        let source = Target::Url(chart.url.clone());
        let expected =
            || -> BoxFuture<'_, _> { Box::pin(std::future::ready(Ok(Some(checksum.clone())))) };
        return origin
            .get(Spec::pinned(source, key, &expected), request)
            .await;
    }
    if let Some(chart) = path
        .strip_suffix(".prov")
        .and_then(|p| rewritten.charts.get(p))
    {
        let source = Target::Url(format!("{}.prov", chart.url));
        return origin.get(Spec::ttl_from(source, path), request).await;
    }
    let chart = std::path::Path::new(path)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("tgz"));
    if path.starts_with(index::EXTERNAL) || chart {
        return Err(PackageError::NotListed {
            path: path.to_owned(),
            index: INDEX,
        });
    }
    origin.get(Spec::ttl(path), request).await
}

/// The current index, rewritten: `index.yaml` refreshed by TTL (checked before it is cached,
/// served stale when the upstream cannot answer or sends a broken one). Parsed once per
/// upstream index, off the async threads, however many requests ask at the same time: the
/// check that lets a fetched index into the cache keeps its rewrite.
async fn current(origin: &Origin) -> Result<(Arc<index::Rewritten>, CacheOutcome), PackageError> {
    let base = origin.upstream_base().clone();
    let proxy = origin.config().name.clone();
    let table =
        origin
            .derived
            .table::<(String, Digest), index::Rewritten>(TABLE, INDEXES_KEPT, None);
    let check: &Check<'_> = &|bytes, _| {
        in_place(|| {
            let key = (base.to_string(), Digest::of(bytes));
            if table.get(&key).is_none() {
                table.fill(key, index::rewrite(bytes, &base, &proxy)?);
            }
            Ok(())
        })
    };
    let Entry {
        digest,
        outcome: cache,
        ..
    } = origin
        .entry(Spec::ttl(INDEX).checked(MAX_INDEX, check))
        .await?;
    let rewritten = table
        .get_or_compute((base.to_string(), digest.clone()), || async {
            let bytes = origin.read_stored(&digest, MAX_INDEX as u64).await?;
            let (base, proxy) = (base.clone(), proxy.clone());
            blocking(move || index::rewrite(&bytes, &base, &proxy))
                .await?
                .map_err(|detail| PackageError::Upstream {
                    proxy: origin.config().name.clone(),
                    path: INDEX.to_owned(),
                    detail,
                })
        })
        .await?;
    Ok((rewritten, cache))
}
