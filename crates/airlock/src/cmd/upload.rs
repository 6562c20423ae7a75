//! `airlock bundle import` into a RUNNING gateway: its index lock keeps the `data_dir`
//! closed to us, so the bundle goes to its admin API (`POST /api/v1/bundles/import`),
//! which runs the same import on its open store.
//!
//! The gateway's URL is `--gateway`, or derived from the configuration: `[server] listen`
//! (a wildcard address becomes loopback), `https` with the generated CA (or the `files`
//! certificate) when the listener has TLS. The credentials are `--user` and a password
//! from `AIRLOCK_ADMIN_PASSWORD` or `--password-file`, never a command-line argument. The
//! login is checked first (`GET /api/v1/session`), so a wrong password fails before
//! gigabytes are sent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use airlock_bundle::volume::Volumes;
use airlock_config::{Config, TlsMode};
use anyhow::{Context, bail};
use futures_util::{StreamExt as _, TryStreamExt as _};
use reqwest::StatusCode;
use url::Url;

/// The environment variable holding the admin password.
pub const PASSWORD_ENV: &str = "AIRLOCK_ADMIN_PASSWORD";

/// Where and as whom to upload.
#[derive(Debug)]
pub struct Target<'a> {
    pub config: &'a Config,
    pub gateway: Option<&'a Url>,
    pub user: Option<&'a str>,
    pub password_file: Option<&'a Path>,
}

/// What the gateway answered for a successful import.
#[derive(Debug, serde::Deserialize)]
pub struct Summary {
    pub received_bytes: u64,
    pub trusted_key: Option<String>,
    pub new_items: usize,
    pub present_items: usize,
    pub new_blobs: usize,
    pub new_bytes: u64,
    pub present_blobs: usize,
    pub present_bytes: u64,
}

/// Uploads the bundle `file` (all its volumes, in order, as one body).
pub async fn upload(
    file: &Path,
    target: &Target<'_>,
    trust_key: Option<&Path>,
) -> anyhow::Result<(Url, Summary)> {
    let session = Session::open(
        target,
        "the bundle",
        " (or stop the gateway and import again)",
    )
    .await?;
    let Session {
        client,
        base,
        user,
        password,
        tried,
    } = &session;

    let volumes =
        Volumes::open(file).with_context(|| format!("opening the bundle {}", file.display()))?;
    let length = volumes.len();
    let paths: Vec<PathBuf> = volumes.paths().map(Path::to_owned).collect();
    let body = futures_util::stream::iter(paths)
        .then(|path| async move {
            tokio::fs::File::open(&path)
                .await
                .map(|f| tokio_util::io::ReaderStream::with_capacity(f, 1 << 20))
        })
        .try_flatten();
    let mut query: Vec<(&str, String)> = Vec::new();
    match trust_key {
        Some(path) => query.push((
            "trust_key",
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the trust key {}", path.display()))?,
        )),
        None => query.push(("allow_unsigned", "true".to_owned())),
    }
    let import = base
        .join("api/v1/bundles/import")
        .expect("a fixed relative path");
    let response = client
        .post(import)
        .basic_auth(user, Some(password))
        .query(&query)
        .header(reqwest::header::CONTENT_LENGTH, length)
        .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .with_context(|| format!("{tried}; sending the bundle ({length} bytes) failed"))?;
    let status = response.status();
    if status.is_success() {
        let summary = response
            .json::<Summary>()
            .await
            .with_context(|| format!("{tried}; its answer was not an import summary"))?;
        return Ok((base.clone(), summary));
    }
    bail!(
        "{tried}; it refused the bundle ({status}): {}",
        reason(response).await
    )
}

/// A checked login to a running gateway's admin API: the client, the API's base URL, the
/// credentials, and what to say in errors.
struct Session {
    client: reqwest::Client,
    base: Url,
    user: String,
    password: String,
    tried: String,
}

impl Session {
    /// Logs in (`GET /api/v1/session`) so a wrong password fails before any work is sent.
    /// `what` goes through the API ("the bundle"); `otherwise` ends the missing-user error.
    async fn open(target: &Target<'_>, what: &str, otherwise: &str) -> anyhow::Result<Self> {
        let data_dir = target.config.data_dir.display();
        let Some(user) = target.user else {
            bail!(
                "the gateway using {data_dir} is running, so {what} must go through its admin API: give --user NAME and the password in {PASSWORD_ENV} or --password-file FILE{otherwise}"
            );
        };
        let password = password(target.password_file)?;
        let base = match target.gateway {
            Some(url) => url.clone(),
            None => derived_url(target.config)?,
        };
        let client = client(target.config)?;
        let tried = format!(
            "the gateway using {data_dir} is running, so {what} went to its admin API at {base}"
        );
        let session = base.join("api/v1/session").expect("a fixed relative path");
        let response = client
            .get(session)
            .basic_auth(user, Some(&password))
            .send()
            .await
            .with_context(|| {
                format!(
                    "{tried}, which could not be reached (give --gateway URL if it is elsewhere)"
                )
            })?;
        check_login(response, &tried).await?;
        Ok(Self {
            client,
            base,
            user: user.to_owned(),
            password,
            tried,
        })
    }
}

/// `POST`s `body` to the running gateway's admin API at `path` (after checking the login,
/// as [`upload`] does) and returns its JSON answer. `what` goes through the API, in errors.
pub async fn admin_post(
    target: &Target<'_>,
    path: &str,
    body: &serde_json::Value,
    what: &str,
) -> anyhow::Result<serde_json::Value> {
    let session = Session::open(target, what, "").await?;
    let tried = &session.tried;
    let url = session
        .base
        .join(path)
        .context("building the admin API URL")?;
    let response = session
        .client
        .post(url)
        .basic_auth(&session.user, Some(&session.password))
        .json(body)
        .send()
        .await
        .with_context(|| format!("{tried}, which could not be reached"))?;
    if !response.status().is_success() {
        let status = response.status();
        bail!(
            "{tried}, which answered {status}: {}",
            reason(response).await
        );
    }
    response
        .json()
        .await
        .with_context(|| format!("{tried}, whose answer is not JSON"))
}

/// The password from `--password-file` or the environment, without a trailing newline.
fn password(file: Option<&Path>) -> anyhow::Result<String> {
    let bytes = match file {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("reading the password file {}", path.display()))?,
        None => match std::env::var(PASSWORD_ENV) {
            Ok(value) => value.into_bytes(),
            Err(_) => bail!(
                "no admin password: set {PASSWORD_ENV} or give --password-file FILE (never on the command line)"
            ),
        },
    };
    let password = String::from_utf8(super::admin::strip_newline(&bytes).to_vec())
        .context("the admin password is not UTF-8 text")?;
    if password.is_empty() {
        bail!("the admin password is empty");
    }
    Ok(password)
}

/// The gateway's own URL, from its listener: loopback for a wildcard address.
fn derived_url(config: &Config) -> anyhow::Result<Url> {
    let listen = config.server.listen;
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = match config.tls.mode {
        TlsMode::Off => "http",
        TlsMode::SelfSigned | TlsMode::Files => "https",
    };
    let addr = SocketAddr::new(ip, listen.port());
    Url::parse(&format!("{scheme}://{addr}/")).context("building the gateway URL")
}

/// An HTTP client trusting the gateway's CA: the generated one in `data_dir`, or the
/// `files` certificate (with the system's roots).
fn client(config: &Config) -> anyhow::Result<reqwest::Client> {
    let mut builder =
        reqwest::Client::builder().user_agent(concat!("airlock/", env!("CARGO_PKG_VERSION")));
    let ca = match (&config.tls.mode, &config.tls.cert) {
        (TlsMode::SelfSigned, _) => {
            Some(airlock_store::layout::tls_dir(&config.data_dir).join("ca.crt"))
        }
        (TlsMode::Files, Some(cert)) => Some(cert.clone()),
        _ => None,
    };
    if let Some(path) = ca {
        let pem = std::fs::read(&path)
            .with_context(|| format!("reading the gateway's CA certificate {}", path.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{} is not a PEM certificate", path.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().context("building the HTTP client")
}

async fn check_login(response: reqwest::Response, tried: &str) -> anyhow::Result<()> {
    match response.status() {
        status if status.is_success() => Ok(()),
        StatusCode::UNAUTHORIZED => {
            bail!("{tried}, which refused the login: wrong user name or password")
        }
        StatusCode::TOO_MANY_REQUESTS => bail!(
            "{tried}, which refused the login: {}",
            reason(response).await
        ),
        StatusCode::NOT_FOUND => bail!(
            "{tried}, which serves no admin API: add [admin] users to its configuration (see `airlock admin hash-password`) and restart it"
        ),
        status => bail!(
            "{tried}, which answered {status}: {}",
            reason(response).await
        ),
    }
}

/// The `error` of a JSON error body, or the body itself.
async fn reason(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or(text)
}
