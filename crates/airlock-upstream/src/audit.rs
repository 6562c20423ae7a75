//! One audit line per request sent to an upstream (see `airlock_audit`): the client whose
//! request caused it comes from the task's [`Context`].

use airlock_audit::{Context, Kind, Record};
use http::Method;

use crate::redact::RedactedUrl;

/// Writes the `fetch` line for a request to `url`, if the task has a context.
pub(crate) fn fetch(
    proxy: &str,
    method: &Method,
    url: &url::Url,
    outcome: Result<&reqwest::Response, &str>,
) {
    let Some(context) = Context::current() else {
        return;
    };
    let mut record = Record::new(
        Kind::Fetch,
        match outcome {
            Ok(response) if response.status().is_success() || response.status().as_u16() == 304 => {
                "ok"
            }
            _ => "error",
        },
    )
    .in_context();
    record.proxy = Some(proxy.to_owned());
    record.action = Some(method.as_str().to_owned());
    record.item = Some(RedactedUrl::new(url).to_string());
    record.digest = digest_in(url.path());
    match outcome {
        Ok(response) => {
            record.status = Some(response.status().as_u16());
            record.bytes = response.content_length();
            if let Some(digest) = response
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .filter(|v| is_digest(v))
            {
                record.digest = Some(digest.to_owned());
            }
            if response.url() != url {
                record.reason = Some(format!(
                    "redirected to {}",
                    RedactedUrl::new(response.url())
                ));
            }
        }
        Err(reason) => record.reason = Some(reason.to_owned()),
    }
    context.audit.record(record);
}

/// The `sha256:<hex>` a blob or manifest path names, if any.
fn digest_in(path: &str) -> Option<String> {
    let last = path.rsplit('/').next()?;
    let last = percent_decoded_colon(last);
    is_digest(&last).then_some(last)
}

fn percent_decoded_colon(segment: &str) -> String {
    segment.replacen("%3A", ":", 1).replacen("%3a", ":", 1)
}

fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_read_from_blob_and_manifest_paths_only_when_whole() {
        let hex = "a".repeat(64);
        assert_eq!(
            digest_in(&format!("/v2/library/alpine/blobs/sha256:{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(
            digest_in(&format!("/v2/x/manifests/sha256%3A{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(digest_in("/v2/x/manifests/latest"), None);
        assert_eq!(
            digest_in(&format!("/v2/x/blobs/sha256:{}", "g".repeat(64))),
            None
        );
        assert_eq!(digest_in("/v2/x/blobs/sha256:abc"), None);
        assert_eq!(digest_in(""), None);
    }
}
