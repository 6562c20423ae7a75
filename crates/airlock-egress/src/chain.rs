//! Tunnels through the site's outbound proxy (`[upstream_proxy]`), for sites whose staging
//! node reaches the internet only through one.
//!
//! An allowed request to a host outside `no_proxy` is not dialed directly: the proxy
//! connects to the site proxy and asks it for the same tunnel (`CONNECT host:port`, by name,
//! as the site proxy's own domain rules expect), with Basic credentials when the table has a
//! username. The allowlist, port and client checks are unchanged. Names are still resolved
//! locally first and every answer checked (non-public, this proxy) when the staging node's
//! DNS answers; when it does not (a site where only the proxy resolves outside names), the
//! site proxy resolves, and the address check is the site proxy's.

use std::io;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use airlock_config::UpstreamProxySettings;

use crate::decision::Reason;
use crate::host::HostName;

/// The site proxy's response head may be at most this long.
const MAX_HEAD: usize = 16 * 1024;

/// Why `[upstream_proxy]` cannot carry egress tunnels.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(
        "[upstream_proxy] url {url} is https: the egress proxy tunnels only through an http:// proxy (CONNECT over plain TCP); egress tunnels would go direct"
    )]
    TlsProxy { url: String },
}

/// The site's proxy, as egress tunnels use it.
pub struct UpstreamChain {
    settings: UpstreamProxySettings,
    host: String,
    port: u16,
    /// `Basic …`, when the table has a username.
    authorization: Option<String>,
}

impl std::fmt::Debug for UpstreamChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamChain")
            .field("proxy", &format_args!("{}:{}", self.host, self.port))
            .field("authorization", &self.authorization.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

impl UpstreamChain {
    /// The chain for resolved settings and the password read from `password_file`.
    pub fn new(
        settings: &UpstreamProxySettings,
        password: Option<&str>,
    ) -> Result<Self, ChainError> {
        let url = &settings.url;
        if url.scheme() != "http" {
            return Err(ChainError::TlsProxy {
                url: url.to_string(),
            });
        }
        let authorization = settings.username.as_ref().map(|user| {
            let pair = format!("{user}:{}", password.unwrap_or(""));
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        Ok(Self {
            settings: settings.clone(),
            host: url.host_str().unwrap_or_default().to_owned(),
            port: url.port_or_known_default().unwrap_or(80),
            authorization,
        })
    }

    /// Whether a tunnel to `host` goes through the site proxy (it is in no `no_proxy` entry).
    pub(crate) fn applies(&self, host: &HostName) -> bool {
        url::Url::parse(&format!("https://{host}/")).is_ok_and(|url| self.settings.proxies(&url))
    }

    /// A tunnel to `host:port` through the site proxy, with whatever the proxy sent after its
    /// response head (the upstream's first bytes).
    pub(crate) async fn open(
        &self,
        host: &HostName,
        port: u16,
        deadline: Instant,
    ) -> Result<(TcpStream, Vec<u8>), Reason> {
        let mut stream = match timeout_at(
            deadline,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(_)) => return Err(Reason::UpstreamProxyUnreachable),
            Err(_) => return Err(Reason::ConnectTimeout),
        };
        let mut request = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n");
        if let Some(authorization) = &self.authorization {
            request.push_str("Proxy-Authorization: ");
            request.push_str(authorization);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        match timeout_at(deadline, exchange(&mut stream, request.as_bytes())).await {
            Ok(Ok((status, rest))) => match status {
                200..=299 => Ok((stream, rest)),
                // 407 asks for credentials; some proxies (tinyproxy) answer wrong ones with 401.
                401 | 407 => Err(Reason::UpstreamProxyAuth),
                _ => Err(Reason::UpstreamProxyRefused),
            },
            Ok(Err(_)) => Err(Reason::UpstreamProxyRefused),
            Err(_) => Err(Reason::ConnectTimeout),
        }
    }
}

/// Send the request; read the response head. Returns its status and the bytes after it.
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> io::Result<(u16, Vec<u8>)> {
    stream.write_all(request).await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let status = status_of(&buf[..end]).ok_or(io::ErrorKind::InvalidData)?;
            return Ok((status, buf.split_off(end + 4)));
        }
        if buf.len() > MAX_HEAD {
            return Err(io::ErrorKind::InvalidData.into());
        }
    }
}

/// The status of `HTTP/1.x NNN reason`.
fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut words = line.splitn(3, ' ');
    let version = words.next()?;
    let status = words.next()?;
    (version.starts_with("HTTP/1.") && status.len() == 3)
        .then(|| status.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(status_of(b"HTTP/1.1 200 Connection established"), Some(200));
        assert_eq!(
            status_of(b"HTTP/1.0 407 Proxy Authentication Required\r\nX: y"),
            Some(407)
        );
        assert_eq!(status_of(b"HTTP/1.1 200"), Some(200));
        for bad in [
            &b"HTTP/2 200 OK"[..],
            b"HTTP/1.1 20 OK",
            b"SSH-2.0-OpenSSH",
            b"",
            b"HTTP/1.1 2000 x",
        ] {
            assert_eq!(status_of(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
