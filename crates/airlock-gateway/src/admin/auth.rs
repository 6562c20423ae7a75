//! HTTP basic auth against `[admin]` users, with failed logins limited per client address:
//! after [`MAX_FAILURES`] wrong passwords within [`WINDOW`], the address gets 429 with
//! `Retry-After` until the oldest failure leaves the window. Every failure is logged with
//! the client address and user name, never the password.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use airlock_config::AdminUser;
use base64::Engine as _;
use http::{HeaderMap, header};

use super::ApiError;

/// Failed logins an address may make within [`WINDOW`].
pub(crate) const MAX_FAILURES: usize = 5;
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; past this, addresses whose failures all expired are
/// dropped, then the one with the oldest latest failure.
const MAX_TRACKED: usize = 4096;

/// The admin users and the failed logins per client address.
#[derive(Debug)]
pub(crate) struct Logins {
    users: Arc<Vec<AdminUser>>,
    failures: Arc<Failures>,
}

/// Failed logins per client address, counted over every place that takes a password (the
/// admin API, the console, the registry's token endpoint), so a guesser cannot spread its
/// attempts over them.
#[derive(Debug, Default)]
pub(crate) struct Failures {
    map: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl Logins {
    /// `None` without users: no admin API.
    pub(crate) fn new(users: &[AdminUser], failures: Arc<Failures>) -> Option<Self> {
        (!users.is_empty()).then(|| Self {
            users: Arc::new(users.to_vec()),
            failures,
        })
    }

    /// The user `headers` log in as (HTTP basic), from `client`.
    pub(crate) async fn authenticate(
        &self,
        client: IpAddr,
        headers: &HeaderMap,
    ) -> Result<String, ApiError> {
        if let Some(retry_after) = self.failures.blocked(client) {
            tracing::warn!(target: "airlock::admin", %client, "login refused: too many failed logins");
            return Err(ApiError::TooManyFailures { retry_after });
        }
        let Some((name, password)) = basic_credentials(headers) else {
            return Err(ApiError::Unauthorized(
                "this needs an admin login (HTTP basic auth or a console session)",
            ));
        };
        self.check(client, name, password).await
    }

    /// Whether `password` is `name`'s, counted against `client`'s failed logins: the one
    /// check behind HTTP basic auth and the console's login form.
    pub(crate) async fn check(
        &self,
        client: IpAddr,
        name: String,
        password: String,
    ) -> Result<String, ApiError> {
        if let Some(retry_after) = self.failures.blocked(client) {
            tracing::warn!(target: "airlock::admin", %client, "login refused: too many failed logins");
            return Err(ApiError::TooManyFailures { retry_after });
        }
        let users = self.users.clone();
        let user = name.clone();
        // argon2id is slow by design: off the async threads. An unknown name is checked
        // against a real hash too, so timing does not tell which names exist.
        let valid = tokio::task::spawn_blocking(move || {
            if let Some(u) = users.iter().find(|u| u.name == user) {
                u.verify(password.as_bytes())
            } else {
                let _ = users[0].verify(password.as_bytes());
                false
            }
        })
        .await
        .map_err(|e| ApiError::Internal(format!("password check failed: {e}")))?;
        if valid {
            Ok(name)
        } else {
            self.failures.record(client);
            tracing::warn!(target: "airlock::admin", %client, user = name, "admin login failed: wrong user name or password");
            Err(ApiError::Unauthorized("wrong user name or password"))
        }
    }
}

impl Failures {
    /// Seconds until `client` may try again, when it is over the limit.
    pub(crate) fn blocked(&self, client: IpAddr) -> Option<u64> {
        let now = Instant::now();
        let mut failures = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let times = failures.get_mut(&client)?;
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
        {
            times.pop_front();
        }
        if times.len() < MAX_FAILURES {
            return None;
        }
        let oldest = *times.front()?;
        Some(
            WINDOW
                .saturating_sub(now.saturating_duration_since(oldest))
                .as_secs()
                .max(1),
        )
    }

    pub(crate) fn record(&self, client: IpAddr) {
        let now = Instant::now();
        let mut failures = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() >= MAX_TRACKED && !failures.contains_key(&client) {
            failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < WINDOW)
            });
            if failures.len() >= MAX_TRACKED {
                let stalest = failures
                    .iter()
                    .min_by_key(|(_, times)| times.back().copied())
                    .map(|(ip, _)| *ip);
                if let Some(ip) = stalest {
                    failures.remove(&ip);
                }
            }
        }
        let times = failures.entry(client).or_default();
        times.push_back(now);
        // Only the last MAX_FAILURES matter for the limit.
        while times.len() > MAX_FAILURES {
            times.pop_front();
        }
    }
}

/// The user name and password of an `Authorization: Basic` header.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn basic(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn basic_credentials_split_at_the_first_colon() {
        // "admin:pa:ss"
        assert_eq!(
            basic_credentials(&basic("Basic YWRtaW46cGE6c3M=")),
            Some(("admin".to_owned(), "pa:ss".to_owned()))
        );
        assert_eq!(
            basic_credentials(&basic("basic YWRtaW46cGE6c3M=")),
            Some(("admin".to_owned(), "pa:ss".to_owned()))
        );
        assert_eq!(basic_credentials(&basic("Bearer YWRtaW46cGE6c3M=")), None);
        assert_eq!(basic_credentials(&basic("Basic !!!")), None);
        // "admin" without a colon
        assert_eq!(basic_credentials(&basic("Basic YWRtaW4=")), None);
        assert_eq!(basic_credentials(&HeaderMap::new()), None);
    }

    #[test]
    fn failures_block_an_address_for_the_rest_of_the_window() {
        let failures = Failures::default();
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..MAX_FAILURES - 1 {
            failures.record(client);
        }
        assert_eq!(failures.blocked(client), None);
        failures.record(client);
        let retry = failures.blocked(client).expect("blocked after the limit");
        assert!((1..=WINDOW.as_secs()).contains(&retry), "{retry}");
        assert_eq!(failures.blocked(other), None);
    }

    #[test]
    fn tracked_addresses_are_bounded() {
        let failures = Failures::default();
        for i in 0..=MAX_TRACKED as u32 {
            failures.record(IpAddr::from(i.to_be_bytes()));
        }
        assert_eq!(failures.map.lock().unwrap().len(), MAX_TRACKED);
    }
}
