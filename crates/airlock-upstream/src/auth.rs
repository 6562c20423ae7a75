//! Answers upstream auth challenges: the OCI token flow (anonymous or with credentials)
//! and Basic auth, with tokens cached per scope until shortly before they expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::Method;
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use serde::Deserialize;

use crate::{Challenge, RedactedUrl, UpstreamError, error_chain};

pub(crate) struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    fn basic(&self) -> HeaderValue {
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.username, self.password));
        let mut value =
            HeaderValue::from_str(&format!("Basic {encoded}")).expect("base64 is header-safe");
        value.set_sensitive(true);
        value
    }
}

struct CachedToken {
    header: HeaderValue,
    expires: Instant,
}

pub(crate) struct Auth {
    /// The proxy these tokens are for (audit lines name it).
    proxy: String,
    client: reqwest::Client,
    credentials: Option<Credentials>,
    /// The upstream asked for Basic auth once; send it up front from then on.
    basic: AtomicBool,
    tokens: Mutex<HashMap<String, CachedToken>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Distribution's token spec: a token without `expires_in` lasts 60 seconds.
const DEFAULT_TOKEN_LIFETIME: u64 = 60;
/// Token responses are small JSON documents; a larger one is refused unread when its length
/// is announced, and as soon as this much has arrived when it is not (chunked).
const MAX_TOKEN_RESPONSE: usize = 1 << 20;
/// Renew this long before expiry so a request never leaves with a dying token.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

impl Auth {
    pub(crate) fn new(
        proxy: String,
        client: reqwest::Client,
        credentials: Option<Credentials>,
    ) -> Self {
        Self {
            proxy,
            client,
            credentials,
            basic: AtomicBool::new(false),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn cached(&self, _url: &url::Url, scope: &str) -> Option<HeaderValue> {
        if self.basic.load(Ordering::Relaxed) {
            return self.credentials.as_ref().map(Credentials::basic);
        }
        let tokens = self.tokens.lock().expect("token cache lock");
        tokens
            .get(scope)
            .filter(|t| t.expires > Instant::now())
            .map(|t| t.header.clone())
    }

    pub(crate) fn forget(&self, scope: &str) {
        self.tokens.lock().expect("token cache lock").remove(scope);
    }

    /// The `Authorization` value that answers one of `challenges`, or `None` when none
    /// can be answered (the 401 then goes back to the client).
    pub(crate) async fn answer(
        &self,
        url: &url::Url,
        base: &url::Url,
        scope: &str,
        challenges: &[Challenge],
    ) -> Result<Option<HeaderValue>, UpstreamError> {
        if let Some(bearer) = challenges.iter().find(|c| c.is("bearer")) {
            return self.fetch_token(url, base, scope, bearer).await.map(Some);
        }
        if challenges.iter().any(|c| c.is("basic")) {
            if let Some(credentials) = &self.credentials {
                self.basic.store(true, Ordering::Relaxed);
                return Ok(Some(credentials.basic()));
            }
        }
        Ok(None)
    }

    async fn fetch_token(
        &self,
        url: &url::Url,
        base: &url::Url,
        scope: &str,
        challenge: &Challenge,
    ) -> Result<HeaderValue, UpstreamError> {
        let bad = |reason: &str| UpstreamError::BadChallenge {
            url: RedactedUrl::new(url),
            reason: reason.to_owned(),
        };
        let realm = challenge
            .param("realm")
            .ok_or_else(|| bad("Bearer challenge without realm"))?;
        let mut token_url = url::Url::parse(realm).map_err(|_| bad("realm is not a URL"))?;
        if !matches!(token_url.scheme(), "http" | "https") {
            return Err(bad("realm is not an http(s) URL"));
        }
        if !token_url.username().is_empty() || token_url.password().is_some() {
            return Err(bad("realm carries credentials of its own"));
        }
        // The realm is the upstream's word; credentials follow it only over TLS, or to the
        // upstream's own origin (a plain-http upstream with its own token service).
        let trusted_realm = token_url.scheme() == "https" || token_url.origin() == base.origin();
        if self.credentials.is_some() && !trusted_realm {
            return Err(bad(
                "realm is plain http on another host: credentials are sent only to an https \
                 realm or the upstream's own origin",
            ));
        }
        {
            let mut query = token_url.query_pairs_mut();
            if let Some(service) = challenge.param("service") {
                query.append_pair("service", service);
            }
            query.append_pair("scope", challenge.param("scope").unwrap_or(scope));
        }
        let mut request = self.client.get(token_url.clone());
        if let Some(credentials) = &self.credentials {
            request = request.header(reqwest::header::AUTHORIZATION, credentials.basic());
        }
        let response = match request.send().await {
            Ok(response) => {
                crate::audit::fetch(&self.proxy, &Method::GET, &token_url, Ok(&response));
                response
            }
            Err(e) => {
                let reason = error_chain(&e.without_url());
                crate::audit::fetch(&self.proxy, &Method::GET, &token_url, Err(&reason));
                return Err(UpstreamError::Unreachable {
                    url: RedactedUrl::new(&token_url),
                    reason,
                });
            }
        };
        let status = response.status();
        if status != StatusCode::OK {
            return Err(UpstreamError::TokenRefused {
                url: RedactedUrl::new(&token_url),
                scope: scope.to_owned(),
                status,
            });
        }
        let bytes = crate::read_body(response, MAX_TOKEN_RESPONSE)
            .await
            .map_err(|e| match e {
                crate::BodyError::TooLarge { .. } => bad("token response is too large"),
                crate::BodyError::Broken(_) => bad("token response was cut off"),
            })?;
        let body: TokenResponse = serde_json::from_slice(&bytes)
            .map_err(|_| bad("token endpoint answered without JSON"))?;
        let token = body
            .token
            .or(body.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("token endpoint sent no token"))?;
        let mut header = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| bad("token is not header-safe"))?;
        header.set_sensitive(true);
        let lifetime = Duration::from_secs(
            body.expires_in
                .unwrap_or(DEFAULT_TOKEN_LIFETIME)
                .max(DEFAULT_TOKEN_LIFETIME),
        );
        let expires = Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN);
        self.tokens.lock().expect("token cache lock").insert(
            scope.to_owned(),
            CachedToken {
                header: header.clone(),
                expires,
            },
        );
        Ok(header)
    }
}
