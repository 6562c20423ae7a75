//! A `python` section through a `pypi` proxy: per pin, the project's page as PEP 691 JSON
//! (read) and as HTML (cached for clients that ask for it), then every file of the page
//! whose sha256 the pin names, and its PEP 658 metadata when the page offers it.

use airlock_types::Digest;
use serde_json::Value;

use super::{Client, Section, WarmError};
use crate::create::spec::{Pin, PythonSpec};

/// A project page larger than this is refused (the gateway's own bound is lower).
const PAGE_LIMIT: u64 = 64 * 1024 * 1024;
/// What pip sends: JSON first.
const JSON: &str = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01";
/// What an HTML-only client sends.
const HTML: &str = "application/vnd.pypi.simple.v1+html, text/html;q=0.01";

pub(super) async fn warm(
    client: &Client,
    proxy: &str,
    section: &PythonSpec,
    warmed: &mut Section,
) -> Result<(), WarmError> {
    for pin in &section.pins {
        warm_pin(client, proxy, section, pin, warmed).await?;
    }
    Ok(())
}

async fn warm_pin(
    client: &Client,
    proxy: &str,
    section: &PythonSpec,
    pin: &Pin,
    warmed: &mut Section,
) -> Result<(), WarmError> {
    let project = pin.project.clone();
    let page_url = client.proxy_url(proxy, &format!("simple/{project}/"))?;
    let (body, fetched) = client
        .document(proxy, &page_url, Some(JSON), PAGE_LIMIT)
        .await?;
    warmed.documents.push(fetched);
    let (_, fetched) = client
        .document(proxy, &page_url, Some(HTML), PAGE_LIMIT)
        .await?;
    warmed.documents.push(fetched);
    let malformed = |message: String| WarmError::Malformed {
        url: page_url.to_string(),
        message,
    };
    let page: Value = serde_json::from_slice(&body)
        .map_err(|e| malformed(format!("not a PEP 691 JSON page: {e}")))?;
    let files = page
        .get("files")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("a PEP 691 page without `files`".to_owned()))?;
    let mut chosen = 0;
    for file in files {
        let Some(sha256) = file
            .pointer("/hashes/sha256")
            .and_then(Value::as_str)
            .and_then(|hex| Digest::sha256_hex(&hex.to_ascii_lowercase()).ok())
        else {
            continue;
        };
        if !pin.sha256.contains(&sha256) {
            continue;
        }
        let href = file
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed(format!("file {sha256} has no `url`")))?;
        let url = page_url
            .join(href)
            .map_err(|e| malformed(format!("file URL {href:?}: {e}")))?;
        let url = client.below(proxy, url)?;
        warmed
            .files
            .push(client.file(proxy, &url, Some(&sha256)).await?);
        chosen += 1;
        let metadata = match metadata(file) {
            Metadata::Absent => continue,
            Metadata::Unhashed => None,
            Metadata::Hashed(digest) => Some(digest),
        };
        let mut metadata_url = url.clone();
        metadata_url.set_path(&format!("{}.metadata", url.path()));
        let metadata_url = client.below(proxy, metadata_url)?;
        let fetched = client.file(proxy, &metadata_url, metadata.as_ref()).await?;
        warmed.documents.push(fetched);
    }
    if chosen == 0 {
        let hashes: Vec<&str> = pin.sha256.iter().map(Digest::hex).collect();
        return Err(WarmError::NoPinnedFile {
            pin: format!("{}=={}", pin.name, pin.version),
            detail: format!(
                "({}:{}): proxy `{proxy}` lists {} file(s) of `{project}`, none with sha256 {}",
                section.requirements.display(),
                pin.line,
                files.len(),
                hashes.join(", ")
            ),
        });
    }
    tracing::info!(project, version = %pin.version, files = chosen, proxy, "warmed");
    Ok(())
}

/// Whether a page offers PEP 658/714 metadata for a file, and with which hash.
enum Metadata {
    Absent,
    Unhashed,
    Hashed(Digest),
}

fn metadata(file: &Value) -> Metadata {
    let offered = file
        .get("core-metadata")
        .or_else(|| file.get("dist-info-metadata"));
    match offered {
        Some(Value::Bool(true)) => Metadata::Unhashed,
        Some(Value::Object(hashes)) => hashes
            .get("sha256")
            .and_then(Value::as_str)
            .and_then(|hex| Digest::sha256_hex(&hex.to_ascii_lowercase()).ok())
            .map_or(Metadata::Unhashed, Metadata::Hashed),
        _ => Metadata::Absent,
    }
}
