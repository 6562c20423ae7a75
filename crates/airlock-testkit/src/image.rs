//! Builds small but real images: random layers, a config, an OCI or Docker manifest, and
//! multi-arch indexes whose children are such images.

use airlock_types::{Digest, media};
use serde_json::json;

/// A single-platform image: its manifest bytes and every blob it references.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest: Vec<u8>,
    pub media_type: &'static str,
    pub digest: Digest,
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
}

/// An OS/architecture pair.
#[derive(Debug, Clone, Copy)]
pub struct Platform {
    pub os: &'static str,
    pub arch: &'static str,
}

impl Platform {
    /// The platform most test images are for.
    pub const LINUX_AMD64: Platform = Platform {
        os: "linux",
        arch: "amd64",
    };
}

/// A multi-arch index and its per-platform images.
#[derive(Debug, Clone)]
pub struct Index {
    pub manifest: Vec<u8>,
    pub media_type: &'static str,
    pub digest: Digest,
    pub images: Vec<(Platform, Image)>,
}

/// A gzip stream of an empty-ish tar is what real layers are; for a cache, bytes are bytes,
/// but real clients (containerd) unpack layers, so `tar_layer` builds a valid one.
fn random_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|_| rand::random::<u8>()).collect()
}

impl Image {
    /// An OCI image with `layer_sizes` random (not unpackable) layers.
    pub fn random(layer_sizes: &[usize]) -> Self {
        Self::from_layers(
            layer_sizes.iter().map(|&n| random_bytes(n)).collect(),
            Platform {
                os: "linux",
                arch: "amd64",
            },
        )
    }

    /// An OCI image whose layers are the given bytes (e.g. real gzip'd tars).
    pub fn from_layers(layers: Vec<Vec<u8>>, platform: Platform) -> Self {
        let diff_ids: Vec<String> = layers.iter().map(|l| Digest::of(l).to_string()).collect();
        let config = serde_json::to_vec(&json!({
            "architecture": platform.arch,
            "os": platform.os,
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))
        .expect("json");
        let manifest = serde_json::to_vec_pretty(&json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": Digest::of(&config).to_string(),
                "size": config.len(),
            },
            "layers": layers.iter().map(|l| json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": Digest::of(l).to_string(),
                "size": l.len(),
            })).collect::<Vec<_>>(),
        }))
        .expect("json");
        Self {
            digest: Digest::of(&manifest),
            manifest,
            media_type: media::OCI_MANIFEST,
            config,
            layers,
        }
    }

    /// Every blob: config first, then layers.
    pub fn blobs(&self) -> Vec<&[u8]> {
        std::iter::once(self.config.as_slice())
            .chain(self.layers.iter().map(Vec::as_slice))
            .collect()
    }
}

impl Index {
    pub fn new(images: Vec<(Platform, Image)>) -> Self {
        let manifest = serde_json::to_vec_pretty(&json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": images.iter().map(|(p, i)| json!({
                "mediaType": i.media_type,
                "digest": i.digest.to_string(),
                "size": i.manifest.len(),
                "platform": { "os": p.os, "architecture": p.arch },
            })).collect::<Vec<_>>(),
        }))
        .expect("json");
        Self {
            digest: Digest::of(&manifest),
            manifest,
            media_type: media::OCI_INDEX,
            images,
        }
    }
}

/// A tar archive holding one small file, as an uncompressed layer containerd can unpack.
pub fn tar_layer(path: &str, contents: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..path.len()].copy_from_slice(path.as_bytes());
    header[100..108].copy_from_slice(b"0000644\0");
    header[108..116].copy_from_slice(b"0000000\0");
    header[116..124].copy_from_slice(b"0000000\0");
    header[124..136].copy_from_slice(format!("{:011o}\0", contents.len()).as_bytes());
    header[136..148].copy_from_slice(b"00000000000\0");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut tar = header.to_vec();
    tar.extend_from_slice(contents);
    tar.resize(tar.len().div_ceil(512) * 512, 0);
    tar.extend_from_slice(&[0u8; 1024]);
    tar
}

/// Writes an OCI image layout (`oci-layout`, `index.json`, `blobs/`) holding `manifests`
/// (bytes, media type) under `tag`, and every blob in `blobs`; skopeo copies from it.
fn write_layout(
    dir: &std::path::Path,
    tag: &str,
    top: (&[u8], &str),
    blobs: &[&[u8]],
) -> std::io::Result<()> {
    let blob_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blob_dir)?;
    for blob in blobs.iter().chain(std::iter::once(&top.0)) {
        std::fs::write(blob_dir.join(Digest::of(blob).hex()), blob)?;
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": top.1,
            "digest": Digest::of(top.0).to_string(),
            "size": top.0.len(),
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }],
    });
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
}

impl Image {
    /// Writes this image as an OCI layout directory under `tag`.
    pub fn write_oci_layout(&self, dir: &std::path::Path, tag: &str) -> std::io::Result<()> {
        write_layout(dir, tag, (&self.manifest, self.media_type), &self.blobs())
    }
}

impl Index {
    /// Writes the index, its child manifests and their blobs as an OCI layout under `tag`.
    pub fn write_oci_layout(&self, dir: &std::path::Path, tag: &str) -> std::io::Result<()> {
        let mut blobs: Vec<&[u8]> = Vec::new();
        for (_, image) in &self.images {
            blobs.push(&image.manifest);
            blobs.extend(image.blobs());
        }
        write_layout(dir, tag, (&self.manifest, self.media_type), &blobs)
    }
}
