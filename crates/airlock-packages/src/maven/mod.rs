//! `format = "maven"`: a Maven 2 layout repository (Maven Central and its mirrors) at
//! `/repository/<name>/`, the path Nexus serves it at, so a `settings.xml` `<mirror>` can
//! point there.
//!
//! Paths below the proxy:
//!
//! ```text
//! …/maven-metadata.xml            refreshed by TTL at any level (group, artifact, version);
//!                                 checked to be XML before it is cached; stale on error
//! …/maven-metadata.xml.<sum>      refreshed by TTL, passed through
//! <file>.sha512|.sha256|.sha1|.md5 passed through, refreshed by TTL
//! <file>.asc                      passed through, refreshed by TTL
//! …/<version>-SNAPSHOT/…          refreshed by TTL: a snapshot may be redeployed
//! <group>/<artifact>/<version>/<file>
//!                                 a release artifact: fetched once, verified against the
//!                                 strongest checksum the upstream publishes for it
//!                                 (.sha512, then .sha256, then .sha1), then kept for good
//! ```
//!
//! A release artifact whose bytes do not match its checksum is never cached and the client
//! gets a 502. When the upstream publishes no checksum at all (a 404 for each), the bytes
//! are cached as they came and a debug line says so; when the checksum cannot be fetched
//! (the upstream fails), the artifact is not fetched either. Once cached, a release
//! artifact is served without asking the upstream again.

use airlock_types::ClientRequest;
use axum::response::Response;
use futures_util::future::BoxFuture;

use crate::checksum::{Algorithm, Checksum};
use crate::{Check, Entry, Origin, PackageError, Spec};

const METADATA: &str = "maven-metadata.xml";
/// `maven-metadata.xml` of an artifact with thousands of versions is a few hundred KiB.
const MAX_METADATA: usize = 16 * 1024 * 1024;
/// A checksum file holds a hex value and perhaps a file name.
const MAX_CHECKSUM: usize = 4096;
/// Strongest first: the first one the upstream publishes is the one checked.
const ALGORITHMS: [Algorithm; 3] = [Algorithm::Sha512, Algorithm::Sha256, Algorithm::Sha1];
/// Files next to an artifact that are passed through as they are.
const SIDECARS: [&str; 5] = [".sha512", ".sha256", ".sha1", ".md5", ".asc"];

/// Maps a request path below `/repository/<name>/` to metadata, a sidecar or an artifact.
pub(crate) async fn serve(
    origin: &Origin,
    path: &str,
    request: &ClientRequest,
) -> Result<Response, PackageError> {
    if path.is_empty() || path.ends_with('/') {
        return Err(PackageError::NotFound);
    }
    let segments: Vec<&str> = path.split('/').collect();
    let file = segments[segments.len() - 1];
    if file == METADATA {
        let check: &Check<'_> = &|bytes, _| check_metadata(bytes);
        return origin
            .get(Spec::ttl(path).checked(MAX_METADATA, check), request)
            .await;
    }
    let sidecar = SIDECARS.iter().any(|s| file.ends_with(s)) || file.starts_with(METADATA);
    let snapshot = segments.iter().any(|s| s.ends_with("-SNAPSHOT"));
    // group (one segment or more) / artifact / version / file
    if sidecar || snapshot || segments.len() < 4 {
        return origin.get(Spec::ttl(path), request).await;
    }
    release(origin, path, request).await
}

/// A release artifact: from the store, or fetched and verified against its checksum.
async fn release(
    origin: &Origin,
    path: &str,
    request: &ClientRequest,
) -> Result<Response, PackageError> {
    // `#` never occurs in a request path, so the key cannot collide with a refreshed file.
    let key = format!("{path}#release");
    // Asked only when the artifact is not cached yet.
    let expected = || -> BoxFuture<'_, _> {
        Box::pin(async move {
            let checksum = published_checksum(origin, path).await?;
            if checksum.is_none() {
                tracing::debug!(
                    target: "airlock::packages",
                    proxy = %origin.config().name,
                    path,
                    "the upstream publishes no .sha512, .sha256 or .sha1 for this file: cached unverified"
                );
            }
            Ok(checksum)
        })
    };
    origin
        .get(Spec::pinned(path, key, &expected), request)
        .await
}

/// The strongest checksum the upstream publishes for `path`, `None` when it publishes none.
/// The checksum files are cached as refreshed files (clients ask for them too).
async fn published_checksum(origin: &Origin, path: &str) -> Result<Option<Checksum>, PackageError> {
    for algorithm in ALGORITHMS {
        let sidecar = format!("{path}.{}", algorithm.extension());
        let check: &Check<'_> = &|bytes, _| Checksum::parse(algorithm, bytes).map(|_| ());
        match origin
            .entry(Spec::ttl(&sidecar).checked(MAX_CHECKSUM, check))
            .await
        {
            Ok(Entry { digest, .. }) => {
                let bytes = origin.read_stored(&digest, MAX_CHECKSUM as u64).await?;
                let checksum = Checksum::parse(algorithm, &bytes).map_err(|detail| {
                    PackageError::Upstream {
                        proxy: origin.config().name.clone(),
                        path: sidecar.clone(),
                        detail,
                    }
                })?;
                return Ok(Some(checksum));
            }
            Err(PackageError::NotFoundUpstream { .. }) => {}
            Err(other) => return Err(other),
        }
    }
    Ok(None)
}

/// `maven-metadata.xml` must be XML whose root element is `<metadata>`.
fn check_metadata(bytes: &[u8]) -> Result<(), String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let mut buf = Vec::new();
    let mut root = None;
    let mut depth = 0usize;
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => {
                root.get_or_insert_with(|| e.local_name().as_ref().to_vec());
                depth += 1;
            }
            Ok(Event::Empty(e)) => {
                root.get_or_insert_with(|| e.local_name().as_ref().to_vec());
            }
            Ok(Event::End(_)) => depth = depth.saturating_sub(1),
            Ok(Event::Eof) if depth > 0 => {
                return Err("maven-metadata.xml ends inside an element".to_owned());
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("maven-metadata.xml is not XML: {e}")),
        }
        buf.clear();
    }
    match root.as_deref() {
        Some(b"metadata") => Ok(()),
        _ => Err("maven-metadata.xml has no <metadata> root element".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(default: u32) -> ProptestConfig {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default);
        ProptestConfig::with_cases(cases)
    }

    fn metadata(versions: &[String]) -> String {
        let listed: String = versions
            .iter()
            .map(|v| ["<version>", v, "</version>"].concat())
            .collect();
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata modelVersion=\"1.1.0\"><groupId>g.h</groupId><artifactId>a</artifactId><versioning><latest>1</latest><versions>{listed}</versions><lastUpdated>20240101000000</lastUpdated></versioning></metadata>\n"
        )
    }

    proptest! {
        #![proptest_config(config(128))]

        #[test]
        fn generated_metadata_is_accepted(versions in proptest::collection::vec("[0-9][0-9a-zA-Z.-]{0,10}", 0..8)) {
            prop_assert!(check_metadata(metadata(&versions).as_bytes()).is_ok());
        }

        #[test]
        fn cut_metadata_is_refused(versions in proptest::collection::vec("[0-9][0-9a-z.]{0,6}", 0..4), cut in any::<prop::sample::Index>()) {
            let text = metadata(&versions);
            // Anything short of the root's closing `>` leaves an element open.
            let end = text.trim_end().len() - 1;
            prop_assert!(check_metadata(&text.as_bytes()[..cut.index(end)]).is_err());
        }

        #[test]
        fn arbitrary_and_mutated_metadata_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), at in any::<prop::sample::Index>()) {
            let _ = check_metadata(&bytes);
            let mut text = metadata(&["1.0".to_owned()]).into_bytes();
            let at = at.index(text.len());
            text.splice(at..at, bytes);
            let _ = check_metadata(&text);
        }
    }

    #[test]
    fn metadata_check() {
        assert!(
            check_metadata(b"<?xml version=\"1.0\"?><metadata><groupId>g</groupId></metadata>")
                .is_ok()
        );
        assert!(check_metadata(b"<metadata modelVersion=\"1.1.0\"/>").is_ok());
        for bad in [
            b"".as_slice(),
            b"<html><body>502 Bad Gateway</body></html>",
            b"<metadata><versioning></metadata>",
            b"not xml at all",
        ] {
            assert!(
                check_metadata(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
