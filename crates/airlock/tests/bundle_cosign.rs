//! `bundle create` with `verify: {cosign_key: FILE}` against Debian's `docker-registry` as
//! the upstream. The test signs what it pushed as `cosign sign --key` does (a fresh P-256
//! key, a simple-signing payload, the `sha256-<hex>.sig` signature image), since `cosign`
//! itself is not packaged: signed images are carried with their signature image; unsigned,
//! wrongly signed and misdirected signatures, and a bad key file, stop `create` with the
//! image and the reason, leaving no bundle behind.

mod bundles;

use std::path::Path;
use std::process::Command;

use airlock_bundle::{BundleIndex, Kind};
use airlock_testkit::{DockerRegistry, Image, require_tool, tar_layer};
use airlock_types::Digest;
use bundles::registry::{Pusher, payload, sign};
use bundles::*;
use p256::ecdsa::SigningKey;
use p256::pkcs8::{EncodePublicKey as _, LineEnding};

/// Every file in `dir` whose name starts with `prefix` (a bundle, its volumes, partials).
fn files_named(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(prefix))
        .collect()
}

#[test]
fn create_carries_cosign_signed_images_with_their_signature_and_refuses_the_rest() {
    let skopeo = require_tool("skopeo", "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let registry = DockerRegistry::start(dir);
    let port = registry.port;
    let push = Pusher::new(port);

    let org = SigningKey::random(&mut rand::rngs::OsRng);
    let stranger = SigningKey::random(&mut rand::rngs::OsRng);
    std::fs::create_dir(dir.join("keys")).unwrap();
    std::fs::write(
        dir.join("keys/org.pub"),
        org.verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("keys/broken.pub"), "not a key\n").unwrap();

    let images = fixture();
    let other = Image::from_layers(vec![tar_layer("other", b"unsigned\n")], AMD64);
    // Signed by the org's key: a single image, and a multi-platform index (the signature
    // names the index's digest, whichever platforms are carried).
    push.image("team/signed", "1", &images.single);
    let signed_payload = payload("registry.test/team/signed", &images.single.digest);
    let single_signature = push.signature(
        "team/signed",
        &images.single.digest,
        &[
            // A layer signed by someone else first: one valid layer is enough.
            (signed_payload.clone(), sign(&stranger, &signed_payload)),
            (signed_payload.clone(), sign(&org, &signed_payload)),
        ],
    );
    push.index("team/multi", "2", &images.multi);
    let multi_payload = payload("registry.test/team/multi", &images.multi.digest);
    let multi_signature = push.signature(
        "team/multi",
        &images.multi.digest,
        &[(multi_payload.clone(), sign(&org, &multi_payload))],
    );
    // Not signed at all; signed by another key; a valid signature by the org's key whose
    // payload names another image (a signature copied across).
    push.image("team/unsigned", "1", &other);
    push.image("team/forged", "1", &other);
    let forged = payload("registry.test/team/forged", &other.digest);
    push.signature(
        "team/forged",
        &other.digest,
        &[(forged.clone(), sign(&stranger, &forged))],
    );
    push.image("team/copied", "1", &other);
    push.signature(
        "team/copied",
        &other.digest,
        &[(signed_payload.clone(), sign(&org, &signed_payload))],
    );

    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[[proxy]]\nname = \"team-registry\"\nformat = \"oci\"\nupstream = \"http://127.0.0.1:{port}\"\nhost = \"registry.test\"\n"
        ),
    )
    .unwrap();
    let spec = dir.join("spec.yaml");
    std::fs::write(
        &spec,
        "images:\n  - ref: registry.test/team/signed:1\n    verify: {cosign_key: keys/org.pub}\n  - ref: registry.test/team/multi:2\n    platforms: [linux/arm64]\n    verify: {cosign_key: keys/org.pub}\n",
    )
    .unwrap();
    let bundle = dir.join("signed.bundle");
    succeeds(&[
        "bundle",
        "create",
        "--spec",
        s(&spec),
        "--out",
        s(&bundle),
        "--config",
        s(&config),
    ]);
    succeeds(&["bundle", "verify", s(&bundle)]);
    let index = BundleIndex::parse(succeeds(&["bundle", "index", s(&bundle)]).as_bytes()).unwrap();
    let entry = |subject: &str| {
        index
            .entries
            .iter()
            .find(|e| e.subject() == subject)
            .unwrap_or_else(|| panic!("no {subject} in {:#?}", index.entries))
    };
    let single_tag = format!(
        "registry.test/team/signed:{}",
        airlock_cosign::signature_tag(&images.single.digest)
    );
    let multi_tag = format!(
        "registry.test/team/multi:{}",
        airlock_cosign::signature_tag(&images.multi.digest)
    );
    for (tag, digest) in [
        (&single_tag, &single_signature),
        (&multi_tag, &multi_signature),
    ] {
        let sig = entry(tag);
        assert_eq!((sig.kind, &sig.digest), (Kind::Image, digest));
    }
    let payload_entries = index
        .entries
        .iter()
        .filter(|e| e.kind == Kind::Blob && e.media_type == airlock_cosign::SIMPLE_SIGNING)
        .count();
    // The single image's two layers carry the same payload, then the index's.
    assert_eq!(payload_entries, 3);
    assert_eq!(
        entry("registry.test/team/signed:1").digest,
        images.single.digest
    );
    let inspected = succeeds(&["bundle", "inspect", s(&bundle)]);
    assert!(inspected.contains(&single_tag), "{inspected}");

    // The isolated side reads the signature image out of the bundle by its tag, as any
    // OCI client would, and the signature checks again with the same key.
    let copied = dir.join("signature");
    run(Command::new(&skopeo).args([
        "copy",
        &format!("oci-archive:{}:{single_tag}", s(&bundle)),
        &format!("dir:{}", s(&copied)),
    ]));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(copied.join("manifest.json")).unwrap()).unwrap();
    let key = airlock_cosign::PublicKey::from_pem(
        &std::fs::read_to_string(dir.join("keys/org.pub")).unwrap(),
    )
    .unwrap();
    let layer = &manifest["layers"][1];
    let carried: Digest = layer["digest"].as_str().unwrap().parse().unwrap();
    let carried = std::fs::read(copied.join(carried.hex())).unwrap();
    airlock_cosign::check(
        &key,
        &carried,
        layer["annotations"][airlock_cosign::SIGNATURE_ANNOTATION]
            .as_str()
            .unwrap(),
        &images.single.digest,
    )
    .unwrap();

    // `import` places the signature image like any other: its tag is a plain tag.
    let gateway = dir.join("isolated.toml");
    std::fs::write(
        &gateway,
        format!(
            "data_dir = \"{}\"\n[[proxy]]\nname = \"team-registry\"\nformat = \"oci\"\nupstream = \"http://127.0.0.1:{port}\"\nhost = \"registry.test\"\noffline = true\n",
            s(&dir.join("isolated-data"))
        ),
    )
    .unwrap();
    let imported = succeeds(&[
        "bundle",
        "import",
        s(&bundle),
        "--config",
        s(&gateway),
        "--allow-unsigned",
    ]);
    assert!(
        imported.contains(&format!("imported {} items", index.entries.len())),
        "{imported}"
    );

    // Each refusal names the image and why, and leaves no bundle (nor partial volume).
    for (n, (reference, key, expected)) in [
        (
            "registry.test/team/unsigned:1",
            "keys/org.pub",
            format!(
                "it is not signed: the registry has no cosign signature tag {}",
                airlock_cosign::signature_tag(&other.digest)
            ),
        ),
        (
            "registry.test/team/forged:1",
            "keys/org.pub",
            "layer 1: the signature does not verify with the key".to_owned(),
        ),
        (
            "registry.test/team/copied:1",
            "keys/org.pub",
            format!(
                "is for the manifest {}, not for this image's {}",
                images.single.digest, other.digest
            ),
        ),
        (
            "registry.test/team/signed:1",
            "keys/broken.pub",
            "is not a PEM file".to_owned(),
        ),
        (
            "registry.test/team/signed:1",
            "keys/absent.pub",
            "cannot read the cosign key".to_owned(),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let spec = dir.join(format!("refused-{n}.yaml"));
        // The signed image first, so the refusal comes after bytes were written.
        std::fs::write(
            &spec,
            format!(
                "images:\n  - ref: registry.test/team/signed:1\n    verify: {{cosign_key: keys/org.pub}}\n  - ref: {reference}\n    verify: {{cosign_key: {key}}}\n"
            ),
        )
        .unwrap();
        let out = dir.join(format!("refused-{n}.bundle"));
        let error = fails(&[
            "bundle",
            "create",
            "--spec",
            s(&spec),
            "--out",
            s(&out),
            "--config",
            s(&config),
            "--split",
            "4KiB",
        ]);
        assert!(
            error.contains(&format!("{reference}: refused by its cosign verification")),
            "{reference}: {error}"
        );
        assert!(error.contains(&expected), "{reference}: {error}");
        assert_eq!(
            files_named(dir, &format!("refused-{n}.bundle")),
            Vec::<String>::new()
        );
    }
}
