//! Hosted projects with real clients: skopeo pushes single- and multi-arch images into a
//! `[[hosted]]` project and pulls them back byte-identical; the test's own HTTP calls drive
//! the protocol's corners (chunks out of order, a wrong digest, a manifest naming a blob
//! nobody pushed, tag pagination, deletes, logins).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use airlock_testkit::{
    AuthMode, FakeRegistry, Image, Index, Killed, Platform, free_port, noise, require_tool,
    serve_airlock,
};
use airlock_types::Digest;
use reqwest::StatusCode;

const PASSWORD: &str = "push-s3cret";
/// The secret of the robot `ci`, which may push to `scout/*` and nothing else.
const ROBOT_SECRET: &str = "robot-s3cret";

/// A gateway with two hosted projects, `scout` (anonymous pulls, no deletes) and `lab`
/// (logins for everything, deletes allowed), beside a proxy for `docker.io` whose
/// upstream is a closed loopback port.
struct Gateway {
    _process: Killed,
    port: u16,
    http: reqwest::Client,
}

impl Gateway {
    // Paths go into TOML through `{:?}`, which quotes them as TOML basic strings need.
    #[allow(clippy::unnecessary_debug_formatting)]
    fn start(dir: &Path) -> Self {
        Self::with_upstream(dir, "http://127.0.0.1:9/")
    }

    /// The gateway, with `hub`'s upstream at `upstream`.
    fn with_upstream(dir: &Path, upstream: &str) -> Self {
        Self::with(dir, upstream, "5m")
    }

    /// The gateway, with `hub`'s upstream at `upstream` and tokens lasting `token_ttl`.
    #[allow(clippy::unnecessary_debug_formatting)]
    fn with(dir: &Path, upstream: &str, token_ttl: &str) -> Self {
        let port = free_port();
        let hash = airlock_config::hash_password(PASSWORD.as_bytes()).unwrap();
        let robot_hash = airlock_config::hash_password(ROBOT_SECRET.as_bytes()).unwrap();
        let config = dir.join("airlock.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:{port}\"\n[tls]\nmode = \"off\"\n\
                 [admin]\nusers = [{{ name = \"admin\", password_hash = \"{hash}\" }}]\n\
                 token_ttl = \"{token_ttl}\"\n\
                 [[robot]]\nname = \"ci\"\nsecret_hash = \"{robot_hash}\"\npush = [\"scout/*\"]\n\
                 [[proxy]]\nname = \"hub\"\nformat = \"oci\"\nhost = \"docker.io\"\nupstream = \"{upstream}\"\n\
                 [[hosted]]\nname = \"scout\"\nanonymous_pull = true\n\
                 [[hosted]]\nname = \"lab\"\ndelete = true\n",
                dir.join("data"),
            ),
        )
        .unwrap();
        let process = serve_airlock(
            Path::new(env!("CARGO_BIN_EXE_airlock")),
            &config,
            &dir.join("airlock.log"),
            port,
        );
        Self {
            _process: process,
            port,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn docker(&self, reference: &str) -> String {
        format!("docker://127.0.0.1:{}/{reference}", self.port)
    }

    /// A request as the admin, with a token for the repository `path` names (and the one
    /// a mount takes from, and the catalog).
    async fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut scopes = vec!["registry:catalog:*".to_owned()];
        if let Some(name) = repository_of(path) {
            scopes.push(format!("repository:{name}:*"));
        }
        if let Some((_, from)) = path.split_once("from=") {
            scopes.push(format!("repository:{from}:pull"));
        }
        let token = self.token(Some(("admin", PASSWORD)), &scopes).await;
        self.http.request(method, self.url(path)).bearer_auth(token)
    }

    /// [`Self::admin`]'s request, sent.
    async fn as_admin(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        self.admin(method, path).await.send().await.unwrap()
    }

    /// An anonymous `GET` of `path`.
    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// A token from `/service/token` for `scopes`, as `login` (anonymous with `None`).
    async fn token(&self, login: Option<(&str, &str)>, scopes: &[String]) -> String {
        let response = self.token_response(login, scopes).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: serde_json::Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    async fn token_response(
        &self,
        login: Option<(&str, &str)>,
        scopes: &[String],
    ) -> reqwest::Response {
        let query: Vec<(&str, &str)> = std::iter::once(("service", "airlock"))
            .chain(scopes.iter().map(|s| ("scope", s.as_str())))
            .collect();
        let mut request = self.http.get(self.url("/service/token")).query(&query);
        if let Some((user, secret)) = login {
            request = request.basic_auth(user, Some(secret));
        }
        request.send().await.unwrap()
    }

    /// Uploads `bytes` as one blob of `name` (monolithic `POST ?digest=`).
    async fn push_blob(&self, name: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::of(bytes);
        let response = self
            .admin(
                reqwest::Method::POST,
                &format!("/v2/{name}/blobs/uploads/?digest={digest}"),
            )
            .await
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        digest
    }

    /// Pushes `manifest` (an OCI image manifest) under `reference`.
    async fn put_manifest(
        &self,
        name: &str,
        reference: &str,
        manifest: &[u8],
    ) -> reqwest::Response {
        self.admin(
            reqwest::Method::PUT,
            &format!("/v2/{name}/manifests/{reference}"),
        )
        .await
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_vec())
        .send()
        .await
        .unwrap()
    }
}

fn skopeo() -> Command {
    let mut command = Command::new(require_tool("skopeo", "skopeo"));
    command.arg("--insecure-policy");
    command
}

fn run_ok(command: &mut Command) -> Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn layout(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// The OCI error code of an error response.
async fn error_code(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.unwrap();
    body["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The repository a registry API path names: what comes before `/blobs/`,
/// `/manifests/`, `/tags/` or `/referrers/`.
fn repository_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v2/")?;
    ["/blobs/", "/manifests/", "/tags/", "/referrers/"]
        .iter()
        .find_map(|marker| rest.find(marker).map(|at| &rest[..at]))
}

/// The blob files of an OCI layout, by digest.
fn layout_blob(layout: &Path, digest: &Digest) -> Vec<u8> {
    std::fs::read(layout.join("blobs/sha256").join(digest.hex())).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_pushes_an_image_and_pulls_it_back_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let gateway = Gateway::start(dir);
    let image = Image::from_layers(
        vec![noise(3 << 20, 1), noise(200_000, 2)],
        Platform::LINUX_AMD64,
    );
    let source = layout(dir, "source");
    image.write_oci_layout(&source, "v1").unwrap();

    run_ok(
        skopeo()
            .args(["copy", "--preserve-digests", "--dest-tls-verify=false"])
            .args(["--dest-creds", &format!("admin:{PASSWORD}")])
            .arg(format!("oci:{}:v1", source.display()))
            .arg(gateway.docker("scout/team/app:v1")),
    );

    // Pulled back anonymously (scout allows it): the manifest byte for byte, every blob.
    let raw = run_ok(
        skopeo()
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(gateway.docker("scout/team/app:v1")),
    )
    .stdout;
    assert_eq!(raw, image.manifest, "the manifest as pushed");
    let pulled = layout(dir, "pulled");
    run_ok(
        skopeo()
            .args(["copy", "--preserve-digests", "--src-tls-verify=false"])
            .arg(gateway.docker("scout/team/app:v1"))
            .arg(format!("oci:{}:v1", pulled.display())),
    );
    assert_eq!(layout_blob(&pulled, &image.digest), image.manifest);
    for blob in image.blobs() {
        assert_eq!(layout_blob(&pulled, &Digest::of(blob)), blob);
    }
    // By digest too, with the pushed media type and digest.
    let response = gateway
        .get(&format!("/v2/scout/team/app/manifests/{}", image.digest))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["docker-content-digest"],
        image.digest.to_string().as_str()
    );
    assert_eq!(response.headers()["content-type"], image.media_type);

    let tags: serde_json::Value = gateway
        .get("/v2/scout/team/app/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    // A containerd mirror request for docker.io's scout/team/app is the proxy's, not the
    // hosted project's (its upstream is down here).
    let mirrored = gateway
        .get("/v2/scout/team/app/tags/list?ns=docker.io")
        .await;
    assert_eq!(mirrored.status(), StatusCode::BAD_GATEWAY);
    let catalog: serde_json::Value = gateway.get("/v2/_catalog").await.json().await.unwrap();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["scout/team/app"])
    );
    let status = gateway.get("/").await;
    let status = status.text().await.unwrap();
    assert!(
        status.contains("/v2/scout/… (anonymous pulls)")
            && status.contains("/v2/lab/… (pulls need a login)"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_pushes_a_multi_arch_index_whole() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let gateway = Gateway::start(dir);
    let arm64 = Platform {
        os: "linux",
        arch: "arm64",
    };
    let index = Index::new(vec![
        (
            Platform::LINUX_AMD64,
            Image::from_layers(vec![noise(100_000, 3)], Platform::LINUX_AMD64),
        ),
        (arm64, Image::from_layers(vec![noise(100_000, 4)], arm64)),
    ]);
    let source = layout(dir, "source");
    index.write_oci_layout(&source, "multi").unwrap();
    run_ok(
        skopeo()
            .args([
                "copy",
                "--all",
                "--preserve-digests",
                "--dest-tls-verify=false",
            ])
            .args(["--dest-creds", &format!("admin:{PASSWORD}")])
            .arg(format!("oci:{}:multi", source.display()))
            .arg(gateway.docker("lab/app:multi")),
    );
    let raw = run_ok(
        skopeo()
            .args(["inspect", "--raw", "--tls-verify=false"])
            .args(["--creds", &format!("admin:{PASSWORD}")])
            .arg(gateway.docker("lab/app:multi")),
    )
    .stdout;
    assert_eq!(raw, index.manifest);
    let pulled = layout(dir, "pulled");
    run_ok(
        skopeo()
            .args([
                "copy",
                "--all",
                "--preserve-digests",
                "--src-tls-verify=false",
            ])
            .args(["--src-creds", &format!("admin:{PASSWORD}")])
            .arg(gateway.docker("lab/app:multi"))
            .arg(format!("oci:{}:multi", pulled.display())),
    );
    for (_, image) in &index.images {
        assert_eq!(layout_blob(&pulled, &image.digest), image.manifest);
        for blob in image.blobs() {
            assert_eq!(layout_blob(&pulled, &Digest::of(blob)), blob);
        }
    }
}

/// A push without a token meets a Bearer challenge naming the token endpoint and the
/// scope; credentials go to the token endpoint only; a token grants what the account may
/// have and no more (an anonymous token pulls where pulls are open; the robot `ci` pushes
/// to `scout/*` and not to `lab`); refused pushes leave nothing behind.
#[tokio::test(flavor = "multi_thread")]
async fn pushes_need_a_token_that_grants_them() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let gateway = Gateway::start(dir);
    let image = Image::from_layers(vec![noise(1000, 5)], Platform::LINUX_AMD64);
    let source = layout(dir, "source");
    image.write_oci_layout(&source, "v1").unwrap();
    let push = |reference: &str, creds: Option<&str>| {
        let mut command = skopeo();
        command.args(["copy", "--preserve-digests", "--dest-tls-verify=false"]);
        if let Some(creds) = creds {
            command.arg(format!("--dest-creds={creds}"));
        }
        command
            .arg(format!("oci:{}:v1", source.display()))
            .arg(gateway.docker(reference))
            .output()
            .unwrap()
    };

    let output = push("scout/app:v1", None);
    assert!(!output.status.success(), "a push without credentials");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.to_lowercase().contains("unauthorized"), "{stderr}");
    let realm = format!("Bearer realm=\"{}\"", gateway.url("/service/token"));
    let anonymous = gateway
        .http
        .post(gateway.url("/v2/scout/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        format!("{realm},service=\"airlock\",scope=\"repository:scout/app:pull,push\"").as_str()
    );
    assert_eq!(error_code(anonymous).await, "UNAUTHORIZED");
    // Basic credentials, even right ones, are for the token endpoint.
    let basic = gateway
        .http
        .post(gateway.url("/v2/scout/app/blobs/uploads/"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    assert!(
        basic.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with(&realm)
    );
    let wrong = gateway
        .token_response(
            Some(("admin", "wrong")),
            &["repository:scout/app:push".into()],
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let unknown = gateway
        .token_response(
            Some(("nobody", PASSWORD)),
            &["repository:scout/app:push".into()],
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);

    // An anonymous token pulls where pulls are open, and does not push.
    let scopes = [
        "repository:scout/app:pull,push".to_owned(),
        "repository:lab/app:pull".to_owned(),
    ];
    let anonymous_token = gateway.token(None, &scopes).await;
    let insufficient = gateway
        .http
        .post(gateway.url("/v2/scout/app/blobs/uploads/"))
        .bearer_auth(&anonymous_token)
        .send()
        .await
        .unwrap();
    assert_eq!(insufficient.status(), StatusCode::UNAUTHORIZED);
    let challenge = insufficient.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.ends_with(",error=\"insufficient_scope\""),
        "{challenge}"
    );
    let closed = gateway
        .http
        .get(gateway.url("/v2/lab/app/tags/list"))
        .bearer_auth(&anonymous_token)
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), StatusCode::UNAUTHORIZED);
    // The API root challenges clients without a token (so they know where to get one),
    // and an anonymous token is enough to pass it: Docker's registry-mirrors carry on.
    let ping = gateway.get("/v2/").await;
    assert_eq!(ping.status(), StatusCode::UNAUTHORIZED);
    assert!(
        ping.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with(&realm)
    );
    let ping = gateway
        .http
        .get(gateway.url("/v2/"))
        .bearer_auth(&anonymous_token)
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), StatusCode::OK);

    // The robot pushes to scout with skopeo, and not to lab.
    let ci = format!("ci:{ROBOT_SECRET}");
    let output = push("scout/tools/app:v1", Some(&ci));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = push("lab/app:v1", Some(&ci));
    assert!(!output.status.success(), "the robot pushed to lab");
    let robot_token = gateway
        .token(
            Some(("ci", ROBOT_SECRET)),
            &[
                "repository:lab/app:push".into(),
                "registry:catalog:*".into(),
            ],
        )
        .await;
    let refused = gateway
        .http
        .post(gateway.url("/v2/lab/app/blobs/uploads/"))
        .bearer_auth(&robot_token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    // Pulled back anonymously (scout is open) byte-identical.
    let pulled = layout(dir, "pulled");
    run_ok(
        skopeo()
            .args(["copy", "--preserve-digests", "--src-tls-verify=false"])
            .arg(gateway.docker("scout/tools/app:v1"))
            .arg(format!("oci:{}:v1", pulled.display())),
    );
    assert_eq!(
        layout_blob(&pulled, &Digest::of(&image.layers[0])),
        image.layers[0]
    );

    // Nothing was stored by the refused pushes; the catalog lists only what the caller may
    // see (the robot's token asked for it and did not get it).
    for name in ["scout/app", "lab/app"] {
        let tags = gateway
            .as_admin(reqwest::Method::GET, &format!("/v2/{name}/tags/list"))
            .await;
        assert_eq!(tags.status(), StatusCode::NOT_FOUND, "{name}");
        assert_eq!(error_code(tags).await, "NAME_UNKNOWN");
    }
    let catalog = |token: String| {
        let request = gateway
            .http
            .get(gateway.url("/v2/_catalog"))
            .bearer_auth(token);
        async move {
            request
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        catalog(robot_token).await["repositories"],
        serde_json::json!(["scout/tools/app"])
    );
}

/// A token is good for `[admin] token_ttl`, then refused with `invalid_token`; a token
/// signed by another gateway is refused the same way.
#[tokio::test(flavor = "multi_thread")]
async fn expired_and_foreign_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::with(dir.path(), "http://127.0.0.1:9/", "1s");
    let other_dir = tempfile::tempdir().unwrap();
    let other = Gateway::start(other_dir.path());
    let scopes = ["repository:lab/app:pull,push".to_owned()];
    let token = gateway.token(Some(("admin", PASSWORD)), &scopes).await;
    let foreign = other.token(Some(("admin", PASSWORD)), &scopes).await;
    let start_upload = |token: String| {
        gateway
            .http
            .post(gateway.url("/v2/lab/app/blobs/uploads/"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        start_upload(token.clone()).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    for refused in [foreign, {
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        token
    }] {
        let response = start_upload(refused).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let challenge = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.ends_with("error=\"invalid_token\""),
            "{challenge}"
        );
        assert_eq!(error_code(response).await, "UNAUTHORIZED");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_uploads_resume_refuse_gaps_and_store_only_what_matches_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(dir.path());
    let bytes = noise(30_000, 6);
    let digest = Digest::of(&bytes);

    let started = gateway
        .as_admin(reqwest::Method::POST, "/v2/scout/app/blobs/uploads/")
        .await;
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    assert_eq!(started.headers()["range"], "0-0");
    assert!(started.headers().contains_key("docker-upload-uuid"));
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with("/v2/scout/app/blobs/uploads/"),
        "{location}"
    );

    let first = gateway
        .admin(reqwest::Method::PATCH, &location)
        .await
        .header("content-range", "0-9999")
        .body(bytes[..10_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert_eq!(first.headers()["range"], "0-9999");
    // A chunk that leaves a gap.
    let gap = gateway
        .admin(reqwest::Method::PATCH, &location)
        .await
        .header("content-range", "20000-29999")
        .body(bytes[20_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(gap.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(gap.headers()["range"], "0-9999");
    assert_eq!(error_code(gap).await, "BLOB_UPLOAD_INVALID");
    // Where it stands, then the rest with the final PUT.
    let status = gateway.as_admin(reqwest::Method::GET, &location).await;
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(status.headers()["range"], "0-9999");
    let second = gateway
        .admin(reqwest::Method::PATCH, &location)
        .await
        .body(bytes[10_000..20_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::ACCEPTED);
    let finished = gateway
        .admin(reqwest::Method::PUT, &format!("{location}?digest={digest}"))
        .await
        .header("content-range", "20000-29999")
        .body(bytes[20_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(finished.status(), StatusCode::CREATED);
    assert_eq!(
        finished.headers()["location"],
        format!("/v2/scout/app/blobs/{digest}").as_str()
    );
    let blob = gateway.get(&format!("/v2/scout/app/blobs/{digest}")).await;
    assert_eq!(blob.status(), StatusCode::OK);
    assert_eq!(blob.bytes().await.unwrap(), bytes);
    // The id is spent.
    let spent = gateway.as_admin(reqwest::Method::GET, &location).await;
    assert_eq!(spent.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(spent).await, "BLOB_UPLOAD_UNKNOWN");

    // A digest the bytes do not hash to: refused, and neither digest is stored.
    let other = noise(5_000, 7);
    let claimed = Digest::of(b"something else");
    let started = gateway
        .as_admin(reqwest::Method::POST, "/v2/scout/app/blobs/uploads/")
        .await;
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let wrong = gateway
        .admin(
            reqwest::Method::PUT,
            &format!("{location}?digest={claimed}"),
        )
        .await
        .body(other.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(wrong).await, "DIGEST_INVALID");
    for digest in [claimed, Digest::of(&other)] {
        let response = gateway
            .http
            .head(gateway.url(&format!("/v2/scout/app/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{digest}");
    }
    // Monolithic with a wrong digest: the same.
    let wrong = gateway
        .admin(
            reqwest::Method::POST,
            &format!("/v2/scout/app/blobs/uploads/?digest={}", Digest::of(b"x")),
        )
        .await
        .body(other.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(wrong).await, "DIGEST_INVALID");

    // A cancelled upload is gone.
    let started = gateway
        .as_admin(reqwest::Method::POST, "/v2/scout/app/blobs/uploads/")
        .await;
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let cancelled = gateway.as_admin(reqwest::Method::DELETE, &location).await;
    assert_eq!(cancelled.status(), StatusCode::NO_CONTENT);
    let gone = gateway
        .admin(reqwest::Method::PATCH, &location)
        .await
        .body(vec![1, 2, 3])
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(gone).await, "BLOB_UPLOAD_UNKNOWN");

    // Mounting: a held blob is linked at once, an unknown one starts an upload.
    let mounted = gateway
        .as_admin(
            reqwest::Method::POST,
            &format!("/v2/scout/other/blobs/uploads/?mount={digest}&from=scout/app"),
        )
        .await;
    assert_eq!(mounted.status(), StatusCode::CREATED);
    let unknown = gateway
        .admin(
            reqwest::Method::POST,
            &format!(
                "/v2/scout/other/blobs/uploads/?mount={}&from=scout/app",
                Digest::of(b"never pushed")
            ),
        )
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::ACCEPTED);
}

/// An OCI image manifest of `config` and `layers`.
fn manifest(config: &Digest, layers: &[&Digest]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2 },
        "layers": layers.iter().map(|d| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": 1
        })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn manifests_are_checked_listed_in_pages_and_deleted_only_where_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(dir.path());
    let config = gateway.push_blob("scout/app", b"{}").await;
    let layer = gateway.push_blob("scout/app", &noise(1000, 8)).await;

    let missing = Digest::of(b"a layer nobody pushed");
    let refused = gateway
        .put_manifest(
            "scout/app",
            "broken",
            &manifest(&config, &[&layer, &missing]),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(refused).await, "MANIFEST_BLOB_UNKNOWN");
    let wrong_digest = gateway
        .put_manifest(
            "scout/app",
            &Digest::of(b"not it").to_string(),
            &manifest(&config, &[&layer]),
        )
        .await;
    assert_eq!(error_code(wrong_digest).await, "DIGEST_INVALID");
    let not_json = gateway.put_manifest("scout/app", "bad", b"{").await;
    assert_eq!(error_code(not_json).await, "MANIFEST_INVALID");

    let good = manifest(&config, &[&layer]);
    let digest = Digest::of(&good);
    for tag in ["t1", "t2", "t3", "t4", "t5"] {
        let response = gateway.put_manifest("scout/app", tag, &good).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{tag}");
        assert_eq!(
            response.headers()["docker-content-digest"],
            digest.to_string().as_str()
        );
    }
    // lab/app gets the blobs by mounting them from scout/app, then the manifest.
    for blob in [&config, &layer] {
        let mounted = gateway
            .as_admin(
                reqwest::Method::POST,
                &format!("/v2/lab/app/blobs/uploads/?mount={blob}&from=scout/app"),
            )
            .await;
        assert_eq!(mounted.status(), StatusCode::CREATED);
    }
    let by_digest = gateway
        .put_manifest("lab/app", &digest.to_string(), &good)
        .await;
    assert_eq!(by_digest.status(), StatusCode::CREATED);
    let broken = gateway.get("/v2/scout/app/manifests/broken").await;
    assert_eq!(error_code(broken).await, "MANIFEST_UNKNOWN");

    // Pages of two, each linking to the next.
    let mut next = Some("/v2/scout/app/tags/list?n=2".to_owned());
    let mut pages = Vec::new();
    while let Some(path) = next.take() {
        let response = gateway.get(&path).await;
        assert_eq!(response.status(), StatusCode::OK);
        next = response.headers().get("link").map(|link| {
            let link = link.to_str().unwrap();
            assert!(link.ends_with(">; rel=\"next\""), "{link}");
            link[1..link.find('>').unwrap()].to_owned()
        });
        let body: serde_json::Value = response.json().await.unwrap();
        pages.push(body["tags"].clone());
    }
    assert_eq!(
        pages,
        [
            serde_json::json!(["t1", "t2"]),
            serde_json::json!(["t3", "t4"]),
            serde_json::json!(["t5"])
        ]
    );

    // scout does not allow deletes; lab does.
    let refused = gateway
        .as_admin(reqwest::Method::DELETE, "/v2/scout/app/manifests/t1")
        .await;
    assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(refused).await, "UNSUPPORTED");
    let still = gateway
        .http
        .head(gateway.url("/v2/scout/app/manifests/t1"))
        .send()
        .await
        .unwrap();
    assert_eq!(still.status(), StatusCode::OK);

    let tagged = gateway.put_manifest("lab/app", "keep", &good).await;
    assert_eq!(tagged.status(), StatusCode::CREATED);
    let deleted = gateway
        .as_admin(
            reqwest::Method::DELETE,
            &format!("/v2/lab/app/manifests/{digest}"),
        )
        .await;
    assert_eq!(deleted.status(), StatusCode::ACCEPTED);
    for reference in ["keep".to_owned(), digest.to_string()] {
        let gone = gateway
            .as_admin(
                reqwest::Method::GET,
                &format!("/v2/lab/app/manifests/{reference}"),
            )
            .await;
        assert_eq!(gone.status(), StatusCode::NOT_FOUND, "{reference}");
    }
    // Another repository's copy is untouched.
    let kept = gateway
        .get(&format!("/v2/scout/app/manifests/{digest}"))
        .await;
    assert_eq!(kept.status(), StatusCode::OK);
}

/// The store is one, but what a closed project holds is read only where it was pushed: not
/// through a proxy by digest, not through an open project, not by mounting it where the
/// caller cannot read it from, and not by a manifest naming a blob its repository never
/// received. Content an upstream served stays public, pushed again or not.
#[tokio::test(flavor = "multi_thread")]
async fn a_pushed_blob_is_read_only_where_it_was_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let gateway = Gateway::with_upstream(dir.path(), &upstream.url());
    let anonymous = |path: &str| gateway.http.get(gateway.url(path)).send();

    let config = gateway.push_blob("lab/app", b"{}").await;
    let secret = gateway.push_blob("lab/app", &noise(4000, 21)).await;
    let image = manifest(&config, &[&secret]);
    let pushed = gateway.put_manifest("lab/app", "v1", &image).await;
    assert_eq!(pushed.status(), StatusCode::CREATED);
    let image_digest = Digest::of(&image);

    // Through a proxy, by digest: the upstream is asked (and does not have it).
    let through_proxy = anonymous(&format!("/v2/hub/library/x/blobs/{secret}"))
        .await
        .unwrap();
    assert_eq!(through_proxy.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        upstream.count("GET", &format!("/v2/library/x/blobs/{secret}")),
        1
    );
    let manifest_path = format!("/v2/hub/library/x/manifests/{image_digest}");
    assert_eq!(
        anonymous(&manifest_path).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    // Through an open project, anonymously or even as the admin: not linked there.
    let open_path = format!("/v2/scout/any/blobs/{secret}");
    let response = anonymous(&open_path).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(response).await, "BLOB_UNKNOWN");
    let response = gateway.as_admin(reqwest::Method::GET, &open_path).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // A manifest naming it in a repository that never received it is refused.
    let response = gateway.put_manifest("scout/any", "v1", &image).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "MANIFEST_BLOB_UNKNOWN");
    // Mounting it from a proxy's repository (or from nowhere) opens an upload instead.
    for query in [
        format!("mount={secret}&from=hub/library/x"),
        format!("mount={secret}"),
    ] {
        let response = gateway
            .as_admin(
                reqwest::Method::POST,
                &format!("/v2/scout/any/blobs/uploads/?{query}"),
            )
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{query}");
    }
    assert_eq!(
        anonymous(&open_path).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    // An admin who may read lab mounts it from there on purpose: then it is in scout.
    let response = gateway
        .as_admin(
            reqwest::Method::POST,
            &format!("/v2/scout/any/blobs/uploads/?mount={secret}&from=lab/app"),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = anonymous(&open_path).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), noise(4000, 21));

    // Public content: a layer pulled through the proxy, then pushed into lab, stays
    // servable by the proxy from the store.
    let base = Image::from_layers(vec![noise(3000, 22)], Platform::LINUX_AMD64);
    upstream.push_image("library/base", "1", &base);
    let layer = Digest::of(&base.layers[0]);
    let proxy_layer = format!("/v2/hub/library/base/blobs/{layer}");
    assert_eq!(
        anonymous(&proxy_layer).await.unwrap().status(),
        StatusCode::OK
    );
    gateway.push_blob("lab/app", &base.layers[0]).await;
    let response = anonymous(&proxy_layer).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), base.layers[0]);
    let upstream_path = format!("/v2/library/base/blobs/{layer}");
    assert_eq!(
        upstream.count("GET", &upstream_path),
        1,
        "the second was a hit"
    );

    // Pushed first, then found upstream: served once the upstream served it, and a hit
    // from then on.
    let both = noise(2000, 23);
    let both_digest = gateway.push_blob("lab/app", &both).await;
    upstream.push_blob(&both);
    let path = format!("/v2/hub/library/y/blobs/{both_digest}");
    for _ in 0..2 {
        let response = anonymous(&path).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.bytes().await.unwrap(), both);
    }
    let upstream_path = format!("/v2/library/y/blobs/{both_digest}");
    assert_eq!(upstream.count("GET", &upstream_path), 1);
}

/// An OCI artifact manifest whose `subject` is `subject`: an empty config, one layer.
fn artifact(artifact_type: &str, layer: &Digest, subject: Option<&Digest>, kind: &str) -> Vec<u8> {
    let mut manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": artifact_type,
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": Digest::of(b"{}").to_string(), "size": 2 },
        "layers": [{ "mediaType": artifact_type, "digest": layer.to_string(), "size": 1 }],
        "annotations": { "org.example.kind": kind },
    });
    if let Some(subject) = subject {
        manifest["subject"] = serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": subject.to_string(),
            "size": 1,
        });
    }
    serde_json::to_vec(&manifest).unwrap()
}

/// The `manifests` of a referrers answer: (digest, artifactType) pairs, sorted.
async fn referrers(response: reqwest::Response) -> Vec<(String, String)> {
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.oci.image.index.v1+json"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    let mut found: Vec<(String, String)> = body["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["digest"].as_str().unwrap().to_owned(),
                d["artifactType"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

/// OCI 1.1 content discovery. In a hosted project: an SBOM and a signature pushed with a
/// `subject` are its referrers (the push answers `OCI-Subject`), filtered by
/// `artifactType`, with a fallback tag merged in; a deleted referrer leaves the list; a
/// closed project's referrers need a token. Through a proxy: the upstream's referrers API,
/// else its fallback tag, else an empty index.
#[tokio::test(flavor = "multi_thread")]
async fn referrers_are_listed_for_hosted_images_and_asked_of_upstreams() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = FakeRegistry::start(AuthMode::Anonymous).await;
    let gateway = Gateway::with_upstream(dir.path(), &upstream.url());
    let config = gateway.push_blob("lab/app", b"{}").await;
    let layer = gateway.push_blob("lab/app", &noise(500, 31)).await;
    let image = manifest(&config, &[&layer]);
    let subject = Digest::of(&image);
    assert_eq!(
        gateway.put_manifest("lab/app", "v1", &image).await.status(),
        StatusCode::CREATED
    );

    const SBOM: &str = "application/spdx+json";
    const SIGNATURE: &str = "application/vnd.example.signature";
    let sbom_layer = gateway
        .push_blob("lab/app", b"{\"spdxVersion\":\"SPDX-2.3\"}")
        .await;
    let signature_layer = gateway.push_blob("lab/app", b"signed").await;
    let sbom = artifact(SBOM, &sbom_layer, Some(&subject), "sbom");
    let signature = artifact(SIGNATURE, &signature_layer, Some(&subject), "signature");
    for manifest in [&sbom, &signature] {
        let response = gateway
            .put_manifest("lab/app", &Digest::of(manifest).to_string(), manifest)
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(
            response.headers()["oci-subject"],
            subject.to_string().as_str()
        );
    }
    let (gateway, subject) = (&gateway, &subject);
    let list = move |query: String| async move {
        let path = format!("/v2/lab/app/referrers/{subject}{query}");
        gateway.as_admin(reqwest::Method::GET, &path).await
    };
    let (sbom_digest, signature_digest) = (
        Digest::of(&sbom).to_string(),
        Digest::of(&signature).to_string(),
    );
    let mut both = vec![
        (sbom_digest.clone(), SBOM.to_owned()),
        (signature_digest.clone(), SIGNATURE.to_owned()),
    ];
    both.sort();
    assert_eq!(referrers(list(String::new()).await).await, both);
    let filtered = list(format!("?artifactType={}", SBOM.replace('+', "%2B"))).await;
    assert_eq!(filtered.headers()["oci-filters-applied"], "artifactType");
    assert_eq!(
        referrers(filtered).await,
        [(sbom_digest.clone(), SBOM.to_owned())]
    );
    let full = list(String::new())
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let entry = full["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["digest"] == sbom_digest.as_str())
        .unwrap();
    assert_eq!(entry["annotations"]["org.example.kind"], "sbom");
    assert_eq!(entry["size"], sbom.len());
    // Closed project: the referrers need a token like everything else in it.
    let anonymous = gateway
        .get(&format!("/v2/lab/app/referrers/{subject}"))
        .await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // None yet for another digest (200, never 404); a malformed digest is refused.
    let other = Digest::of(b"nothing refers to this");
    let none = gateway
        .as_admin(
            reqwest::Method::GET,
            &format!("/v2/lab/app/referrers/{other}"),
        )
        .await;
    assert!(referrers(none).await.is_empty());
    let bad = gateway
        .as_admin(reqwest::Method::GET, "/v2/lab/app/referrers/sha256:xyz")
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(bad).await, "DIGEST_INVALID");

    // A client without the API wrote the fallback tag: its entries are merged in.
    let legacy = artifact(
        "application/vnd.example.legacy",
        &signature_layer,
        None,
        "legacy",
    );
    let legacy_digest = Digest::of(&legacy);
    gateway
        .put_manifest("lab/app", &legacy_digest.to_string(), &legacy)
        .await;
    let fallback = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": legacy_digest.to_string(), "size": legacy.len(), "artifactType": "application/vnd.example.legacy" }],
    }))
    .unwrap();
    let tag = subject.to_string().replace(':', "-");
    let response = gateway
        .admin(
            reqwest::Method::PUT,
            &format!("/v2/lab/app/manifests/{tag}"),
        )
        .await
        .header("content-type", "application/vnd.oci.image.index.v1+json")
        .body(fallback)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(referrers(list(String::new()).await).await.len(), 3);
    // A deleted referrer leaves the list.
    let deleted = gateway
        .as_admin(
            reqwest::Method::DELETE,
            &format!("/v2/lab/app/manifests/{signature_digest}"),
        )
        .await;
    assert_eq!(deleted.status(), StatusCode::ACCEPTED);
    let left = referrers(list(String::new()).await).await;
    assert!(
        !left.iter().any(|(d, _)| *d == signature_digest),
        "{left:?}"
    );
    assert_eq!(left.len(), 2);

    // Through the proxy: the upstream's API, its fallback tag, or nothing.
    let base = Image::from_layers(vec![noise(300, 32)], Platform::LINUX_AMD64);
    upstream.push_image("library/app", "1", &base);
    let cosign = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": Digest::of(b"sig").to_string(), "size": 3, "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json" }],
    });
    upstream.set_referrers("library/app", &base.digest, cosign.to_string().as_bytes());
    let proxied = |digest: Digest, query: &str| {
        let url = gateway.url(&format!("/v2/hub/library/app/referrers/{digest}{query}"));
        gateway.http.get(url).send()
    };
    let sig = vec![(
        Digest::of(b"sig").to_string(),
        "application/vnd.dev.cosign.artifact.sig.v1+json".to_owned(),
    )];
    assert_eq!(
        referrers(proxied(base.digest.clone(), "").await.unwrap()).await,
        sig
    );
    assert!(
        referrers(
            proxied(base.digest.clone(), "?artifactType=x")
                .await
                .unwrap()
        )
        .await
        .is_empty()
    );
    let older = Digest::of(b"an image signed the old way");
    upstream.push_manifest(
        "library/app",
        &older.to_string().replace(':', "-"),
        "application/vnd.oci.image.index.v1+json",
        cosign.to_string().as_bytes(),
    );
    assert_eq!(referrers(proxied(older, "").await.unwrap()).await, sig);
    assert!(
        referrers(proxied(other, "").await.unwrap())
            .await
            .is_empty()
    );
}

/// Garbage collection: after a tag is deleted, the layers only its image held go with the
/// image, shared ones stay, an upload nothing references goes; `airlock gc --dry-run`
/// lists exactly that and removes nothing; a chunked upload under way during the
/// collection completes, and its image pulls back byte-identical.
#[tokio::test(flavor = "multi_thread")]
async fn garbage_collection_frees_what_a_deleted_tag_held_and_spares_pushes_under_way() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let gateway = Gateway::start(dir);
    let config = gateway.push_blob("lab/app", b"{}").await;
    let shared = gateway.push_blob("lab/app", &noise(1000, 41)).await;
    let only_a = gateway.push_blob("lab/app", &noise(1000, 42)).await;
    let only_b = gateway.push_blob("lab/app", &noise(1000, 43)).await;
    let orphan = gateway.push_blob("lab/app", &noise(500, 44)).await;
    let image_a = manifest(&config, &[&shared, &only_a]);
    let image_b = manifest(&config, &[&shared, &only_b]);
    for (tag, image) in [("a", &image_a), ("b", &image_b)] {
        let response = gateway.put_manifest("lab/app", tag, image).await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    // An upload under way: its first half is in.
    let pending = noise(3000, 45);
    let started = gateway
        .as_admin(reqwest::Method::POST, "/v2/lab/app/blobs/uploads/")
        .await;
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let first = gateway
        .admin(reqwest::Method::PATCH, &location)
        .await
        .header("content-range", "0-1499")
        .body(pending[..1500].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let deleted = gateway
        .as_admin(reqwest::Method::DELETE, "/v2/lab/app/manifests/a")
        .await;
    assert_eq!(deleted.status(), StatusCode::ACCEPTED);
    // Every link is older than a zero grace period from the next second on.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    let mut expected = vec![
        only_a.to_string(),
        orphan.to_string(),
        Digest::of(&image_a).to_string(),
    ];
    expected.sort();
    let output = run_ok(
        Command::new(env!("CARGO_BIN_EXE_airlock"))
            .args([
                "gc",
                "--dry-run",
                "--grace",
                "0s",
                "--user",
                "admin",
                "--config",
            ])
            .arg(dir.join("airlock.toml"))
            .env("AIRLOCK_ADMIN_PASSWORD", PASSWORD),
    );
    let mut listed: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| line.split('\t').next().unwrap().to_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, expected, "the dry run lists what would go");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("would remove 3 blobs"), "{stderr}");

    let report: serde_json::Value = gateway
        .http
        .post(gateway.url("/api/v1/gc"))
        .basic_auth("admin", Some(PASSWORD))
        .json(&serde_json::json!({ "grace": "0s" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut removed: Vec<String> = report["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry[0].as_str().unwrap().to_owned())
        .collect();
    removed.sort();
    assert_eq!(removed, expected, "the dry run removed nothing: {report}");
    assert_eq!(report["dry_run"], false);
    let status = |path: String| {
        let gateway = &gateway;
        async move { gateway.as_admin(reqwest::Method::GET, &path).await.status() }
    };
    for kept in [&config, &shared, &only_b] {
        let path = format!("/v2/lab/app/blobs/{kept}");
        assert_eq!(status(path).await, StatusCode::OK, "{kept}");
    }
    assert_eq!(
        status("/v2/lab/app/manifests/b".into()).await,
        StatusCode::OK
    );
    for gone in [&only_a, &orphan] {
        let path = format!("/v2/lab/app/blobs/{gone}");
        assert_eq!(status(path).await, StatusCode::NOT_FOUND, "{gone}");
    }
    let path = format!("/v2/lab/app/manifests/{}", Digest::of(&image_a));
    assert_eq!(status(path).await, StatusCode::NOT_FOUND);

    // The upload under way completes; its image pulls back whole.
    let pending_digest = Digest::of(&pending);
    let finished = gateway
        .admin(
            reqwest::Method::PUT,
            &format!("{location}?digest={pending_digest}"),
        )
        .await
        .header("content-range", "1500-2999")
        .body(pending[1500..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(finished.status(), StatusCode::CREATED);
    let image_c = manifest(&config, &[&shared, &pending_digest]);
    let response = gateway.put_manifest("lab/app", "c", &image_c).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let pulled = layout(dir, "pulled");
    run_ok(
        skopeo()
            .args(["copy", "--preserve-digests", "--src-tls-verify=false"])
            .args(["--src-creds", &format!("admin:{PASSWORD}")])
            .arg(gateway.docker("lab/app:c"))
            .arg(format!("oci:{}:c", pulled.display())),
    );
    assert_eq!(layout_blob(&pulled, &pending_digest), pending);
    assert_eq!(layout_blob(&pulled, &Digest::of(&image_c)), image_c);
}

/// The spec's error codes for the push side that other tests do not reach: `SIZE_INVALID`
/// for a chunk shorter than its `Content-Range` (the upload is dropped), `NAME_INVALID`,
/// `MANIFEST_INVALID` with 413 past the manifest limit, and `TOOMANYREQUESTS` (429) for
/// the 257th open upload; the token endpoint answers 429 with `Retry-After` after five
/// wrong passwords from one address.
#[tokio::test(flavor = "multi_thread")]
async fn the_push_sides_other_error_codes() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(dir.path());
    let start = || async {
        let response = gateway
            .as_admin(reqwest::Method::POST, "/v2/lab/app/blobs/uploads/")
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        response.headers()["location"].to_str().unwrap().to_owned()
    };
    let location = start().await;
    let short = gateway
        .admin(reqwest::Method::PATCH, &location)
        .await
        .header("content-range", "0-99")
        .body(vec![7u8; 50])
        .send()
        .await
        .unwrap();
    assert_eq!(short.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(short).await, "SIZE_INVALID");
    let gone = gateway.as_admin(reqwest::Method::GET, &location).await;
    assert_eq!(error_code(gone).await, "BLOB_UPLOAD_UNKNOWN", "dropped");

    let invalid = gateway
        .as_admin(reqwest::Method::GET, "/v2/lab/App/tags/list")
        .await;
    assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(invalid).await, "NAME_INVALID");

    let huge = vec![b' '; 4 * 1024 * 1024 + 1];
    let too_large = gateway.put_manifest("lab/app", "big", &huge).await;
    assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(too_large).await, "MANIFEST_INVALID");

    // 256 uploads may be open at once; the 257th waits for one to finish.
    let token = gateway
        .token(
            Some(("admin", PASSWORD)),
            &["repository:lab/many:pull,push".into()],
        )
        .await;
    for _ in 0..256 {
        let response = gateway
            .http
            .post(gateway.url("/v2/lab/many/blobs/uploads/"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let over = gateway
        .http
        .post(gateway.url("/v2/lab/many/blobs/uploads/"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(over).await, "TOOMANYREQUESTS");

    for _ in 0..5 {
        let wrong = gateway.token_response(Some(("ci", "guess")), &[]).await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    let throttled = gateway
        .token_response(Some(("ci", ROBOT_SECRET)), &[])
        .await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(throttled.headers().contains_key("retry-after"));
}

/// containerd pushes: `ctr images push` as the robot (containerd's token client, the
/// `POST` it tries first refused, then the `GET`) lands in the robot's project and is
/// refused in another; the admin pushes there. containerd pulls the images back from the
/// closed project with a login, and skopeo reads the manifest byte for byte.
#[tokio::test(flavor = "multi_thread")]
async fn ctr_pushes_and_pulls_with_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let gateway = Gateway::start(dir);
    // containerd unpacks what it pulls: the layer is a real tar.
    let layer = airlock_testkit::tar_layer("opt/app/data", &noise(200_000, 51));
    let image = Image::from_layers(vec![layer], Platform::LINUX_AMD64);
    let source = layout(dir, "source");
    image.write_oci_layout(&source, "v1").unwrap();
    run_ok(
        skopeo()
            .args(["copy", "--preserve-digests", "--dest-tls-verify=false"])
            .args(["--dest-creds", &format!("admin:{PASSWORD}")])
            .arg(format!("oci:{}:v1", source.display()))
            .arg(gateway.docker("scout/base:v1")),
    );
    let containerd = airlock_testkit::Containerd::start(&dir.join("containerd"));
    let host = format!("127.0.0.1:{}", gateway.port);
    let ctr = |args: &[&str]| {
        let output = containerd.ctr(args);
        let text = format!(
            "ctr {args:?}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    };
    let (ok, text) = ctr(&[
        "images",
        "pull",
        "--plain-http",
        &format!("{host}/scout/base:v1"),
    ]);
    assert!(ok, "an anonymous pull from an open project: {text}");
    let robot = format!("ci:{ROBOT_SECRET}");
    let admin = format!("admin:{PASSWORD}");
    for (target, user, allowed) in [
        ("scout/ctr/app:v1", &robot, true),
        ("lab/app:v1", &robot, false),
        ("lab/app:v1", &admin, true),
    ] {
        let reference = format!("{host}/{target}");
        let (ok, text) = ctr(&[
            "images",
            "tag",
            "--force",
            &format!("{host}/scout/base:v1"),
            &reference,
        ]);
        assert!(ok, "{text}");
        let (ok, text) = ctr(&["images", "push", "--plain-http", "--user", user, &reference]);
        assert_eq!(
            ok,
            allowed,
            "{target} as {}: {text}",
            user.split(':').next().unwrap()
        );
    }
    let raw = run_ok(
        skopeo()
            .args(["inspect", "--raw", "--tls-verify=false"])
            .args(["--creds", &format!("admin:{PASSWORD}")])
            .arg(gateway.docker("lab/app:v1")),
    )
    .stdout;
    assert_eq!(raw, image.manifest, "pushed by containerd as it was");
    let log = std::fs::read_to_string(dir.join("airlock.log")).unwrap();
    let token_requests = |method: &str, status: &str| {
        log.lines()
            .filter(|l| {
                l.contains("path=\"/service/token\"") && l.contains(&format!("method={method}"))
            })
            .filter(|l| l.contains(&format!("status={status}")))
            .count()
    };
    assert!(
        token_requests("POST", "405") > 0,
        "containerd tried OAuth2's POST first"
    );
    assert!(token_requests("GET", "200") > 0, "and fell back to the GET");

    // Pulled back by containerd from the closed project: refused without a login.
    let reference = format!("{host}/lab/app:v1");
    let (ok, text) = ctr(&[
        "images",
        "rm",
        &reference,
        &format!("{host}/scout/ctr/app:v1"),
    ]);
    assert!(ok, "{text}");
    let (ok, _) = ctr(&["images", "pull", "--plain-http", &reference]);
    assert!(!ok, "an anonymous pull from a closed project");
    let (ok, text) = ctr(&[
        "images",
        "pull",
        "--plain-http",
        "--user",
        &admin,
        &reference,
    ]);
    assert!(ok, "{text}");
    let (ok, text) = ctr(&["images", "ls"]);
    let line = text
        .lines()
        .find(|l| l.contains("lab/app:v1"))
        .unwrap_or_default();
    assert!(ok && line.contains(&image.digest.to_string()), "{text}");
}
