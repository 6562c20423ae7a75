//! A `k3s` section through the gateway's raw proxies, at the paths `airlock deploy` asks
//! for them (`airlock_deploy::artifacts`): for each architecture `<version>/sha256sum-<arch>.txt`
//! and the binary (`k3s`, `k3s-arm64`, `k3s-armhf`), which counts as warmed only when it
//! matches its line there; the install script at the install proxy's root; and the
//! release's `<version>/k3s-images.txt`, whose images (the cluster's system images: pause,
//! coredns, traefik, klipper, metrics-server, local-path) go back to `bundle create` to be
//! carried like the spec's own images.

use airlock_deploy::artifacts::{asset_name, expected_sha256};
use airlock_types::{Digest, ImageRef};

use super::{Client, WarmError, Warmed};
use crate::create::spec::{ImageSpec, K3sSpec};

/// A checksum file, an install script or an image list larger than this is not one.
const SMALL_FILE_LIMIT: u64 = 4 * 1024 * 1024;
/// `k3s-images.txt` names a dozen images; more than this many lines is not that list.
const IMAGES_LIMIT: usize = 1000;

pub(super) async fn warm(
    client: &Client,
    spec: &K3sSpec,
    warmed: &mut Warmed,
) -> Result<(), WarmError> {
    let fail = |message: String| WarmError::K3s {
        version: spec.version.clone(),
        message,
    };
    let proxy = spec.proxy.as_str();
    for arch in &spec.architectures {
        let asset = asset_name(arch).map_err(|e| fail(e.to_string()))?;
        let url = client.proxy_url(proxy, &format!("{}/sha256sum-{arch}.txt", spec.version))?;
        let (body, fetched) = client.document(proxy, &url, None, SMALL_FILE_LIMIT).await?;
        warmed.k3s.documents.push(fetched);
        let hex = expected_sha256(&String::from_utf8_lossy(&body), asset)
            .ok_or_else(|| fail(format!("{url} has no sha256 line for `{asset}` ({arch})")))?;
        let expected = Digest::sha256_hex(&hex).map_err(|_| fail(format!("{url}: {hex:?}")))?;
        let url = client.proxy_url(proxy, &format!("{}/{asset}", spec.version))?;
        let binary = client.file(proxy, &url, Some(&expected)).await?;
        tracing::info!(version = %spec.version, arch, bytes = binary.bytes, "warmed the K3s binary");
        warmed.k3s.files.push(binary);
    }

    let install = spec.install_proxy.as_str();
    let url = client.proxy_url(install, "")?;
    let (body, fetched) = client
        .document(install, &url, None, SMALL_FILE_LIMIT)
        .await?;
    if !body.starts_with(b"#!") {
        return Err(fail(format!(
            "{url} is not the install script (it does not start with `#!`)"
        )));
    }
    warmed.k3s.files.push(fetched);

    let url = client.proxy_url(proxy, &format!("{}/k3s-images.txt", spec.version))?;
    let (body, fetched) = client.document(proxy, &url, None, SMALL_FILE_LIMIT).await?;
    warmed.k3s.documents.push(fetched);
    let references = images(&body).map_err(|m| fail(format!("{url}: {m}")))?;
    let platforms: Vec<String> = spec
        .architectures
        .iter()
        .map(|arch| format!("linux/{arch}"))
        .collect();
    for reference in references {
        if !warmed.images.iter().any(|i| i.reference == reference) {
            warmed.images.push(ImageSpec {
                reference,
                platforms: platforms.clone(),
                verify: None,
            });
        }
    }
    Ok(())
}

/// The references of a `k3s-images.txt`: one full reference a line (blank lines and `#`
/// comments skipped).
pub(crate) fn images(body: &[u8]) -> Result<Vec<ImageRef>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the image list is not UTF-8".to_owned())?;
    let mut references = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if references.len() == IMAGES_LIMIT {
            return Err(format!("more than {IMAGES_LIMIT} images"));
        }
        let reference: ImageRef = line
            .parse()
            .map_err(|e| format!("line {}: {line:?}: {e}", number + 1))?;
        if reference.domain().is_none() {
            return Err(format!(
                "line {}: {line:?} does not name its registry",
                number + 1
            ));
        }
        if !references.contains(&reference) {
            references.push(reference);
        }
    }
    Ok(references)
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    #[test]
    fn reads_the_release_image_list() {
        let list = b"docker.io/rancher/mirrored-pause:3.6\n\n# comment\ndocker.io/rancher/klipper-lb:v0.4.9\ndocker.io/rancher/mirrored-pause:3.6\n";
        let references = images(list).unwrap();
        let names: Vec<String> = references.iter().map(ImageRef::canonical).collect();
        assert_eq!(
            names,
            [
                "docker.io/rancher/mirrored-pause:3.6",
                "docker.io/rancher/klipper-lb:v0.4.9"
            ]
        );
        for (bad, expected) in [
            (
                &b"rancher/pause:3.6\n"[..],
                "line 1: \"rancher/pause:3.6\" does not name its registry",
            ),
            (b"docker.io/UPPER/x:1\n", "line 1"),
            (b"\xff\n", "not UTF-8"),
        ] {
            let error = images(bad).unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
        let many = (0..=IMAGES_LIMIT).fold(String::new(), |mut text, i| {
            let _ = writeln!(text, "docker.io/a/b:{i}");
            text
        });
        assert!(images(many.as_bytes()).unwrap_err().contains("more than"));
    }
}
