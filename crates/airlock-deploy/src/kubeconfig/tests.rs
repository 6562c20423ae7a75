use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use base64::Engine as _;

use super::*;
use airlock_remote::fake::Fake;

fn machine(name: &str, address: &str) -> Machine {
    Machine {
        name: name.into(),
        address: address.into(),
        user: None,
        port: 22,
        connection: "ssh".into(),
        escalate: None,
        ssh_args: Vec::new(),
        private_key: None,
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

const FAKE_PEM: &[u8] = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

/// A kubeconfig shaped as K3s writes it.
fn k3s_kubeconfig(ca_pem: &[u8]) -> String {
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: https://127.0.0.1:6443\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\nkind: Config\npreferences: {{}}\nusers:\n- name: default\n  user:\n    client-certificate-data: Y2xpZW50\n    client-key-data: a2V5\n",
        b64(ca_pem)
    )
}

#[test]
fn the_server_is_pointed_at_the_address_and_everything_else_kept() {
    let original = k3s_kubeconfig(FAKE_PEM);
    let rewritten = rewrite(&original, "https://10.1.2.3:6443").unwrap();
    let changed: Vec<(&str, &str)> = original
        .lines()
        .zip(rewritten.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        changed,
        [(
            "    server: https://127.0.0.1:6443",
            "    server: https://10.1.2.3:6443"
        )]
    );
    assert_eq!(original.lines().count(), rewritten.lines().count());
}

#[test]
fn insecure_skip_tls_verify_is_dropped() {
    let original = k3s_kubeconfig(FAKE_PEM).replace(
        "    server:",
        "    insecure-skip-tls-verify: true\n    server:",
    );
    let rewritten = rewrite(&original, "https://node1:6443").unwrap();
    assert!(!rewritten.contains("insecure"), "{rewritten}");
    assert!(rewritten.contains("    server: https://node1:6443\n"));
    assert!(rewritten.contains(&b64(FAKE_PEM)));
}

#[test]
fn kubeconfigs_it_cannot_verify_with_are_refused() {
    let no_ca = k3s_kubeconfig(FAKE_PEM).replace(
        &format!("    certificate-authority-data: {}\n", b64(FAKE_PEM)),
        "",
    );
    let cases = [
        (no_ca, "no `certificate-authority-data`"),
        (
            k3s_kubeconfig(FAKE_PEM).replace(&b64(FAKE_PEM), "not base64!"),
            "not base64",
        ),
        (k3s_kubeconfig(b"hello"), "not a PEM certificate"),
        ("apiVersion: v1\nkind: Config\n".into(), "no clusters"),
        ("clusters: []\n".into(), "no clusters"),
        (
            "clusters:\n- cluster:\n    server: [a]\n".into(),
            "has no `server`",
        ),
        ("clusters: [".into(), "kubeconfig:"),
        (
            format!("{}1{}", "[".repeat(500), "]".repeat(500)),
            "kubeconfig:1:",
        ),
    ];
    for (text, expected) in cases {
        let error = rewrite(&text, "https://a:6443").unwrap_err();
        assert!(
            error.contains(expected),
            "{expected:?} not in {error:?} for {text:.80}"
        );
    }
}

#[test]
fn api_urls_bracket_ipv6() {
    assert_eq!(api_url(&machine("n", "10.0.0.1")), "https://10.0.0.1:6443");
    assert_eq!(api_url(&machine("n", "fd00::1")), "https://[fd00::1]:6443");
    assert_eq!(
        api_url(&machine("n", "node1.lan")),
        "https://node1.lan:6443"
    );
}

#[test]
fn the_default_location_is_scouts() {
    let m = machine("server1", "10.0.0.5");
    assert_eq!(
        default_local_path(Path::new("/src/scout/ansible/inventory.yaml"), None, &m),
        Path::new("/src/scout/.kube/scout/10.0.0.5/config")
    );
    assert_eq!(
        default_local_path(Path::new("/site/inventory.yaml"), None, &m),
        Path::new("/site/.kube/scout/10.0.0.5/config")
    );
    assert_eq!(
        default_local_path(Path::new("inventory.yaml"), None, &m),
        Path::new("./.kube/scout/10.0.0.5/config")
    );
    assert_eq!(
        default_local_path(Path::new("/x/ansible/inv.yaml"), Some("/repo"), &m),
        Path::new("/repo/.kube/scout/10.0.0.5/config")
    );
}

#[test]
fn fetch_reads_the_servers_file_and_says_when_it_is_missing() {
    let fake = Fake::new("server1");
    let error = fetch(
        &fake,
        airlock_site::site::DEFAULT_KUBECONFIG,
        "https://s:6443",
    )
    .unwrap_err();
    assert!(matches!(error, KubeconfigError::Missing { .. }), "{error}");
    assert!(error.to_string().contains("airlock deploy"), "{error}");

    fake.put(
        airlock_site::site::DEFAULT_KUBECONFIG,
        k3s_kubeconfig(FAKE_PEM),
    );
    let text = fetch(
        &fake,
        airlock_site::site::DEFAULT_KUBECONFIG,
        "https://s:6443",
    )
    .unwrap();
    assert!(text.contains("    server: https://s:6443\n"));

    fake.put(airlock_site::site::DEFAULT_KUBECONFIG, b"\xff\xfe".to_vec());
    let error = fetch(
        &fake,
        airlock_site::site::DEFAULT_KUBECONFIG,
        "https://s:6443",
    )
    .unwrap_err();
    assert!(error.to_string().contains("not UTF-8"), "{error}");
}

#[test]
fn the_copy_is_the_users_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".kube/scout/10.0.0.5/config");
    write(&path, "first\n").unwrap();
    write(&path, "second\n").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "second\n");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["config"]);
}

/// A CA and a server certificate it signed for `names`.
fn pki(names: &[&str]) -> (String, rcgen::Certificate, rcgen::KeyPair) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let leaf = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    (ca.pem(), leaf, key)
}

/// A TLS server on loopback answering every request with 401, as the API does without
/// credentials; serves at most `connections` connections.
fn api_server(leaf: &rcgen::Certificate, key: &rcgen::KeyPair, connections: usize) -> u16 {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(stream) = stream else { continue };
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, stream);
            let mut buf = [0u8; 4096];
            if tls.read(&mut buf).is_ok() {
                let _ = tls.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                let _ = tls.flush();
            }
        }
    });
    port
}

#[test]
fn verify_accepts_the_servers_own_ca_for_the_address_it_names() {
    let (ca, leaf, key) = pki(&["127.0.0.1", "server1"]);
    let port = api_server(&leaf, &key, 1);
    let text = rewrite(
        &k3s_kubeconfig(ca.as_bytes()),
        &format!("https://127.0.0.1:{port}"),
    )
    .unwrap();
    verify(&text).unwrap();
}

#[test]
fn verify_refuses_another_ca_and_a_certificate_for_other_names() {
    let (_, leaf, key) = pki(&["127.0.0.1"]);
    let (other_ca, _, _) = pki(&["127.0.0.1"]);
    let port = api_server(&leaf, &key, 1);
    let text = rewrite(
        &k3s_kubeconfig(other_ca.as_bytes()),
        &format!("https://127.0.0.1:{port}"),
    )
    .unwrap();
    let error = verify(&text).unwrap_err();
    assert!(error.contains("certificate"), "{error}");

    // The certificate K3s makes without `--tls-san`: it names neither this address nor
    // this name.
    let (ca, leaf, key) = pki(&["kubernetes", "localhost"]);
    let port = api_server(&leaf, &key, 1);
    let text = rewrite(
        &k3s_kubeconfig(ca.as_bytes()),
        &format!("https://127.0.0.1:{port}"),
    )
    .unwrap();
    let error = verify(&text).unwrap_err();
    assert!(error.contains("certificate"), "{error}");
}

#[test]
fn verify_says_when_nothing_answers() {
    let (ca, _, _) = pki(&["127.0.0.1"]);
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = rewrite(
        &k3s_kubeconfig(ca.as_bytes()),
        &format!("https://127.0.0.1:{port}"),
    )
    .unwrap();
    let error = verify(&text).unwrap_err();
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
}
