use super::*;

fn parse(text: &str) -> Result<Spec, String> {
    Spec::parse(text, Path::new("spec.yaml")).map_err(|e| e.to_string())
}

#[test]
fn reads_images_and_files() {
    let hex = "a".repeat(64);
    let spec = parse(&format!(
        "images:\n  - docker.io/library/postgres:15\n  - ref: ghcr.io/org/app:1\n    platforms: [linux/arm64]\nfiles:\n  - url: https://example.invalid/k3s\n    sha256: \"{hex}\"\n"
    ))
    .unwrap();
    assert_eq!(spec.images.len(), 2);
    assert_eq!(spec.images[1].platforms, ["linux/arm64"]);
    assert_eq!(spec.files[0].sha256.hex(), hex);
    assert_eq!(spec.images[1].verify, None);
}

#[test]
fn a_cosign_key_is_found_next_to_the_spec() {
    let text = "images:\n  - ref: ghcr.io/org/app:1\n    verify: {cosign_key: keys/org.pub}\n  - ref: ghcr.io/org/b:1\n    verify:\n      cosign_key: /etc/keys/b.pub\n";
    let spec = Spec::parse(text, Path::new("/srv/bundles/spec.yaml")).unwrap();
    let keys: Vec<_> = spec
        .images
        .iter()
        .map(|i| i.verify.as_ref().unwrap().cosign_key.clone())
        .collect();
    assert_eq!(
        keys,
        [
            PathBuf::from("/srv/bundles/keys/org.pub"),
            PathBuf::from("/etc/keys/b.pub")
        ]
    );
}

#[test]
fn refuses_what_it_cannot_carry_by_name() {
    for (text, expected) in [
        (
            "python:\n  requirements: absent-requirements.txt\n",
            "cannot read the Python lock",
        ),
        (
            "python:\n  proxy: p\n",
            "spec.yaml:2: python: needs `requirements`",
        ),
        ("rpms:\n  proxy: el9\n", "needs `packages`"),
        ("rpms:\n  packages: [../x]\n", "not a plain name"),
        ("rpms:\n  packages: [a, a]\n", "listed twice"),
        (
            "rpms:\n  packages: [a]\n  repos: [../up/]\n",
            "below the proxy",
        ),
        (
            "rpms:\n  packages: [a]\n  repos: [/abs/]\n",
            "below the proxy",
        ),
        ("rpms:\n  packages: [a]\n  gpg: x\n", "unknown key `gpg`"),
        (
            "rpms:\n  packages: [a]\n  keys: [../k]\n",
            "must be a file below the proxy",
        ),
        (
            "rpms:\n  packages: [a]\n  keys: [keys/]\n",
            "must be a file below the proxy",
        ),
        (
            "rpms:\n  packages: [a]\n  keys: [\"k?x=1\"]\n",
            "must be a file below the proxy",
        ),
        ("rpms: [1]\n", "a mapping with `packages`"),
        ("charts:\n  - {proxy: c, name: x}\n", "needs `version`"),
        ("charts:\n  - {name: x, version: 1}\n", "needs `proxy`"),
        (
            "charts:\n  - {proxy: c, name: x/y, version: 1}\n",
            "not a plain name",
        ),
        (
            "charts:\n  - {proxy: c, name: x, version: 1}\n  - {proxy: c, name: x, version: 1}\n",
            "spec.yaml:3: charts: x 1 is listed twice",
        ),
        ("charts: {proxy: c}\n", "`charts` must be a list"),
        (
            "images:\n  - ref: ghcr.io/a/b:1\n    verify: {}\n",
            "`verify` needs `cosign_key`",
        ),
        (
            "images:\n  - ref: ghcr.io/a/b:1\n    verify: {key: k.pub}\n",
            "unknown key `verify.key`",
        ),
        (
            "images:\n  - ref: ghcr.io/a/b:1\n    verify: k.pub\n",
            "must be a mapping",
        ),
        ("images:\n  - postgres:15\n", "does not name its registry"),
        (
            "files:\n  - url: https://example.invalid/x\n",
            "needs `sha256`",
        ),
        (
            "files:\n  - url: ftp://example.invalid/x\n    sha256: x\n",
            "not http",
        ),
        ("imagess: []\n", "spec.yaml:1: unknown key `imagess`"),
        (
            "helm: []\n",
            "expected images, files, python, rpms, charts, k3s",
        ),
        (
            "images:\n  - ref: ghcr.io/a/b:1\n    platforms: [amd64]\n",
            "not os/arch",
        ),
    ] {
        let error = parse(text).unwrap_err();
        assert!(error.contains(expected), "{text}: {error}");
    }
}

#[test]
fn reads_package_sections_with_the_lock_beside_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("locks")).unwrap();
    let hex = "b".repeat(64);
    std::fs::write(
        dir.path().join("locks/requirements.txt"),
        format!("alpha==1.0 --hash=sha256:{hex}\n"),
    )
    .unwrap();
    let path = dir.path().join("spec.yaml");
    let spec = Spec::parse(
        "python:\n  requirements: locks/requirements.txt\n  proxy: pypi-proxy\n\
         rpms:\n  - proxy: el9\n    packages: [k3s-selinux, container-selinux]\n    repos: [el/9, ./]\n    arch: aarch64\n\
         \x20 - packages: one\n    keys: [public.key, k/gpg]\n\
         charts:\n  - {proxy: bitnami, name: postgresql, version: 15.5.0}\n",
        &path,
    )
    .unwrap();
    assert_eq!(spec.python.len(), 1);
    assert_eq!(
        spec.python[0].requirements,
        dir.path().join("locks/requirements.txt")
    );
    assert_eq!(spec.python[0].proxy.as_deref(), Some("pypi-proxy"));
    assert_eq!(spec.python[0].pins[0].version, "1.0");
    assert_eq!(spec.rpms[0].packages, ["k3s-selinux", "container-selinux"]);
    assert_eq!(spec.rpms[0].repos, ["el/9/", ""]);
    assert_eq!(spec.rpms[0].arch, ["aarch64"]);
    assert_eq!(spec.rpms[1].proxy, None);
    assert_eq!(spec.rpms[1].repos, [""]);
    assert_eq!(spec.rpms[1].keys, ["public.key", "k/gpg"]);
    assert!(spec.rpms[0].keys.is_empty());
    assert_eq!(spec.rpms[1].arch, [std::env::consts::ARCH]);
    assert_eq!(
        spec.charts,
        [ChartSpec {
            proxy: "bitnami".into(),
            name: "postgresql".into(),
            version: "15.5.0".into()
        }]
    );
}

#[test]
fn a_bad_lock_is_reported_at_its_own_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("requirements.txt"),
        "# pinned\nrequests==2.31.0\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("empty.txt"), "# nothing\n").unwrap();
    let path = dir.path().join("spec.yaml");
    let error = Spec::parse("python:\n  requirements: requirements.txt\n", &path)
        .unwrap_err()
        .to_string();
    let lock = dir.path().join("requirements.txt");
    assert!(
        error.starts_with(&format!("{}:2: ", lock.display())),
        "{error}"
    );
    assert!(error.contains("--require-hashes"), "{error}");
    let error = Spec::parse("python: {requirements: empty.txt}\n", &path)
        .unwrap_err()
        .to_string();
    assert!(error.contains("pins no package"), "{error}");
}
