//! Pushing to a real `docker-registry` through the Distribution API, and signing what was
//! pushed as `cosign sign --key` does (a P-256 key, a simple-signing payload, the
//! `sha256-<hex>.sig` signature image), since `cosign` itself is not packaged.

use airlock_testkit::{Image, Index};
use airlock_types::Digest;
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::json;

/// Pushes through the Distribution API, as any client does: blobs by a POST-then-PUT
/// upload, manifests by a PUT under their tag.
pub struct Pusher {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

impl Pusher {
    pub fn new(port: u16) -> Self {
        Self {
            runtime: tokio::runtime::Runtime::new().unwrap(),
            client: reqwest::Client::new(),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    pub fn blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::of(bytes);
        self.runtime.block_on(async {
            let started = self
                .client
                .post(format!("{}/v2/{repo}/blobs/uploads/", self.base))
                .send()
                .await
                .unwrap();
            assert_eq!(started.status(), 202, "starting an upload to {repo}");
            let location = started.headers()["location"].to_str().unwrap().to_owned();
            let location = if location.starts_with('/') {
                format!("{}{location}", self.base)
            } else {
                location
            };
            let separator = if location.contains('?') { '&' } else { '?' };
            let done = self
                .client
                .put(format!("{location}{separator}digest={digest}"))
                .header("content-type", "application/octet-stream")
                .body(bytes.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(done.status(), 201, "finishing the upload of {digest}");
        });
        digest
    }

    pub fn manifest(&self, repo: &str, tag: &str, media_type: &str, bytes: &[u8]) {
        self.runtime.block_on(async {
            let response = self
                .client
                .put(format!("{}/v2/{repo}/manifests/{tag}", self.base))
                .header("content-type", media_type)
                .body(bytes.to_vec())
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            assert_eq!(status, 201, "pushing {repo}:{tag}: {body}");
        });
    }

    pub fn image(&self, repo: &str, tag: &str, image: &Image) {
        for blob in image.blobs() {
            self.blob(repo, blob);
        }
        self.manifest(repo, tag, image.media_type, &image.manifest);
    }

    pub fn index(&self, repo: &str, tag: &str, index: &Index) {
        for (_, image) in &index.images {
            self.image(repo, &image.digest.to_string(), image);
        }
        self.manifest(repo, tag, index.media_type, &index.manifest);
    }

    /// Pushes a signature image for `image` in `repo` as cosign lays it out: one
    /// simple-signing layer per (payload, signature), at the tag `sha256-<hex>.sig`.
    /// Returns the signature manifest's digest.
    pub fn signature(&self, repo: &str, image: &Digest, layers: &[(Vec<u8>, String)]) -> Digest {
        let config = json!({
            "architecture": "",
            "os": "",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|(p, _)| Digest::of(p).to_string()).collect::<Vec<_>>()},
        })
        .to_string()
        .into_bytes();
        let config_digest = self.blob(repo, &config);
        let descriptors: Vec<_> = layers
            .iter()
            .map(|(payload, signature)| {
                json!({
                    "mediaType": airlock_cosign::SIMPLE_SIGNING,
                    "digest": self.blob(repo, payload).to_string(),
                    "size": payload.len(),
                    "annotations": {airlock_cosign::SIGNATURE_ANNOTATION: signature},
                })
            })
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest.to_string(),
                "size": config.len(),
            },
            "layers": descriptors,
        })
        .to_string()
        .into_bytes();
        let media_type = "application/vnd.oci.image.manifest.v1+json";
        self.manifest(
            repo,
            &airlock_cosign::signature_tag(image),
            media_type,
            &manifest,
        );
        Digest::of(&manifest)
    }
}

/// The simple-signing payload `cosign sign` writes for `image` in `repository`.
pub fn payload(repository: &str, image: &Digest) -> Vec<u8> {
    json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": image.to_string()},
            "type": "cosign container image signature",
        },
        "optional": null,
    })
    .to_string()
    .into_bytes()
}

pub fn sign(key: &SigningKey, payload: &[u8]) -> String {
    let signature: Signature = key.sign(payload);
    base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
}
