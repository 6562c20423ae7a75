//! Decisions: the reason table (status code, metric label, message) and the one log line
//! written per request.
//!
//! Every outcome the proxy can reach is a [`Reason`], so the response, the metric and the
//! log line can never disagree.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airlock_types::RequestId;
use serde::Serialize;

macro_rules! reasons {
    ($($variant:ident => ($label:literal, $status:literal, $message:literal),)*) => {
        /// Why a request was allowed or refused.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($variant,)*
        }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The label used in logs and metrics.
            pub fn as_str(self) -> &'static str {
                match self { $(Reason::$variant => $label,)* }
            }

            /// The HTTP status sent to the client; 0 when no response can be sent.
            pub fn status(self) -> u16 {
                match self { $(Reason::$variant => $status,)* }
            }

            /// The short text in the response body.
            pub fn message(self) -> &'static str {
                match self { $(Reason::$variant => $message,)* }
            }
        }
    };
}

reasons! {
    Allowed => ("allowed", 200, "Connection established"),
    ClientNotAllowed => ("client_not_allowed", 403, "this client may not use the egress proxy"),
    TooManyConnections => ("too_many_connections", 503, "the proxy is at its connection limit"),
    TooManyClientConnections => ("too_many_client_connections", 429, "this client is at its connection limit"),
    ClientGone => ("client_gone", 0, "the client closed before sending a request"),
    HeaderTimeout => ("header_timeout", 408, "the request headers did not arrive in time"),
    RequestLineTooLong => ("request_line_too_long", 414, "the request line is too long"),
    HeadersTooLarge => ("headers_too_large", 431, "the request headers are too large"),
    BadRequest => ("bad_request", 400, "malformed request"),
    MethodNotAllowed => ("method_not_allowed", 405, "only CONNECT host:port is accepted"),
    BadVersion => ("bad_version", 400, "only HTTP/1.0 and HTTP/1.1 are accepted"),
    BadTarget => ("bad_target", 400, "the target must be host:port"),
    BadHost => ("bad_host", 400, "the host is not a valid DNS name"),
    NonAscii => ("non_ascii", 400, "non-ASCII host names are refused; use the punycode form"),
    Userinfo => ("userinfo", 400, "userinfo in the target is refused"),
    PercentEncoding => ("percent_encoding", 400, "percent-encoding in the target is refused"),
    MissingPort => ("missing_port", 400, "the target has no port"),
    BadPort => ("bad_port", 400, "the port is not a number between 1 and 65535 without leading zeros"),
    HostMismatch => ("host_mismatch", 400, "the Host header is repeated or names another target"),
    BodyNotAllowed => ("body_not_allowed", 400, "a CONNECT request has no body"),
    IpLiteral => ("ip_literal", 403, "IP addresses are refused; ask for a name on the allowlist"),
    NotAllowlisted => ("not_allowlisted", 403, "the host is not on the allowlist"),
    PortNotAllowed => ("port_not_allowed", 403, "the port is not allowed"),
    ForbiddenAddress => ("forbidden_address", 403, "the host resolves to a non-public address"),
    ProxyLoop => ("proxy_loop", 403, "the host resolves to this proxy"),
    ResolveFailed => ("resolve_failed", 502, "the host name did not resolve"),
    ConnectFailed => ("connect_failed", 502, "the upstream connection failed"),
    ConnectTimeout => ("connect_timeout", 504, "the upstream connection timed out"),
    UpstreamProxyUnreachable => ("upstream_proxy_unreachable", 502, "the site's outbound proxy did not answer"),
    UpstreamProxyAuth => ("upstream_proxy_auth", 502, "the site's outbound proxy refused airlock's credentials"),
    UpstreamProxyRefused => ("upstream_proxy_refused", 502, "the site's outbound proxy refused the tunnel"),
}

impl Reason {
    pub fn is_allowed(self) -> bool {
        self == Reason::Allowed
    }
}

/// How a tunnel (or a refused connection) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// The request was refused and the connection closed after the response.
    Refused,
    /// Both sides finished; the client closed first.
    ClientClosed,
    /// Both sides finished; the upstream closed first.
    UpstreamClosed,
    ClientError,
    UpstreamError,
    IdleTimeout,
    MaxLifetime,
    Shutdown,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Refused => "refused",
            CloseReason::ClientClosed => "client_closed",
            CloseReason::UpstreamClosed => "upstream_closed",
            CloseReason::ClientError => "client_error",
            CloseReason::UpstreamError => "upstream_error",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::MaxLifetime => "max_lifetime",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// One request's record, written as the decision log line when the connection ends.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// A fresh id per connection, so the line can be found and quoted.
    pub request_id: RequestId,
    /// When the connection was accepted, RFC 3339 UTC.
    pub time: String,
    pub client: SocketAddr,
    /// The request target as sent (truncated), before canonicalization.
    pub raw_target: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// The address dialed (the site proxy's, through `[upstream_proxy]`), or the address
    /// that caused a refusal.
    pub ip: Option<IpAddr>,
    /// `direct`, or `upstream_proxy` when the tunnel went through the site's proxy.
    pub via: &'static str,
    pub decision: &'static str,
    pub reason: &'static str,
    pub status: u16,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration_ms: u64,
    pub close: &'static str,
}

impl Decision {
    pub fn new(client: SocketAddr, started: SystemTime) -> Self {
        Self {
            request_id: RequestId::generate(),
            time: rfc3339(started),
            client,
            raw_target: None,
            host: None,
            port: None,
            ip: None,
            via: "direct",
            decision: "deny",
            reason: "",
            status: 0,
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0,
            close: CloseReason::Refused.as_str(),
        }
    }

    pub fn set_reason(&mut self, reason: Reason) {
        self.decision = if reason.is_allowed() { "allow" } else { "deny" };
        self.reason = reason.as_str();
        self.status = reason.status();
    }

    /// Write the line: target `airlock::egress`, one event whose fields are this record.
    pub fn emit(&self, elapsed: Duration) {
        let duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        tracing::info!(
            target: "airlock::egress",
            request_id = self.request_id.as_str(),
            time = %self.time,
            client = %self.client,
            raw_target = self.raw_target.as_deref().unwrap_or(""),
            host = self.host.as_deref().unwrap_or(""),
            port = self.port.unwrap_or(0),
            ip = %self.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            via = self.via,
            decision = self.decision,
            reason = self.reason,
            status = self.status,
            bytes_up = self.bytes_up,
            bytes_down = self.bytes_down,
            duration_ms,
            close = self.close,
            "egress decision"
        );
    }
}

impl Decision {
    /// The audit line: `item` is `host:port` (or the raw target when it never parsed),
    /// `bytes` down plus up, `result` allow or deny, `reason` the decision's reason.
    pub fn audit_record(&self) -> airlock_audit::Record {
        let mut record = airlock_audit::Record::new(airlock_audit::Kind::Egress, self.decision);
        record.time.clone_from(&self.time);
        record.client = Some(self.client.ip().to_string());
        record.request_id = Some(self.request_id.as_str().to_owned());
        record.item = match (&self.host, self.port) {
            (Some(host), Some(port)) => Some(format!("{host}:{port}")),
            (Some(host), None) => Some(host.clone()),
            _ => self.raw_target.clone(),
        };
        record.bytes = Some(self.bytes_up + self.bytes_down);
        record.status = Some(self.status);
        record.reason = Some(self.reason.to_owned());
        record.action = Some(self.via.to_owned());
        record
    }
}

/// Format a time as `2026-11-27T13:05:00.123Z` without a date crate.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn every_refusal_is_a_client_or_gateway_error() {
        for reason in Reason::ALL {
            let status = reason.status();
            if reason.is_allowed() {
                assert_eq!(status, 200);
            } else {
                assert!(status == 0 || (400..600).contains(&status), "{reason:?}");
            }
        }
        let labels: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), Reason::ALL.len());
    }
}
