//! `format = "conda"`: a conda channel at `/repository/<name>/`, the upstream being the
//! channel URL (`https://conda.anaconda.org/conda-forge/`), so `channel_alias:
//! https://<host>/repository` makes channel `conda-forge` resolve here.
//!
//! Paths below the proxy:
//!
//! ```text
//! channeldata.json                          refreshed by TTL, byte-exact
//! <subdir>/repodata.json                    refreshed by TTL, byte-exact, checked before it is
//!                                           cached (JSON with well-typed sha256 fields)
//! <subdir>/repodata.json.zst|.json.bz2      refreshed by TTL, byte-exact, no Content-Encoding
//! <subdir>/current_repodata.json            refreshed by TTL (a 404 upstream stays a 404)
//! <subdir>/repodata_shards.msgpack.zst      CEP-16 index, refreshed by TTL, absolute
//!                                           base_url / shards_base_url rewritten here
//! <subdir>/shards/<sha256>.msgpack.zst      a shard, immutable, verified against its name
//! <subdir>/<name>-<ver>-<build>.conda       a package, immutable, verified against the
//! <subdir>/<name>-<ver>-<build>.tar.bz2     sha256 the subdir's repodata.json gives it
//! ```
//!
//! A package that repodata.json does not list, or lists without a sha256, is refused:
//! airlock never serves bytes it cannot verify. Offline, the listings hold only what the
//! store holds (`offline.rs`).

mod offline;
#[cfg(test)]
mod proptests;
mod repodata;
mod shards;

use airlock_types::ClientRequest;
use axum::response::Response;

use crate::{Origin, PackageError, Spec};

/// Longest subdir name accepted (`linux-aarch64`, `emscripten-wasm32`, …).
const MAX_SUBDIR: usize = 64;
/// Longest package filename accepted.
const MAX_FILENAME: usize = 255;

/// Maps a request path below `/repository/<name>/` to a channel file.
pub(crate) async fn serve(
    origin: &Origin,
    path: &str,
    request: &ClientRequest,
) -> Result<Response, PackageError> {
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["channeldata.json"] => origin.get(Spec::ttl(path), request).await,
        [subdir, file] => {
            check_subdir(subdir)?;
            let listing = file.starts_with("repodata")
                || *file == "current_repodata.json"
                || file.starts_with("repodata_shards");
            if origin.is_offline() && listing {
                return offline::serve(origin, subdir, file, request).await;
            }
            match *file {
                "repodata.json" => repodata::serve(origin, subdir, request).await,
                "repodata.json.zst" | "repodata.json.bz2" | "current_repodata.json" => {
                    origin.get(Spec::ttl(path), request).await
                }
                "repodata_shards.msgpack.zst" => shards::serve_index(origin, subdir, request).await,
                _ if is_package(file) => {
                    repodata::serve_package(origin, subdir, file, request).await
                }
                _ => Err(PackageError::NotFound),
            }
        }
        [subdir, "shards", file] => {
            check_subdir(subdir)?;
            shards::serve_shard(origin, subdir, file, request).await
        }
        _ => Err(PackageError::NotFound),
    }
}

/// A conda subdir: `noarch` or `<platform>-<arch>`, lowercase letters, digits, `-` and `_`.
fn check_subdir(subdir: &str) -> Result<(), PackageError> {
    let valid = !subdir.is_empty()
        && subdir.len() <= MAX_SUBDIR
        && subdir.as_bytes()[0].is_ascii_alphanumeric()
        && subdir
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(PackageError::BadPath(format!(
            "{subdir} (not a conda subdir such as linux-64 or noarch)"
        )))
    }
}

/// A package filename: `.conda` or `.tar.bz2`, characters conda allows in names, versions
/// and build strings.
fn is_package(file: &str) -> bool {
    let stem = file
        .strip_suffix(".conda")
        .or_else(|| file.strip_suffix(".tar.bz2"));
    stem.is_some_and(|stem| {
        !stem.is_empty()
            && file.len() <= MAX_FILENAME
            && !stem.starts_with('.')
            && stem
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.+!".contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdirs() {
        for good in [
            "linux-64",
            "noarch",
            "osx-arm64",
            "emscripten-wasm32",
            "win-64",
        ] {
            assert!(check_subdir(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Linux-64",
            "..",
            "a.b",
            "-x",
            "linux 64",
            &"x".repeat(65),
        ] {
            assert!(check_subdir(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn packages() {
        for good in [
            "numpy-1.26.4-py312h_0.conda",
            "zlib-1.3-h0_1.tar.bz2",
            "a-1-0.conda",
        ] {
            assert!(is_package(good), "{good}");
        }
        for bad in [
            ".conda",
            "x.tar.gz",
            "..conda",
            "a b-1-0.conda",
            "a%2f-1-0.conda",
        ] {
            assert!(!is_package(bad), "{bad:?}");
        }
    }
}
