//! The bundle format end to end: write with `BundleWriter`, read and verify with `Bundle`,
//! and every refusal a damaged or forged bundle must meet.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use airlock_bundle::layout::{self, REF_NAME};
use airlock_bundle::testing::{carry_image, carry_index};
use airlock_bundle::{Bundle, BundleError, BundleWriter, Entry, Kind, SecretKey, verify};
use airlock_testkit::{Image, Index, Platform};
use airlock_types::Digest;

const AMD64: Platform = Platform {
    os: "linux",
    arch: "amd64",
};
const ARM64: Platform = Platform {
    os: "linux",
    arch: "arm64",
};

struct Fixture {
    image: Image,
    index: Index,
    file: Vec<u8>,
    expected: Digest,
}

fn fixture() -> Fixture {
    Fixture {
        image: Image::random(&[3000, 700]),
        index: Index::new(vec![
            (AMD64, Image::from_layers(vec![vec![1u8; 900]], AMD64)),
            (ARM64, Image::from_layers(vec![vec![2u8; 900]], ARM64)),
        ]),
        file: (0..5000u32).map(|i| (i * 7 % 256) as u8).collect(),
        expected: Digest::of(b"a layer the target already holds"),
    }
}

fn created() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn write(
    fixture: &Fixture,
    path: &Path,
    split: Option<u64>,
    key: Option<&SecretKey>,
) -> Vec<PathBuf> {
    let mut writer = BundleWriter::create(path, split, created()).unwrap();
    carry_image(
        &mut writer,
        "docker-hub",
        "docker.io/library/app:1",
        &fixture.image,
    )
    .unwrap();
    carry_index(&mut writer, "ghcr", "ghcr.io/org/multi:2", &fixture.index).unwrap();
    let file = Entry::file(
        "k3s-files",
        "k3s-io/k3s/releases/download/v1.31.4%2Bk3s1/k3s",
        Digest::of(&fixture.file),
        fixture.file.len() as u64,
        "application/octet-stream",
    );
    writer.carry(file, fixture.file.as_slice()).unwrap();
    let expected = Entry::oci(
        Kind::Blob,
        "docker-hub",
        "docker.io/library/app",
        fixture.expected.clone(),
        33,
        "application/vnd.oci.image.layer.v1.tar",
    );
    writer.expect(expected).unwrap();
    writer.finish(key).unwrap().volumes
}

fn verify_error(path: &Path, trust: Option<&airlock_bundle::PublicKey>) -> BundleError {
    let bundle = match Bundle::open(path) {
        Ok(bundle) => bundle,
        Err(error) => return error,
    };
    verify(&bundle, trust).expect_err("the bundle must be refused")
}

#[test]
fn a_written_bundle_reads_back_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = fixture();
    let key = SecretKey::generate();
    let path = dir.path().join("b.tar");
    let volumes = write(&fixture, &path, None, Some(&key));
    assert_eq!(volumes, std::slice::from_ref(&path));

    let bundle = Bundle::open(&path).unwrap();
    let catalog = bundle.catalog().unwrap();
    let index = &catalog.index;
    assert_eq!(index.created, created());
    let count = |kind| index.entries.iter().filter(|e| e.kind == kind).count();
    assert_eq!(count(Kind::Image), 2);
    assert_eq!(count(Kind::Manifest), 2);
    assert_eq!(count(Kind::Blob), 3 + 4 + 1);
    assert_eq!(count(Kind::File), 1);
    let expected = index
        .entries
        .iter()
        .find(|e| e.digest == fixture.expected)
        .unwrap();
    assert!(!expected.carried);
    assert!(
        index
            .entries
            .iter()
            .filter(|e| e.digest != fixture.expected)
            .all(|e| e.carried)
    );
    assert_eq!(catalog.signature.as_ref().unwrap().key(), key.public().id());

    let oci: serde_json::Value = serde_json::from_slice(&catalog.oci_index).unwrap();
    let mut names: Vec<&str> = oci["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["annotations"][REF_NAME].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["docker.io/library/app:1", "ghcr.io/org/multi:2"]);

    let mut streamed = Vec::new();
    let verified =
        airlock_bundle::verify::verify_with(&bundle, Some(&key.public()), |digest, _, bytes| {
            let mut all = Vec::new();
            bytes.read_to_end(&mut all).unwrap();
            streamed.push((digest.clone(), all));
            Ok(())
        })
        .unwrap();
    assert_eq!(verified.trusted_key, Some(key.public().id()));
    // Manifest, config and 2 layers; index, 2 children with a config and a layer each; file.
    assert_eq!(verified.blobs, 4 + 7 + 1);
    assert!(
        streamed
            .iter()
            .all(|(digest, bytes)| Digest::of(bytes) == *digest)
    );
    assert!(streamed.iter().any(|(_, bytes)| *bytes == fixture.file));
}

#[test]
fn split_volumes_join_and_their_loss_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = fixture();
    let path = dir.path().join("b.tar");
    let volumes = write(&fixture, &path, Some(4096), None);
    assert!(volumes.len() >= 4, "{volumes:?}");
    assert!(volumes[1].to_string_lossy().ends_with("b.tar.001"));
    verify(&Bundle::open(&path).unwrap(), None).unwrap();

    // The last volume cut short.
    let last = volumes.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    let original = std::fs::read(last).unwrap();
    std::fs::write(last, &original[..(len as usize) / 2]).unwrap();
    let error = verify_error(&path, None);
    assert!(matches!(error, BundleError::Truncated { .. }), "{error}");
    assert!(error.to_string().contains("truncated"), "{error}");
    let error = Bundle::open(&path).unwrap().catalog().unwrap_err();
    assert!(matches!(error, BundleError::Truncated { .. }), "{error}");

    // The last volume missing altogether.
    std::fs::remove_file(last).unwrap();
    let error = verify_error(&path, None);
    assert!(
        error
            .to_string()
            .contains(&last.file_name().unwrap().to_string_lossy().into_owned()),
        "{error}"
    );

    // A middle volume cut short, or missing.
    std::fs::write(last, &original).unwrap();
    let middle = &volumes[1];
    let bytes = std::fs::read(middle).unwrap();
    std::fs::write(middle, &bytes[..1000]).unwrap();
    let error = verify_error(&path, None);
    assert!(
        matches!(error, BundleError::VolumeSize { actual: 1000, .. }),
        "{error}"
    );
    std::fs::remove_file(middle).unwrap();
    let error = verify_error(&path, None);
    assert!(
        matches!(error, BundleError::VolumeMissing { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("b.tar.001 is missing"),
        "{error}"
    );
}

#[test]
fn one_flipped_byte_in_a_blob_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = fixture();
    let path = dir.path().join("b.tar");
    write(&fixture, &path, None, None);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(fixture.file.len())
        .position(|w| w == fixture.file.as_slice())
        .unwrap();
    bytes[at + 1234] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let error = verify_error(&path, None);
    match &error {
        BundleError::DigestMismatch { expected, .. } => {
            assert_eq!(*expected, Digest::of(&fixture.file));
        }
        other => panic!("{other}"),
    }
    assert!(
        error.to_string().contains("does not match its digest"),
        "{error}"
    );
    // Reading the index alone does not hash blobs, so it still succeeds.
    Bundle::open(&path).unwrap().catalog().unwrap();
}

#[test]
fn signatures_bind_the_index_to_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = fixture();
    let key = SecretKey::generate();
    let path = dir.path().join("b.tar");
    write(&fixture, &path, None, Some(&key));

    let other = SecretKey::generate().public();
    let error = verify_error(&path, Some(&other));
    assert!(matches!(error, BundleError::WrongKey { .. }), "{error}");
    assert!(
        error.to_string().contains(&key.public().id().to_string()),
        "{error}"
    );

    // The index altered after signing (same length, so the archive stays well formed).
    let mut bytes = std::fs::read(&path).unwrap();
    let at = find(&bytes, b"\"created\": \"2027").unwrap() + 13;
    bytes[at] = b'3';
    std::fs::write(&path, &bytes).unwrap();
    let error = verify_error(&path, Some(&key.public()));
    assert!(matches!(error, BundleError::BadSignature { .. }), "{error}");
    assert!(error.to_string().contains("altered"), "{error}");

    let unsigned = dir.path().join("unsigned.tar");
    write(&fixture, &unsigned, None, None);
    let error = verify_error(&unsigned, Some(&key.public()));
    assert!(matches!(error, BundleError::Unsigned), "{error}");
    verify(&Bundle::open(&unsigned).unwrap(), None).unwrap();
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Rewrites the archive at `path` member by member; `edit` returns the members to write in
/// place of each one (none drops it).
fn rewrite(path: &Path, mut edit: impl FnMut(&str, Vec<u8>) -> Vec<(String, Vec<u8>)>) {
    let mut members = Vec::new();
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        members.extend(edit(&name, bytes));
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
fn the_archive_must_hold_exactly_what_the_index_lists() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = fixture();
    let path = dir.path().join("b.tar");
    let file_digest = Digest::of(&fixture.file);

    // An index naming a carried blob the archive lacks.
    write(&fixture, &path, None, None);
    rewrite(&path, |name, bytes| {
        if name == layout::blob_path(&file_digest) {
            vec![]
        } else {
            vec![(name.to_owned(), bytes)]
        }
    });
    let error = verify_error(&path, None);
    assert!(
        matches!(&error, BundleError::MissingBlob { digest, .. } if *digest == file_digest),
        "{error}"
    );
    assert!(
        error.to_string().contains("file k3s-io/k3s/releases"),
        "{error}"
    );

    // A blob the index does not list.
    write(&fixture, &path, None, None);
    let stowaway = b"not in the index".to_vec();
    rewrite(&path, |name, bytes| {
        let mut out = vec![(name.to_owned(), bytes)];
        if name == layout::OCI_LAYOUT {
            out.push((layout::blob_path(&Digest::of(&stowaway)), stowaway.clone()));
        }
        out
    });
    let error = verify_error(&path, None);
    assert!(matches!(error, BundleError::UnlistedBlob { .. }), "{error}");

    // A member a bundle never has, and a member twice.
    for extra in ["manifest.json", layout::OCI_LAYOUT] {
        write(&fixture, &path, None, None);
        rewrite(&path, |name, bytes| {
            let mut out = vec![(name.to_owned(), bytes.clone())];
            if name == layout::OCI_LAYOUT {
                out.push((extra.to_owned(), bytes));
            }
            out
        });
        let error = verify_error(&path, None);
        assert!(
            matches!(
                error,
                BundleError::UnexpectedMember { .. } | BundleError::DuplicateMember { .. }
            ),
            "{extra}: {error}"
        );
        assert!(error.to_string().contains(extra), "{error}");
    }

    // An OCI index.json naming another image than airlock's index.
    write(&fixture, &path, None, None);
    rewrite(&path, |name, bytes| {
        let bytes = if name == layout::OCI_INDEX {
            String::from_utf8(bytes)
                .unwrap()
                .replace("app:1", "app:666")
                .into_bytes()
        } else {
            bytes
        };
        vec![(name.to_owned(), bytes)]
    });
    let error = verify_error(&path, None);
    assert!(
        matches!(error, BundleError::OciIndexDisagrees(_)),
        "{error}"
    );
    assert!(error.to_string().contains("app:666"), "{error}");

    // No airlock index at all: a plain OCI archive is not a bundle.
    write(&fixture, &path, None, None);
    rewrite(&path, |name, bytes| {
        if name == layout::INDEX {
            vec![]
        } else {
            vec![(name.to_owned(), bytes)]
        }
    });
    let error = verify_error(&path, None);
    assert!(
        matches!(
            error,
            BundleError::MissingMember {
                path: layout::INDEX
            }
        ),
        "{error}"
    );
}

#[test]
fn the_writer_refuses_bytes_that_are_not_what_the_entry_says() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.tar");
    let entry = |bytes: &[u8], size: u64| {
        Entry::file(
            "raw",
            "a/b",
            Digest::of(bytes),
            size,
            "application/octet-stream",
        )
    };

    let mut writer = BundleWriter::create(&path, Some(1024), created()).unwrap();
    let error = writer
        .carry(entry(b"right", 5), b"wrong".as_slice())
        .unwrap_err();
    assert!(
        matches!(error, BundleError::DigestMismatch { .. }),
        "{error}"
    );
    assert!(matches!(
        writer.carry(entry(b"x", 1), b"x".as_slice()),
        Err(BundleError::WriterFailed)
    ));
    drop(writer);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing is left behind"
    );

    for (size, given) in [(5, b"shor".as_slice()), (5, b"longer".as_slice())] {
        let mut writer = BundleWriter::create(&path, None, created()).unwrap();
        let error = writer.carry(entry(b"right", size), given).unwrap_err();
        assert!(
            matches!(error, BundleError::SizeMismatch { expected: 5, .. }),
            "{error}"
        );
    }

    let mut writer = BundleWriter::create(&path, None, created()).unwrap();
    let mut bad = entry(b"x", 1);
    bad.path = Some("../etc/passwd".into());
    let error = writer.carry(bad, b"x".as_slice()).unwrap_err();
    assert!(error.to_string().contains("../etc/passwd"), "{error}");
}

/// A caller that checks a blob's digest itself spares the scan a second hash, and answers
/// for it: one that stops reading early is refused, and saying so after the first read
/// changes nothing.
#[test]
fn a_caller_that_checks_the_digest_itself_must_read_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = fixture();
    let path = dir.path().join("b.tar");
    write(&fixture, &path, None, None);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(fixture.file.len())
        .position(|w| w == fixture.file.as_slice())
        .unwrap();
    bytes[at + 1234] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let file = Digest::of(&fixture.file);
    let scan = |on_file: &dyn Fn(&mut airlock_bundle::BlobBytes<'_>) -> Result<(), BundleError>| {
        Bundle::open(&path)
            .unwrap()
            .scan(|digest, _, bytes| {
                if *digest == file {
                    on_file(bytes)
                } else {
                    Ok(())
                }
            })
            .map(|_| ())
    };
    // The scan's own hash finds the flipped byte.
    assert!(matches!(
        scan(&|_| Ok(())),
        Err(BundleError::DigestMismatch { .. })
    ));
    // A caller that takes over the check and vouches for every byte is believed (the
    // import's store writer is such a caller: it refuses a mismatch itself).
    scan(&|bytes| {
        bytes.checked_by_caller();
        std::io::copy(bytes, &mut std::io::sink()).unwrap();
        Ok(())
    })
    .unwrap();
    // One that stops early has checked nothing: refused, though the rest reads fine.
    let error = scan(&|bytes| {
        bytes.checked_by_caller();
        let mut some = [0; 100];
        bytes.read_exact(&mut some).unwrap();
        Ok(())
    })
    .unwrap_err();
    assert!(
        error.to_string().contains("could not be read through"),
        "{error}"
    );
    // Too late once reading began: the scan still hashes, and finds the flipped byte.
    assert!(matches!(
        scan(&|bytes| {
            let mut one = [0; 1];
            bytes.read_exact(&mut one).unwrap();
            bytes.checked_by_caller();
            Ok(())
        }),
        Err(BundleError::DigestMismatch { .. })
    ));
}
