//! `airlock bundle import` into a RUNNING gateway, through its admin API: accounts made
//! with `airlock admin hash-password`, the CLI's upload served at once to skopeo and curl,
//! and the endpoint's refusals (no or wrong credentials, too many failures, a damaged
//! bundle, a body cut mid-way, more than the disk holds), each leaving the store as it was.

mod bundles;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use airlock_testkit::require_tool;
use airlock_types::Digest;
use bundles::gateway::*;
use bundles::*;

const PASSWORD: &str = "s3cret-pw";
/// `admin:s3cret-pw` and `admin:wrong`, base64.
const GOOD_AUTH: &str = "Basic YWRtaW46czNjcmV0LXB3";
const BAD_AUTH: &str = "Basic YWRtaW46d3Jvbmc=";

/// `airlock admin hash-password` with `input` on stdin.
fn hash_password(input: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["admin", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn admin_table() -> String {
    let output = hash_password(&format!("{PASSWORD}\n"));
    assert!(output.status.success(), "{output:?}");
    let hash = String::from_utf8(output.stdout).unwrap();
    let hash = hash.trim();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    format!("[admin]\nusers = [{{ name = \"admin\", password_hash = \"{hash}\" }}]\n")
}

/// `airlock bundle import` uploading as `admin` with `password` in the environment.
fn upload(bundle: &Path, config: &Path, password: &str, trust: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args([
            "bundle",
            "import",
            s(bundle),
            "--config",
            s(config),
            "--user",
            "admin",
        ])
        .args(trust)
        .env("AIRLOCK_ADMIN_PASSWORD", password)
        .output()
        .unwrap()
}

/// One raw HTTP/1.1 request: `head` lines, then `body`; the answer (status line, headers,
/// body). A refusal before the body is read closes the connection, so refused requests
/// send no body (unread bytes would turn the close into a reset that loses the answer).
fn raw_request(port: u16, head: &str, body: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Sends `head` announcing more than `body`, then ends the connection mid-body.
fn cut_upload(port: u16, head: &str, body: &[u8]) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    stream.shutdown(std::net::Shutdown::Both).unwrap();
}

fn post_head(port: u16, auth: &str, query: &str, length: u64) -> String {
    format!(
        "POST /api/v1/bundles/import?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {auth}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )
}

fn status(answer: &str) -> &str {
    answer.split(' ').nth(1).unwrap_or("")
}

#[test]
fn hash_password_refuses_an_empty_password() {
    for input in ["", "\n"] {
        let output = hash_password(input);
        assert!(!output.status.success(), "{input:?} was hashed");
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(error.contains("is empty"), "{error}");
    }
}

#[test]
fn config_check_refuses_a_hash_that_is_not_argon2id() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("airlock.toml");
    std::fs::write(
        &config,
        "[admin]\nusers = [{ name = \"admin\", password_hash = \"$2b$12$abcdefghijklmnopqrstuv\" }]\n",
    )
    .unwrap();
    let error = fails(&["config", "check", s(&config)]);
    assert!(
        error.contains("[admin] user \"admin\": password_hash is refused")
            && error.contains("airlock admin hash-password"),
        "{error}"
    );
    std::fs::write(&config, format!("{}role = \"x\"\n", admin_table())).unwrap();
    let error = fails(&["config", "check", s(&config)]);
    assert!(error.contains("unknown field `role`"), "{error}");
}

#[test]
fn a_running_gateway_imports_through_its_admin_api_and_serves_at_once() {
    let skopeo = require_tool("skopeo", "skopeo");
    let curl = require_tool("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (secret, public) = keygen(dir, "site");
    let items = fixture();
    let bundle = dir.join("site.bundle");
    write_bundle(&items, &bundle, Some(&secret));
    let port = free_port();
    let config = gateway_config(dir, port, &admin_table());
    let data = dir.join("data");
    let _gateway = start_gateway(dir, &config, port);
    let store = data.join("store-v1");

    // Before the import the offline gateway has nothing: a 404 the raw proxy may remember.
    let file_url = format!("http://127.0.0.1:{port}/repository/k3s-files/{FILE_PATH}");
    let missing =
        run(Command::new(&curl).args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &file_url]));
    assert_eq!(String::from_utf8_lossy(&missing), "404");

    // A wrong password: refused before anything is sent, nothing imported.
    let before = listing(&store);
    let wrong = upload(&bundle, &config, "wrong", &["--trust-key", s(&public)]);
    assert!(!wrong.status.success());
    let error = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        error.contains("is running, so the bundle went to its admin API at http://127.0.0.1:")
            && error.contains("wrong user name or password"),
        "{error}"
    );
    assert_eq!(listing(&store), before);

    let out = upload(&bundle, &config, PASSWORD, &["--trust-key", s(&public)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("imported 11 items"), "{stdout}");
    assert!(stdout.contains("is valid"), "{stdout}");
    let again = upload(&bundle, &config, PASSWORD, &["--trust-key", s(&public)]);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(stdout.contains("nothing to import"), "{stdout}");
    assert!(
        std::fs::read_dir(data.join("uploads"))
            .unwrap()
            .next()
            .is_none(),
        "an upload was left behind"
    );

    // Served right away by the gateway that was running all along.
    let source = format!("docker://127.0.0.1:{port}/docker-hub/library/app:1");
    let raw = run(Command::new(&skopeo).args(["inspect", "--tls-verify=false", "--raw", &source]));
    assert_eq!(Digest::of(&raw), items.single.digest);
    let out_dir = dir.join("single");
    run(Command::new(&skopeo).args([
        "copy",
        "--src-tls-verify=false",
        &source,
        &format!("dir:{}", s(&out_dir)),
    ]));
    let layer = Digest::of(&items.single.layers[0]);
    assert_eq!(
        std::fs::read(out_dir.join(layer.hex())).unwrap(),
        items.single.layers[0]
    );
    let body = run(Command::new(&curl).args(["-sSf", &file_url]));
    assert!(
        body == items.file,
        "the raw file differs ({} bytes)",
        body.len()
    );
}

#[test]
fn the_admin_api_refuses_without_changing_the_store() {
    let curl = require_tool("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (secret, public) = keygen(dir, "site");
    let items = fixture();
    let bundle = dir.join("site.bundle");
    write_bundle(&items, &bundle, Some(&secret));
    let bytes = std::fs::read(&bundle).unwrap();
    let port = free_port();
    let config = gateway_config(dir, port, &admin_table());
    let data = dir.join("data");
    let _gateway = start_gateway(dir, &config, port);
    let url = format!("http://127.0.0.1:{port}/api/v1/bundles/import?allow_unsigned=true");
    let before = listing(&data.join("store-v1"));
    let unchanged = || {
        assert_eq!(listing(&data.join("store-v1")), before, "the store changed");
    };

    // No credentials: 401 with the challenge; not a failed login.
    let headers = run(Command::new(&curl).args([
        "-s",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-X",
        "POST",
        "--data-binary",
        &format!("@{}", s(&bundle)),
        &url,
    ]));
    let headers = String::from_utf8_lossy(&headers).to_lowercase();
    assert!(headers.starts_with("http/1.1 401"), "{headers}");
    assert!(
        headers.contains("www-authenticate: basic realm=\"airlock\""),
        "{headers}"
    );
    unchanged();

    // A wrong password: 401, nothing imported (failure 1).
    let answer = raw_request(
        port,
        &post_head(port, BAD_AUTH, "allow_unsigned=true", 0),
        b"",
    );
    assert_eq!(status(&answer), "401", "{answer}");
    assert!(answer.contains("wrong user name or password"), "{answer}");
    unchanged();

    // A damaged bundle with the right login: 422 with the reason, nothing imported.
    let mut damaged = bytes.clone();
    let at = damaged
        .windows(64)
        .position(|w| w == &items.file[..64])
        .expect("the file's bytes are in the archive");
    damaged[at + 1000] ^= 0x01;
    let answer = raw_request(
        port,
        &post_head(
            port,
            GOOD_AUTH,
            &format!(
                "trust_key={}",
                urlencode(&std::fs::read_to_string(&public).unwrap())
            ),
            damaged.len() as u64,
        ),
        &damaged,
    );
    assert_eq!(status(&answer), "422", "{answer}");
    assert!(answer.contains("does not match its digest"), "{answer}");
    unchanged();

    // More than the disk holds: 507 before the body is read.
    let answer = raw_request(
        port,
        &post_head(port, GOOD_AUTH, "allow_unsigned=true", 1 << 60),
        b"",
    );
    assert_eq!(status(&answer), "507", "{answer}");

    // A body that stops mid-way: nothing visible, the temporary file gone.
    cut_upload(
        port,
        &post_head(port, GOOD_AUTH, "allow_unsigned=true", bytes.len() as u64),
        &bytes[..bytes.len() / 2],
    );
    let started = Instant::now();
    while !std::fs::read_to_string(dir.join("airlock.log"))
        .unwrap()
        .contains("bundle upload ended early")
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the cut upload was not noticed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    while std::fs::read_dir(data.join("uploads")).is_ok_and(|mut d| d.next().is_some()) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the cut upload was left behind"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    unchanged();

    // Four more wrong passwords (five in the minute), then even the right one waits.
    for _ in 0..4 {
        let answer = raw_request(
            port,
            &post_head(port, BAD_AUTH, "allow_unsigned=true", 0),
            b"",
        );
        assert_eq!(status(&answer), "401", "{answer}");
    }
    let answer = raw_request(
        port,
        &post_head(port, GOOD_AUTH, "allow_unsigned=true", 0),
        b"",
    );
    assert_eq!(status(&answer), "429", "{answer}");
    let retry = answer
        .lines()
        .find_map(|l| {
            l.to_lowercase()
                .strip_prefix("retry-after: ")
                .map(str::to_owned)
        })
        .expect("a Retry-After header");
    assert!(
        (1..=60).contains(&retry.trim().parse::<u64>().unwrap()),
        "{retry}"
    );
    unchanged();
    let log = std::fs::read_to_string(dir.join("airlock.log")).unwrap();
    assert!(log.contains("admin login failed"), "{log}");
    assert!(!log.contains("wrong\""), "a password reached the log");
    assert!(!log.contains(PASSWORD), "a password reached the log");
}

/// Percent-encodes a query value.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
