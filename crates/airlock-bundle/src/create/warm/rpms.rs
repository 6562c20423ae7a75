//! An `rpms` section through a `yum` proxy: each repository's `repomd.xml` and every file
//! it lists (so an offline view can regenerate primary, filelists and other from what is
//! held), the packages' dependency closure resolved by `airlock deploy`'s resolver through
//! the gateway, every package of the closure, and the section's `keys` as they are.

use airlock_deploy::artifacts::Http;
use airlock_deploy::rpms::{Closure, RpmError, resolve_closure};
use airlock_types::Digest;
use url::Url;

use super::{Client, DOCUMENT_TIMEOUT, WarmError, Warmed, listed};
use crate::create::spec::RpmsSpec;

/// `repomd.xml` larger than this is not one.
const REPOMD_LIMIT: u64 = 16 * 1024 * 1024;
/// A GPG key (or a few in one file) is a few KiB.
const KEY_LIMIT: u64 = 1024 * 1024;

pub(super) async fn warm(
    client: &Client,
    proxy: &str,
    section: &RpmsSpec,
    warmed: &mut Warmed,
) -> Result<(), WarmError> {
    let mut roots = Vec::new();
    for repo in &section.repos {
        let root = client.proxy_url(proxy, repo)?;
        metadata(client, proxy, &root, warmed).await?;
        roots.push(root);
    }
    for key in &section.keys {
        let url = client.proxy_url(proxy, key)?;
        let (_, fetched) = client.document(proxy, &url, None, KEY_LIMIT).await?;
        warmed.rpms.documents.push(fetched);
    }
    let closure = resolve(proxy, section, &roots).await?;
    for unresolved in &closure.left_to_os {
        let by = unresolved.required_by.as_deref().unwrap_or("the spec");
        warmed
            .rpms_left_to_os
            .push(format!("{} (required by {by})", unresolved.requirement));
    }
    for package in &closure.packages {
        let url = Url::parse(&package.url).map_err(|e| WarmError::Malformed {
            url: package.url.clone(),
            message: e.to_string(),
        })?;
        // A location with an `xml:base` elsewhere would be fetched from there: never.
        let url = client.below(proxy, url).map_err(|_| WarmError::Rpm {
            proxy: proxy.to_owned(),
            message: format!(
                "{} is located at {} (an xml:base outside the repository), which airlock does not fetch for a bundle",
                package.file_name, package.url
            ),
        })?;
        if !package.checksum.kind.eq_ignore_ascii_case("sha256") {
            return Err(WarmError::Rpm {
                proxy: proxy.to_owned(),
                message: format!(
                    "{} is checked with {}, not sha256: the gateway caches only what it verifies with sha256",
                    package.file_name, package.checksum.kind
                ),
            });
        }
        let expected =
            Digest::sha256_hex(&package.checksum.hex.to_ascii_lowercase()).map_err(|_| {
                WarmError::Malformed {
                    url: package.url.clone(),
                    message: format!("checksum {:?} is not sha256 hex", package.checksum.hex),
                }
            })?;
        warmed
            .rpms
            .files
            .push(client.file(proxy, &url, Some(&expected)).await?);
    }
    tracing::info!(
        proxy,
        packages = closure.packages.len(),
        left_to_os = closure.left_to_os.len(),
        "warmed RPMs"
    );
    Ok(())
}

/// `repodata/repomd.xml` at `root` and every file it lists, checked against its sha256.
async fn metadata(
    client: &Client,
    proxy: &str,
    root: &Url,
    warmed: &mut Warmed,
) -> Result<(), WarmError> {
    let repomd_url = client.below(proxy, join(root, "repodata/repomd.xml")?)?;
    let (body, fetched) = client
        .document(proxy, &repomd_url, None, REPOMD_LIMIT)
        .await?;
    warmed.rpms.documents.push(fetched);
    let repomd = airlock_yum::Repomd::parse(&body).map_err(|e| WarmError::Malformed {
        url: repomd_url.to_string(),
        message: e.to_string(),
    })?;
    for entry in &repomd.entries {
        if entry.base.is_some() {
            // The gateway serves repodata only from the repository itself.
            tracing::warn!(proxy, href = %entry.href, "left out metadata with an xml:base");
            continue;
        }
        let url = client.below(proxy, join(root, &entry.href)?)?;
        let expected = entry
            .checksum
            .as_ref()
            .filter(|c| c.kind.eq_ignore_ascii_case("sha256"))
            .and_then(|c| Digest::sha256_hex(&c.hex.to_ascii_lowercase()).ok());
        warmed
            .rpms
            .documents
            .push(client.file(proxy, &url, expected.as_ref()).await?);
    }
    Ok(())
}

fn join(root: &Url, path: &str) -> Result<Url, WarmError> {
    root.join(path).map_err(|e| WarmError::Malformed {
        url: root.to_string(),
        message: format!("{path:?}: {e}"),
    })
}

/// The closure of the section's packages for each of its architectures, through the
/// gateway (the resolver is blocking: it runs off the async threads). A package asked for
/// by name that no repository has for any of the architectures is an error.
async fn resolve(proxy: &str, section: &RpmsSpec, roots: &[Url]) -> Result<Closure, WarmError> {
    let repos: Vec<String> = roots.iter().map(Url::to_string).collect();
    let (wanted, arches) = (section.packages.clone(), section.arch.clone());
    let repos_shown = repos.join(", ");
    let resolved = tokio::task::spawn_blocking(move || {
        let http = Http::new(None, None, Some(DOCUMENT_TIMEOUT), false)?;
        let names: Vec<&str> = wanted.iter().map(String::as_str).collect();
        let mut closure = Closure::default();
        // The wanted names absent for every architecture so far.
        let mut absent = wanted.clone();
        for arch in &arches {
            let one = match resolve_closure(&repos, &names, arch, &http) {
                Ok(one) => one,
                Err(RpmError::NothingFound { .. }) => continue,
                Err(error) => return Err(error),
            };
            absent.retain(|name| {
                one.left_to_os
                    .iter()
                    .any(|u| u.required_by.is_none() && u.requirement == *name)
            });
            for package in one.packages {
                if !closure.packages.iter().any(|p| p.url == package.url) {
                    closure.packages.push(package);
                }
            }
            for unresolved in one.left_to_os {
                if unresolved.required_by.is_some() && !closure.left_to_os.contains(&unresolved) {
                    closure.left_to_os.push(unresolved);
                }
            }
        }
        Ok((closure, absent))
    })
    .await
    .map_err(|e| WarmError::Rpm {
        proxy: proxy.to_owned(),
        message: format!("the resolver stopped: {e}"),
    })?;
    let (closure, absent) = resolved.map_err(|error| WarmError::Rpm {
        proxy: proxy.to_owned(),
        message: error.to_string(),
    })?;
    if !absent.is_empty() {
        return Err(WarmError::RpmAbsent {
            proxy: proxy.to_owned(),
            names: listed(&absent, 20),
            repos: repos_shown,
        });
    }
    Ok(closure)
}
