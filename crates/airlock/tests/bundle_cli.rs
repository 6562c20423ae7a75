//! `airlock bundle keygen|inspect|verify|index` as an operator runs them, and real skopeo
//! reading images out of a bundle by their full reference (the bundle is an OCI archive).
//!
//! Bundles are written with the library's `BundleWriter` (what `bundle create` will use),
//! holding images the tests build: a single-platform image and a two-platform index.

mod bundles;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use airlock_bundle::testing::{carry_image, carry_index};
use airlock_bundle::{BundleIndex, BundleWriter, Entry, SecretKey, layout};
use airlock_testkit::require_tool;
use airlock_types::Digest;
use bundles::*;

fn write_bundle(images: &Fixture, path: &Path, split: Option<u64>, key: Option<&Path>) {
    let key = key.map(|k| SecretKey::read(k).unwrap());
    let mut writer = BundleWriter::create(path, split, SystemTime::now()).unwrap();
    carry_image(&mut writer, "docker-hub", SINGLE, &images.single).unwrap();
    carry_index(&mut writer, "ghcr", MULTI, &images.multi).unwrap();
    let file = Entry::file(
        "k3s-files",
        FILE_PATH,
        Digest::of(&images.file),
        images.file.len() as u64,
        "application/octet-stream",
    );
    writer.carry(file, images.file.as_slice()).unwrap();
    writer.finish(key.as_ref()).unwrap();
}

fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let base = dir.join(name);
    succeeds(&["bundle", "keygen", "--out", s(&base)]);
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

#[test]
fn skopeo_reads_images_from_a_signed_bundle_by_full_reference() {
    let skopeo = require_tool("skopeo", "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (secret, public) = keygen(dir, "site");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = fails(&["bundle", "keygen", "--out", s(&dir.join("site"))]);
    assert!(again.contains("already exists"), "{again}");

    let images = fixture();
    let bundle = dir.join("site.bundle");
    write_bundle(&images, &bundle, None, Some(&secret));

    let verified = succeeds(&["bundle", "verify", s(&bundle), "--trust-key", s(&public)]);
    assert!(verified.contains(": ok: "), "{verified}");
    assert!(verified.contains("is valid"), "{verified}");
    let unchecked = succeeds(&["bundle", "verify", s(&bundle)]);
    assert!(unchecked.contains("NOT checked"), "{unchecked}");

    let summary = succeeds(&["bundle", "inspect", s(&bundle)]);
    let key_id = SecretKey::read(&secret).unwrap().public().id().to_string();
    for expected in [
        SINGLE,
        MULTI,
        FILE_PATH,
        "k3s-files",
        "manifest",
        key_id.as_str(),
    ] {
        assert!(summary.contains(expected), "no {expected:?} in:\n{summary}");
    }

    let printed = succeeds(&["bundle", "index", s(&bundle)]);
    let index = BundleIndex::parse(printed.as_bytes()).unwrap();
    // Image, config, layer; index, and per platform a manifest, config and layer; file.
    assert_eq!(index.entries.len(), 3 + 1 + 2 * 3 + 1);

    // The single image, by its full reference: same manifest, every blob checked by skopeo.
    let source = format!("oci-archive:{}:{SINGLE}", s(&bundle));
    let raw = run(Command::new(&skopeo).args(["inspect", "--raw", &source]));
    assert_eq!(Digest::of(&raw), images.single.digest);
    let out = dir.join("single");
    run(Command::new(&skopeo).args(["copy", &source, &format!("dir:{}", s(&out))]));
    let manifest = std::fs::read(out.join("manifest.json")).unwrap();
    assert_eq!(Digest::of(&manifest), images.single.digest);
    let layer = Digest::of(&images.single.layers[0]);
    assert_eq!(
        std::fs::read(out.join(layer.hex())).unwrap(),
        images.single.layers[0]
    );

    // The index with every platform, and one platform of it.
    let source = format!("oci-archive:{}:{MULTI}", s(&bundle));
    let out = dir.join("multi");
    run(Command::new(&skopeo).args(["copy", "--all", &source, &format!("dir:{}", s(&out))]));
    let manifest = std::fs::read(out.join("manifest.json")).unwrap();
    assert_eq!(Digest::of(&manifest), images.multi.digest);
    let out = dir.join("arm64");
    run(Command::new(&skopeo).args([
        "--override-arch",
        "arm64",
        "copy",
        &source,
        &format!("dir:{}", s(&out)),
    ]));
    let manifest = std::fs::read(out.join("manifest.json")).unwrap();
    assert_eq!(Digest::of(&manifest), images.multi.images[1].1.digest);

    // A name the bundle does not hold is not found.
    let missing = format!("oci-archive:{}:docker.io/library/other:1", s(&bundle));
    let output = Command::new(&skopeo)
        .args(["inspect", "--raw", &missing])
        .output()
        .unwrap();
    assert!(!output.status.success());
}

/// Rewrites the archive member by member, dropping those `keep` refuses.
fn drop_members(path: &Path, keep: impl Fn(&str) -> bool) {
    let mut members = Vec::new();
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        if keep(&name) {
            members.push((name, bytes));
        }
    }
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in members {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, &name, bytes.as_slice())
            .unwrap();
    }
    builder.into_inner().unwrap();
}

#[test]
fn verify_refuses_each_kind_of_damage_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (secret, public) = keygen(dir, "site");
    let (_, stranger) = keygen(dir, "stranger");
    let images = fixture();
    let bundle = dir.join("b.bundle");
    let verify = |trust: Option<&Path>| {
        let mut args = vec!["bundle", "verify", s(&bundle)];
        if let Some(trust) = trust {
            args.extend(["--trust-key", s(trust)]);
        }
        fails(&args)
    };

    // One byte flipped in a carried file.
    write_bundle(&images, &bundle, None, Some(&secret));
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes
        .windows(images.file.len())
        .position(|w| w == images.file.as_slice())
        .unwrap();
    bytes[at + 10_000] ^= 0x40;
    std::fs::write(&bundle, &bytes).unwrap();
    let error = verify(Some(&public));
    let digest = Digest::of(&images.file).to_string();
    assert!(error.contains("failed verification"), "{error}");
    assert!(
        error.contains(&format!("blob {digest} does not match its digest")),
        "{error}"
    );

    // A truncated last volume, and a missing one.
    write_bundle(&images, &bundle, Some(8192), Some(&secret));
    succeeds(&["bundle", "verify", s(&bundle), "--trust-key", s(&public)]);
    let volumes: Vec<PathBuf> = (1..1000)
        .map(|n| PathBuf::from(format!("{}.{n:03}", s(&bundle))))
        .take_while(|p| p.exists())
        .collect();
    assert!(volumes.len() >= 2, "{volumes:?}");
    let last = volumes.last().unwrap();
    let whole = std::fs::read(last).unwrap();
    std::fs::write(last, &whole[..whole.len() - 700]).unwrap();
    let error = verify(Some(&public));
    assert!(
        error.contains("ends before its end-of-archive marker"),
        "{error}"
    );
    std::fs::remove_file(last).unwrap();
    let error = verify(None);
    assert!(error.contains(s(last)), "{error}");
    for volume in &volumes[..volumes.len() - 1] {
        std::fs::remove_file(volume).unwrap();
    }

    // Signed by another key; not signed at all; the index changed after signing.
    write_bundle(&images, &bundle, None, Some(&secret));
    let error = verify(Some(&stranger));
    assert!(error.contains("not by the trusted key"), "{error}");
    write_bundle(&images, &bundle, None, None);
    let error = verify(Some(&public));
    assert!(error.contains("not signed"), "{error}");
    write_bundle(&images, &bundle, None, Some(&secret));
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes
        .windows(FILE_PATH.len())
        .rposition(|w| w == FILE_PATH.as_bytes())
        .unwrap();
    bytes[at] = b'K';
    std::fs::write(&bundle, &bytes).unwrap();
    let error = verify(Some(&public));
    assert!(error.contains("does not match its index"), "{error}");

    // The index lists a carried blob the archive does not hold.
    write_bundle(&images, &bundle, None, Some(&secret));
    let layer = layout::blob_path(&Digest::of(&images.single.layers[0]));
    drop_members(&bundle, |name| name != layer);
    let error = verify(Some(&public));
    assert!(
        error.contains("as carried, but the archive does not hold it"),
        "{error}"
    );
    assert!(error.contains("docker.io/library/app"), "{error}");

    // A key file of the wrong kind is named as such.
    let error = verify(Some(&secret));
    assert!(error.contains("this is a secret key"), "{error}");
}

#[test]
fn bundle_help_lists_its_commands() {
    let help = succeeds(&["bundle", "--help"]);
    for command in ["keygen", "inspect", "verify", "index"] {
        assert!(help.contains(command), "{help}");
    }
    let help = succeeds(&["bundle", "verify", "--help"]);
    assert!(help.contains("--trust-key"), "{help}");
}

/// `bundle create` from a spec: a token-auth registry and a file server as the proxies'
/// upstreams; the bundle verifies with its key and skopeo reads the images from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_fetches_images_and_files_through_the_configured_upstreams() {
    use airlock_testkit::{AuthMode, FakeFiles, FakeRegistry};
    let skopeo = require_tool("skopeo", "skopeo");
    let registry = FakeRegistry::start(AuthMode::Token).await;
    let files = FakeFiles::start().await;
    let images = fixture();
    registry.push_image("team/app", "1", &images.single);
    registry.push_index("team/multi", "2", &images.multi);
    files.put("releases/v1/k3s", "application/octet-stream", &images.file);

    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_owned();
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[[proxy]]\nname = \"team-registry\"\nformat = \"oci\"\nupstream = \"{}\"\nhost = \"registry.test\"\n\n\
             [[proxy]]\nname = \"releases\"\nformat = \"raw\"\nupstream = \"{}releases\"\n",
            registry.url(),
            files.url()
        ),
    )
    .unwrap();
    let spec = dir.join("spec.yaml");
    let file_sha = Digest::of(&images.file);
    std::fs::write(
        &spec,
        format!(
            "images:\n  - registry.test/team/app:1\n  - ref: registry.test/team/multi:2\n    platforms: [linux/arm64]\n\
             files:\n  - url: {}releases/v1/k3s\n    sha256: \"{}\"\n",
            files.url(),
            file_sha.hex()
        ),
    )
    .unwrap();
    let by_digest = format!("registry.test/team/app@{}", images.single.digest);
    std::fs::write(
        &spec,
        format!(
            "images:\n  - {by_digest}\n{}",
            std::fs::read_to_string(&spec)
                .unwrap()
                .replacen("images:\n", "", 1)
        ),
    )
    .unwrap();
    let absent = dir.join("absent.yaml");
    std::fs::write(&absent, "images:\n  - registry.test/team/absent:1\n").unwrap();
    let unknown = dir.join("unknown.yaml");
    std::fs::write(&unknown, "images:\n  - quay.io/org/app:1\n").unwrap();
    let bad_spec = dir.join("bad.yaml");
    std::fs::write(
        &bad_spec,
        format!(
            "files:\n  - url: {}releases/v1/k3s\n    sha256: \"{}\"\n",
            files.url(),
            "0".repeat(64)
        ),
    )
    .unwrap();

    let result = tokio::task::spawn_blocking(move || {
        let (secret, public) = keygen(&dir, "site");
        let bundle = dir.join("created.bundle");
        let args = [
            "bundle",
            "create",
            "--spec",
            s(&spec),
            "--out",
            s(&bundle),
            "--config",
            s(&config),
            "--sign-key",
            s(&secret),
            "--split",
            "16KiB",
        ];
        succeeds(&args);
        let verified = succeeds(&["bundle", "verify", s(&bundle), "--trust-key", s(&public)]);
        let index =
            BundleIndex::parse(succeeds(&["bundle", "index", s(&bundle)]).as_bytes()).unwrap();
        // A wrong sha256 in the spec stops create, and leaves no bundle behind.
        let refused = dir.join("refused.bundle");
        let error = fails(&[
            "bundle",
            "create",
            "--spec",
            s(&bad_spec),
            "--out",
            s(&refused),
            "--config",
            s(&config),
        ]);
        let leftovers = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("refused")
            })
            .count();
        // An image the registry does not have; a registry no proxy serves.
        let create = |spec: &Path| {
            let out = dir.join("other.bundle");
            fails(&[
                "bundle",
                "create",
                "--spec",
                s(spec),
                "--out",
                s(&out),
                "--config",
                s(&config),
            ])
        };
        let missing = create(&absent);
        assert!(missing.contains("registry.test/team/absent:1"), "{missing}");
        assert!(missing.contains("404"), "{missing}");
        let unserved = create(&unknown);
        assert!(
            unserved.contains("no proxy in the configuration serves registry quay.io"),
            "{unserved}"
        );
        (dir, bundle, verified, index, error, leftovers)
    })
    .await
    .unwrap();
    let (dir, bundle, verified, index, error, leftovers) = result;
    assert!(verified.contains("is valid"), "{verified}");
    assert!(error.contains("does not match its digest"), "{error}");
    assert_eq!(leftovers, 0);
    assert!(
        Path::new(&format!("{}.001", s(&bundle))).exists(),
        "split into volumes"
    );
    let file = index
        .entries
        .iter()
        .find(|e| e.kind == airlock_bundle::Kind::File)
        .unwrap();
    assert_eq!(
        (file.proxy.as_str(), file.subject(), &file.digest),
        ("releases", "v1/k3s", &file_sha)
    );
    let pinned = index
        .entries
        .iter()
        .find(|e| e.subject() == by_digest)
        .unwrap();
    assert_eq!(pinned.digest, images.single.digest);
    // Only the arm64 child of the index was carried.
    assert!(
        index
            .entries
            .iter()
            .any(|e| e.digest == images.multi.images[1].1.digest)
    );
    assert!(
        !index
            .entries
            .iter()
            .any(|e| e.digest == images.multi.images[0].1.digest)
    );

    // skopeo reads the single image from the joined volumes by its full reference.
    let joined = dir.join("joined.tar");
    let mut whole = std::fs::read(&bundle).unwrap();
    for n in 1..1000 {
        let Ok(bytes) = std::fs::read(format!("{}.{n:03}", s(&bundle))) else {
            break;
        };
        whole.extend(bytes);
    }
    std::fs::write(&joined, whole).unwrap();
    let source = format!("oci-archive:{}:registry.test/team/app:1", s(&joined));
    let raw = tokio::task::spawn_blocking(move || {
        run(Command::new(skopeo).args(["inspect", "--raw", &source]))
    })
    .await
    .unwrap();
    assert_eq!(Digest::of(&raw), images.single.digest);
}
