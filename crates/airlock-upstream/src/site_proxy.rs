//! The site's outbound proxy (`[upstream_proxy]`) made ready for HTTP clients: its files
//! read once, its credentials kept as a sensitive header, never as text.
//!
//! Every outbound client airlock builds goes through [`outbound`]: environment proxies
//! (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, which reqwest reads by default)
//! are turned off, and the configured proxy, if any, is added. A request's URL is matched
//! against `no_proxy` by [`UpstreamProxySettings::proxies`] on every hop, redirects
//! included; loopback gets no exception (list it in `no_proxy` to go direct).

use std::path::Path;
use std::sync::Arc;

use airlock_config::UpstreamProxySettings;

/// Why the `[upstream_proxy]` files cannot be used. Messages name the key and the file,
/// never the password.
#[derive(Debug, thiserror::Error)]
pub enum SiteProxyError {
    #[error("[upstream_proxy] cannot read {key} {path}: {source}")]
    Read {
        key: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("[upstream_proxy] ca_file {path} is not PEM: {reason}")]
    NotPem { path: String, reason: String },
    #[error("[upstream_proxy] ca_file {path} holds no certificate")]
    NoCertificate { path: String },
    #[error("[upstream_proxy] password_file {path} is empty")]
    EmptyPassword { path: String },
}

/// The outbound proxy, ready to add to a client.
#[derive(Clone)]
pub struct SiteProxy {
    settings: Arc<UpstreamProxySettings>,
    password: Option<Arc<str>>,
    roots: Vec<reqwest::Certificate>,
}

impl std::fmt::Debug for SiteProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteProxy")
            .field("url", &self.settings.url.as_str())
            .field("username", &self.settings.username)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("no_proxy", &self.settings.no_proxy.len())
            .finish_non_exhaustive()
    }
}

/// Two are the same proxy when their settings and password are (the certificates come
/// from the settings' `ca_file`).
impl PartialEq for SiteProxy {
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings && self.password == other.password
    }
}

impl Eq for SiteProxy {}

impl SiteProxy {
    /// Reads `password_file` and `ca_file` now, so a missing file is a startup error.
    pub fn load(settings: &UpstreamProxySettings) -> Result<Self, SiteProxyError> {
        let password = match &settings.password_file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| SiteProxyError::Read {
                        key: "password_file",
                        path: path.display().to_string(),
                        source,
                    })?;
                let password = text.trim_end_matches(['\r', '\n']).to_owned();
                if password.is_empty() {
                    return Err(SiteProxyError::EmptyPassword {
                        path: path.display().to_string(),
                    });
                }
                Some(password)
            }
            None => None,
        };
        Self::with_password(settings, password)
    }

    /// The proxy with a password held elsewhere (the control node's inventory); reads
    /// `ca_file` now.
    pub fn with_password(
        settings: &UpstreamProxySettings,
        password: Option<String>,
    ) -> Result<Self, SiteProxyError> {
        let roots = match &settings.ca_file {
            Some(path) => read_roots(path)?,
            None => Vec::new(),
        };
        Ok(Self {
            settings: Arc::new(settings.clone()),
            password: password.map(Arc::from),
            roots,
        })
    }

    pub fn settings(&self) -> &UpstreamProxySettings {
        &self.settings
    }

    /// The password read from `password_file`, for clients that speak to the proxy
    /// themselves (the egress proxy's tunnels).
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The proxy for a reqwest client (async or blocking): every URL not in `no_proxy`,
    /// with Basic credentials when a username is set.
    pub fn proxy(&self) -> reqwest::Proxy {
        self.proxy_bypassing(Vec::new())
    }

    /// [`SiteProxy::proxy`], with requests to the `direct` host names (the site's own
    /// gateway) going direct as well.
    pub fn proxy_bypassing(&self, direct: Vec<String>) -> reqwest::Proxy {
        let settings = self.settings.clone();
        let proxy = reqwest::Proxy::custom(move |url| {
            let bypassed = url
                .host_str()
                .is_some_and(|host| direct.iter().any(|d| d.eq_ignore_ascii_case(host)));
            (!bypassed && settings.proxies(url)).then(|| settings.url.clone())
        });
        match &self.settings.username {
            Some(user) => proxy.basic_auth(user, self.password.as_deref().unwrap_or("")),
            None => proxy,
        }
    }

    /// The certificates of `ca_file`, to add to the trust roots of upstream connections.
    pub fn root_certificates(&self) -> &[reqwest::Certificate] {
        &self.roots
    }
}

/// A client builder that reaches upstreams only as configured: never through a proxy named
/// in the environment, through `site` when it is set.
pub fn outbound(
    builder: reqwest::ClientBuilder,
    site: Option<&SiteProxy>,
) -> reqwest::ClientBuilder {
    let mut builder = builder.no_proxy();
    if let Some(site) = site {
        builder = builder.proxy(site.proxy());
        for cert in site.root_certificates() {
            builder = builder.add_root_certificate(cert.clone());
        }
    }
    builder
}

fn read_roots(path: &Path) -> Result<Vec<reqwest::Certificate>, SiteProxyError> {
    let shown = path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| SiteProxyError::Read {
        key: "ca_file",
        path: shown.clone(),
        source,
    })?;
    let certs =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| SiteProxyError::NotPem {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(SiteProxyError::NoCertificate { path: shown });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> UpstreamProxySettings {
        let text = format!("[upstream_proxy]\nurl = \"http://proxy.example.edu:3128\"\n{extra}");
        let config = airlock_config::Config::from_toml_str(&text, "test").unwrap();
        config.upstream_proxy.unwrap()
    }

    #[test]
    fn files_are_read_at_load_with_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = SiteProxy::load(&settings(&format!(
            "ca_file = {:?}",
            missing.display().to_string()
        )))
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("[upstream_proxy] cannot read ca_file "),
            "{err}"
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let err = SiteProxy::load(&settings(&format!(
            "ca_file = {:?}",
            junk.display().to_string()
        )))
        .unwrap_err()
        .to_string();
        assert!(err.contains("holds no certificate"), "{err}");
        let secret = dir.path().join("pw");
        std::fs::write(&secret, "\n").unwrap();
        let err = SiteProxy::load(&settings(&format!(
            "username = \"u\"\npassword_file = {:?}",
            secret.display().to_string()
        )))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("password_file") && err.contains("empty"),
            "{err}"
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("pw");
        std::fs::write(&secret, "hunter2-proxy\n").unwrap();
        let site = SiteProxy::load(&settings(&format!(
            "username = \"u\"\npassword_file = {:?}",
            secret.display().to_string()
        )))
        .unwrap();
        let shown = format!("{site:?} {:?}", site.proxy());
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
