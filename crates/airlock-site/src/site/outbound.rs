//! The site's outbound proxy, as Ansible inventories set it for `environment:` blocks:
//! `https_proxy` (or `http_proxy`), `no_proxy`, and airlock's own
//! `airlock_upstream_proxy_ca_file`. The gateway and the control node's downloads go
//! through it; a password in the URL is kept as a secret, never rendered into a file.

use airlock_ansible::vault::Secret;

use super::OutboundProxy;
use super::reader::{Reader, Scope};

/// Where the rendered gateway config expects the proxy password; `airlock deploy` writes
/// it there (0600, the gateway user's).
pub const PASSWORD_FILE: &str = "/etc/airlock/upstream-proxy.password";

impl Reader<'_> {
    pub(super) fn outbound_proxy(&mut self) -> Option<OutboundProxy> {
        // Playbooks often set both, or leave one empty: an empty value counts as unset.
        let https = self
            .text(Scope::Staging, "https_proxy")
            .filter(|(t, _)| !t.trim().is_empty());
        let http = self
            .text(Scope::Staging, "http_proxy")
            .filter(|(t, _)| !t.trim().is_empty());
        let (var, (text, line)) = match (https, http) {
            (Some(https), Some(http)) => {
                if https.0.trim() != http.0.trim() {
                    self.warning(
                        http.1,
                        "`http_proxy` and `https_proxy` differ; the gateway uses one proxy for every upstream, `https_proxy`",
                        "set both to the same proxy, or leave `http_proxy` out",
                    );
                }
                ("https_proxy", https)
            }
            (Some(https), None) => ("https_proxy", https),
            (None, Some(http)) => ("http_proxy", http),
            (None, None) => return None,
        };
        let text = text.trim();
        let mut url = match url::Url::parse(text) {
            Ok(url) => url,
            Err(e) => {
                self.error(
                    line,
                    format!("`{var}` `{}` is not a URL: {e}", without_userinfo(text)),
                    "write the proxy as `http://proxy.example.edu:3128`",
                );
                return None;
            }
        };
        let username = percent_decode(url.username());
        let password = url.password().map(percent_decode);
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let ca_file = self
            .text(Scope::Staging, "airlock_upstream_proxy_ca_file")
            .map(|(path, _)| path.trim().to_owned())
            .filter(|p| !p.is_empty());
        let no_proxy: Vec<String> = self
            .list(Scope::Staging, "no_proxy")
            .into_iter()
            .map(|(entry, _)| entry.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect();
        let proxy = OutboundProxy {
            url,
            username: (!username.is_empty()).then_some(username),
            password: password.filter(|p| !p.is_empty()).map(Secret::Known),
            no_proxy,
            ca_file,
        };
        // The gateway's own checks, so `inventory check` refuses what `serve` would.
        if let Err(e) = proxy.table().resolve() {
            let no_proxy_line = self
                .lookup(Scope::Staging, "no_proxy")
                .map_or(line, |v| v.mark);
            let line = match e {
                airlock_config::UpstreamProxyError::NoProxy { .. } => no_proxy_line,
                _ => line,
            };
            self.error(
                line,
                format!("the outbound proxy: {e}"),
                "write `https_proxy: http://proxy.example.edu:3128` and `no_proxy: 10.0.0.0/8,.example.edu`",
            );
            return None;
        }
        Some(proxy)
    }
}

impl OutboundProxy {
    /// The gateway's `[upstream_proxy]` table: no password, only the file it is kept in.
    pub fn table(&self) -> airlock_config::UpstreamProxy {
        airlock_config::UpstreamProxy {
            username: self.username.clone(),
            password_file: self.password.as_ref().map(|_| PASSWORD_FILE.into()),
            ca_file: self.ca_file.as_ref().map(Into::into),
            no_proxy: self.no_proxy.clone(),
            ..airlock_config::UpstreamProxy::new(self.url.clone().into())
        }
    }
}

/// `%XX` escapes of a URL's userinfo, decoded (invalid escapes are kept as written).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The text of a proxy URL for a message: any `user:password@` removed.
fn without_userinfo(text: &str) -> String {
    let (scheme, rest) = text.split_once("://").unwrap_or(("", text));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if scheme.is_empty() {
        format!("{host}{tail}")
    } else {
        format!("{scheme}://{host}{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_decoded_and_never_shown() {
        assert_eq!(percent_decode("p%40ss%3Aword"), "p@ss:word");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(
            without_userinfo("http://u:secret@proxy:3128/x"),
            "http://proxy:3128/x"
        );
        assert_eq!(without_userinfo("u:secret@proxy:3128"), "proxy:3128");
    }
}
