//! One audit line.

use serde::{Deserialize, Serialize};

/// What a line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A request the gateway sent to an upstream.
    Fetch,
    /// An egress proxy connection: allowed or denied, with its bytes.
    Egress,
    /// A `[[policy]]` rule matched: denied, or only recorded (`mode = "log"`).
    Policy,
    /// An admin login, accepted or refused.
    Login,
    /// Something an admin did: pin, unpin, purge, prefetch, import, logout.
    Admin,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Fetch,
        Kind::Egress,
        Kind::Policy,
        Kind::Login,
        Kind::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Fetch => "fetch",
            Kind::Egress => "egress",
            Kind::Policy => "policy",
            Kind::Login => "login",
            Kind::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown kind {s:?}: expected fetch, egress, policy, login or admin")
            })
    }
}

/// One line of the trail. Fields a kind has no use for are left out of the JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339 UTC with milliseconds; [`Audit::record`](crate::Audit::record) fills it in
    /// when empty.
    #[serde(default)]
    pub time: String,
    pub kind: Kind,
    /// The client's IP address (the one whose request caused a fetch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The id of the client request, as in the access log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// The admin user (logins, admin actions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Fetch: the HTTP method; admin: the action (`pin`, `purge`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Fetch: the upstream URL (credentials removed); egress: `host:port`; policy: the
    /// repository and tag or the package; admin: what the action was on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Fetch: the length the upstream announced; egress: bytes down plus up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The HTTP status answered (by the upstream for a fetch, by the gateway otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Fetch: `ok` or `error`; egress: `allow` or `deny`; policy: `deny` or `log`; login:
    /// `ok` or `refused`; admin: `ok` or `failed`.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Policy: the rule's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

impl Record {
    /// A record of `kind` with `result`, stamped when it is written.
    pub fn new(kind: Kind, result: impl Into<String>) -> Self {
        Self {
            time: String::new(),
            kind,
            client: None,
            request_id: None,
            proxy: None,
            user: None,
            action: None,
            item: None,
            digest: None,
            bytes: None,
            status: None,
            result: result.into(),
            reason: None,
            rule: None,
        }
    }

    /// Client address and request id from the current [`Context`](crate::Context), if any.
    #[must_use]
    pub fn in_context(mut self) -> Self {
        if let Some(context) = crate::Context::current() {
            self.client = Some(context.client.to_string());
            self.request_id = Some(context.request_id);
        }
        self
    }
}

/// Now, as the trail writes times.
pub(crate) fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
