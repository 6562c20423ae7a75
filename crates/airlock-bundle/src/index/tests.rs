use std::time::{Duration, SystemTime};

use airlock_types::{Digest, media};

use super::*;

fn created() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn sample() -> BundleIndex {
    let manifest = Digest::of(b"manifest");
    let mut index = BundleIndex::new(created());
    index.entries = vec![
        Entry::oci(
            Kind::Image,
            "docker-hub",
            "docker.io/library/postgres:15",
            manifest.clone(),
            8,
            media::OCI_MANIFEST,
        ),
        Entry::oci(
            Kind::Blob,
            "docker-hub",
            "docker.io/library/postgres",
            Digest::of(b"config"),
            6,
            "application/vnd.oci.image.config.v1+json",
        ),
        Entry::file(
            "k3s-files",
            "k3s-io/k3s/releases/download/v1.31.4%2Bk3s1/k3s",
            Digest::of(b"k3s"),
            3,
            "application/octet-stream",
        ),
    ];
    index.entries[1].carried = false;
    index
}

fn json(index: &BundleIndex) -> serde_json::Value {
    serde_json::from_slice(&index.to_bytes()).unwrap()
}

fn parse_value(value: &serde_json::Value) -> Result<BundleIndex, IndexError> {
    BundleIndex::parse(&serde_json::to_vec(value).unwrap())
}

#[test]
fn round_trips_through_its_bytes() {
    let index = sample();
    let bytes = index.to_bytes();
    assert_eq!(BundleIndex::parse(&bytes).unwrap(), index);
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        text.contains(r#""created": "2027-01-15T08:00:00Z""#),
        "{text}"
    );
    assert!(text.contains(r#""kind": "file""#), "{text}");
    assert!(!text.contains(r#""reference": null"#), "{text}");
}

#[test]
fn refuses_another_version_before_reading_the_rest() {
    let mut value = json(&sample());
    value["version"] = 2.into();
    value["something_new"] = true.into();
    let error = parse_value(&value).unwrap_err();
    assert!(matches!(error, IndexError::UnsupportedVersion { found: 2 }));
    assert!(error.to_string().contains("version 2"), "{error}");

    value.as_object_mut().unwrap().remove("version");
    assert!(matches!(parse_value(&value), Err(IndexError::NoVersion)));
    assert!(matches!(
        BundleIndex::parse(b"{not json"),
        Err(IndexError::NotJson(_))
    ));
}

#[test]
fn refuses_unknown_fields_and_bad_values() {
    let mut value = json(&sample());
    value["entries"][0]["signed"] = true.into();
    let error = parse_value(&value).unwrap_err().to_string();
    assert!(error.contains("unknown field `signed`"), "{error}");

    let mut value = json(&sample());
    value["entries"][0]["kind"] = "chart".into();
    let error = parse_value(&value).unwrap_err().to_string();
    assert!(error.contains("chart"), "{error}");

    let mut value = json(&sample());
    value["entries"][0]["digest"] = "md5:abc".into();
    let error = parse_value(&value).unwrap_err().to_string();
    assert!(error.contains("md5"), "{error}");

    let mut value = json(&sample());
    value["created"] = "yesterday".into();
    let error = parse_value(&value).unwrap_err().to_string();
    assert!(error.contains("RFC 3339"), "{error}");
}

fn entry_error(edit: impl FnOnce(&mut Entry)) -> String {
    let mut index = sample();
    edit(&mut index.entries[0]);
    let error = BundleIndex::parse(&index.to_bytes()).unwrap_err();
    assert!(
        matches!(error, IndexError::BadEntry { number: 1, .. }),
        "{error}"
    );
    error.to_string()
}

#[test]
fn every_kind_needs_its_own_subject() {
    let error = entry_error(|e| e.path = Some("x".into()));
    assert!(
        error.contains("needs a `reference` and no `path`"),
        "{error}"
    );
    let error = entry_error(|e| e.reference = None);
    assert!(error.contains("needs a `reference`"), "{error}");
    let error = entry_error(|e| e.kind = Kind::File);
    assert!(error.contains("a file entry needs a `path`"), "{error}");
    let error = entry_error(|e| e.reference = Some("postgres:15".into()));
    assert!(error.contains("does not name its registry"), "{error}");
    let error = entry_error(|e| e.reference = Some("docker.io/library/postgres".into()));
    assert!(error.contains("neither a tag nor a digest"), "{error}");
    let error = entry_error(|e| {
        e.kind = Kind::Manifest;
    });
    assert!(error.contains("must name its digest"), "{error}");
    let error = entry_error(|e| e.kind = Kind::Blob);
    assert!(error.contains("must be a repository"), "{error}");
    let error = entry_error(|e| e.proxy.clear());
    assert!(error.contains("proxy name is empty"), "{error}");
    let error = entry_error(|e| {
        e.reference = Some(format!(
            "docker.io/library/postgres@{}",
            Digest::of(b"other")
        ));
    });
    assert!(error.contains("but the entry's digest is"), "{error}");
}

#[test]
fn file_paths_stay_under_their_proxy() {
    for path in [
        "/etc/passwd",
        "a/../b",
        "a//b",
        "./a",
        "a/.",
        "a\\b",
        "a\nb",
        "a/",
    ] {
        let mut index = sample();
        index.entries[2].path = Some(path.to_owned());
        let error = BundleIndex::parse(&index.to_bytes())
            .unwrap_err()
            .to_string();
        assert!(error.contains("entry 3 (file"), "{path:?}: {error}");
    }
    // The proxy's root (a raw proxy's upstream URL itself) is a file, never a package.
    let mut index = sample();
    index.entries[2].path = Some(String::new());
    BundleIndex::parse(&index.to_bytes()).unwrap();
    index.entries[2].kind = Kind::Package;
    let error = BundleIndex::parse(&index.to_bytes())
        .unwrap_err()
        .to_string();
    assert!(error.contains("entry 3 (package"), "{error}");
}

#[test]
fn one_tag_names_one_digest_and_one_digest_one_size() {
    let mut index = sample();
    let mut retagged = index.entries[0].clone();
    retagged.digest = Digest::of(b"another manifest");
    index.entries.push(retagged);
    let error = BundleIndex::parse(&index.to_bytes()).unwrap_err();
    assert!(
        matches!(
            error,
            IndexError::Conflict {
                first: 1,
                second: 4,
                ..
            }
        ),
        "{error}"
    );

    let mut index = sample();
    let mut resized = index.entries[1].clone();
    resized.reference = Some("ghcr.io/org/app".into());
    resized.size += 1;
    index.entries.push(resized);
    let error = BundleIndex::parse(&index.to_bytes()).unwrap_err();
    assert!(
        matches!(
            error,
            IndexError::SizeConflict {
                first: 2,
                second: 4,
                ..
            }
        ),
        "{error}"
    );

    // The same blob in two repositories, or an exact duplicate, is fine.
    let mut index = sample();
    let mut shared = index.entries[1].clone();
    shared.reference = Some("ghcr.io/org/app".into());
    index.entries.push(shared);
    index.entries.push(index.entries[0].clone());
    BundleIndex::parse(&index.to_bytes()).unwrap();
}

#[test]
fn carried_lists_each_digest_once() {
    let mut index = sample();
    index.entries.push(index.entries[2].clone());
    let carried = index.carried();
    assert_eq!(carried.len(), 2);
    assert_eq!(carried[&Digest::of(b"k3s")], 3);
    assert_eq!(index.digests().len(), 3);
}
