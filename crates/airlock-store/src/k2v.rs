//! A client of Garage's K2V API: small records beside the bucket, with causality tokens.
//!
//! K2V keeps every value written concurrently (siblings) instead of letting the last write
//! win: a write that carries the causality token of a read replaces exactly what that read
//! saw, and nothing written since. That is what lets several gateways share records without
//! losing each other's updates, on a store whose S3 API ignores conditional writes.
//!
//! Partition keys are fixed names chosen here; everything a client could influence goes in
//! the sort key, which travels percent-encoded in the query string.

use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::StoreError;
use crate::s3::S3Credentials;

const CAUSALITY: &str = "x-garage-causality-token";
/// A K2V call that takes longer than this fails: the records are small, and a replica must
/// fall back to working alone quickly when the store is down.
const TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Items per page when reading a whole partition.
const PAGE: usize = 1000;
/// After the API could not be reached, calls fail at once for this long instead of each
/// waiting for its own timeout: a replica cut off from K2V works alone at full speed.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Where the K2V API is and how to sign for it.
#[derive(Debug, Clone)]
pub struct K2vSettings {
    /// `http://host:port` of the K2V API (Garage's `[k2v_api] api_bind_addr`).
    pub endpoint: String,
    pub bucket: String,
    /// The store's region name (Garage's `s3_region`).
    pub region: String,
    pub credentials: S3Credentials,
}

/// An item: its values (`None` for a deletion marker), more than one when replicas wrote
/// concurrently, and the token that supersedes them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub values: Vec<Option<Vec<u8>>>,
    pub token: String,
}

/// A K2V client for one bucket.
#[derive(Debug, Clone)]
pub struct K2v {
    http: reqwest::Client,
    settings: K2vSettings,
    /// Until when (unix milliseconds) calls fail without trying: see [`RETRY_AFTER`].
    down_until: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Serialize)]
struct RangeQuery<'a> {
    #[serde(rename = "partitionKey")]
    partition_key: &'a str,
    prefix: Option<&'a str>,
    start: Option<&'a str>,
    limit: Option<usize>,
    #[serde(rename = "singleItem")]
    single_item: bool,
}

#[derive(Serialize)]
struct Insertion<'a> {
    pk: &'a str,
    sk: &'a str,
    ct: Option<&'a str>,
    v: Option<String>,
}

/// One write of [`K2v::insert_many`]: `None` as the value deletes.
#[derive(Debug, Clone)]
pub struct Write {
    pub sort: String,
    pub token: Option<String>,
    pub value: Option<Vec<u8>>,
}

/// Items per batch request.
const BATCH: usize = 500;

#[derive(Deserialize)]
struct RangeAnswer {
    items: Vec<RangeItem>,
    more: bool,
    #[serde(rename = "nextStart")]
    next_start: Option<String>,
}

#[derive(Deserialize)]
struct RangeItem {
    sk: String,
    ct: String,
    v: Vec<Option<String>>,
}

fn unavailable(context: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        context: context.to_owned(),
        reason: reason.to_string(),
    }
}

impl K2v {
    pub fn new(settings: K2vSettings) -> Result<Self, StoreError> {
        let http = reqwest::Client::builder()
            // Like the bucket's client: never through a proxy from the environment.
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| StoreError::Config(format!("K2V client: {e}")))?;
        Ok(Self {
            http,
            settings,
            down_until: std::sync::Arc::default(),
        })
    }

    /// The item under `partition` / `sort`, or `None` when there is none.
    pub async fn read(&self, partition: &str, sort: &str) -> Result<Option<Item>, StoreError> {
        let response = self
            .send(
                http::Method::GET,
                &self.item_url(partition, sort),
                None,
                Vec::new(),
            )
            .await?;
        match response.status().as_u16() {
            404 => Ok(None),
            200 => {
                let token = token(&response)?;
                let body = response
                    .bytes()
                    .await
                    .map_err(|e| unavailable("reading a K2V item", e))?;
                let values: Vec<Option<String>> = serde_json::from_slice(&body)
                    .map_err(|e| StoreError::Index(format!("K2V answered an item badly: {e}")))?;
                Ok(Some(Item {
                    values: decode(values)?,
                    token,
                }))
            }
            status => Err(refused("reading a K2V item", status)),
        }
    }

    /// Writes `value`, replacing what the read that gave `token` saw; without a token the
    /// value is added beside whatever is there.
    pub async fn insert(
        &self,
        partition: &str,
        sort: &str,
        token: Option<&str>,
        value: Vec<u8>,
    ) -> Result<(), StoreError> {
        let response = self
            .send(
                http::Method::PUT,
                &self.item_url(partition, sort),
                token,
                value,
            )
            .await?;
        match response.status().as_u16() {
            200 | 204 => Ok(()),
            status => Err(refused("writing a K2V item", status)),
        }
    }

    /// Deletes what the read that gave `token` saw.
    pub async fn delete(&self, partition: &str, sort: &str, token: &str) -> Result<(), StoreError> {
        let response = self
            .send(
                http::Method::DELETE,
                &self.item_url(partition, sort),
                Some(token),
                Vec::new(),
            )
            .await?;
        match response.status().as_u16() {
            200 | 204 => Ok(()),
            status => Err(refused("deleting a K2V item", status)),
        }
    }

    /// Every live item of `partition` whose sort key starts with `prefix`, in sort-key order,
    /// read a page at a time.
    pub async fn read_prefix(
        &self,
        partition: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Item)>, StoreError> {
        let url = self.batch_url("?search");
        let mut out = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let query = [RangeQuery {
                partition_key: partition,
                prefix: Some(prefix),
                start: start.as_deref(),
                limit: Some(PAGE),
                single_item: false,
            }];
            let answer = self.search(&url, &query).await?.into_iter().next();
            let Some(answer) = answer else {
                return Err(StoreError::Index("K2V answered an empty listing".into()));
            };
            for item in answer.items {
                out.push((
                    item.sk,
                    Item {
                        values: decode(item.v)?,
                        token: item.ct,
                    },
                ));
            }
            match (answer.more, answer.next_start) {
                (true, Some(next)) => start = Some(next),
                _ => return Ok(out),
            }
        }
    }

    /// The items under `sorts` in `partition`, in the same order (`None`: no live item),
    /// a few hundred per request.
    pub async fn read_many(
        &self,
        partition: &str,
        sorts: &[String],
    ) -> Result<Vec<Option<Item>>, StoreError> {
        let url = self.batch_url("?search");
        let mut out = Vec::with_capacity(sorts.len());
        for chunk in sorts.chunks(BATCH) {
            let queries: Vec<RangeQuery> = chunk
                .iter()
                .map(|sort| RangeQuery {
                    partition_key: partition,
                    prefix: None,
                    start: Some(sort),
                    limit: None,
                    single_item: true,
                })
                .collect();
            let answers = self.search(&url, &queries).await?;
            if answers.len() != chunk.len() {
                return Err(StoreError::Index("K2V answered a batch read badly".into()));
            }
            for answer in answers {
                out.push(match answer.items.into_iter().next() {
                    Some(item) => Some(Item {
                        values: decode(item.v)?,
                        token: item.ct,
                    }),
                    None => None,
                });
            }
        }
        Ok(out)
    }

    /// Writes (or deletes) many items of `partition`, a few hundred per request.
    pub async fn insert_many(&self, partition: &str, writes: &[Write]) -> Result<(), StoreError> {
        let url = self.batch_url("");
        for chunk in writes.chunks(BATCH) {
            let items: Vec<Insertion> = chunk
                .iter()
                .map(|w| Insertion {
                    pk: partition,
                    sk: &w.sort,
                    ct: w.token.as_deref(),
                    v: w.value.as_ref().map(|v| BASE64.encode(v)),
                })
                .collect();
            let body = serde_json::to_vec(&items).map_err(|e| StoreError::Index(e.to_string()))?;
            let response = self.send(http::Method::POST, &url, None, body).await?;
            match response.status().as_u16() {
                200 | 204 => {}
                status => return Err(refused("writing K2V items", status)),
            }
        }
        Ok(())
    }

    async fn search(
        &self,
        url: &str,
        queries: &[RangeQuery<'_>],
    ) -> Result<Vec<RangeAnswer>, StoreError> {
        let body = serde_json::to_vec(queries).map_err(|e| StoreError::Index(e.to_string()))?;
        let response = self.send(http::Method::POST, url, None, body).await?;
        if response.status().as_u16() != 200 {
            return Err(refused("reading K2V items", response.status().as_u16()));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| unavailable("reading K2V items", e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Index(format!("K2V answered a batch read badly: {e}")))
    }

    fn batch_url(&self, query: &str) -> String {
        format!(
            "{}/{}{query}",
            self.settings.endpoint.trim_end_matches('/'),
            self.settings.bucket
        )
    }

    fn item_url(&self, partition: &str, sort: &str) -> String {
        let mut url = format!(
            "{}/{}/{partition}?sort_key=",
            self.settings.endpoint.trim_end_matches('/'),
            self.settings.bucket
        );
        url.extend(form_urlencoded::byte_serialize(sort.as_bytes()));
        url
    }

    async fn send(
        &self,
        method: http::Method,
        url: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, StoreError> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(url)
            .header(http::header::ACCEPT, "application/json");
        if let Some(token) = token {
            request = request.header(CAUSALITY, token);
        }
        let mut request = request
            .body(body)
            .map_err(|e| StoreError::Config(format!("K2V request {url}: {e}")))?;
        self.sign(&mut request)?;
        let request = reqwest::Request::try_from(request)
            .map_err(|e| StoreError::Config(format!("K2V request {url}: {e}")))?;
        use std::sync::atomic::Ordering;
        let now = now_millis();
        if now < self.down_until.load(Ordering::Relaxed) {
            return Err(unavailable(
                "the K2V API",
                "it could not be reached moments ago; trying again shortly",
            ));
        }
        self.http.execute(request).await.map_err(|e| {
            let retry = now_millis() + RETRY_AFTER.as_millis() as u64;
            self.down_until.store(retry, Ordering::Relaxed);
            unavailable("the K2V API", chain(&e))
        })
    }

    fn sign(&self, request: &mut http::Request<Vec<u8>>) -> Result<(), StoreError> {
        let identity = aws_credential_types::Credentials::new(
            &self.settings.credentials.access_key_id,
            &self.settings.credentials.secret_access_key,
            None,
            None,
            "airlock",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.settings.region)
            .name("k2v")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| StoreError::Config(format!("signing a K2V request: {e}")))?
            .into();
        let headers: Vec<(&str, &str)> = request
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
            .collect();
        let signable = SignableRequest::new(
            request.method().as_str(),
            request.uri().to_string(),
            headers.into_iter(),
            SignableBody::Bytes(request.body()),
        )
        .map_err(|e| StoreError::Config(format!("signing a K2V request: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| StoreError::Config(format!("signing a K2V request: {e}")))?
            .into_parts();
        instructions.apply_to_request_http1x(request);
        Ok(())
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn token(response: &reqwest::Response) -> Result<String, StoreError> {
    response
        .headers()
        .get(CAUSALITY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| StoreError::Index("K2V answered an item without a causality token".into()))
}

fn decode(values: Vec<Option<String>>) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
    values
        .into_iter()
        .map(|v| {
            v.map(|text| {
                BASE64
                    .decode(text)
                    .map_err(|e| StoreError::Index(format!("K2V value is not base64: {e}")))
            })
            .transpose()
        })
        .collect()
}

/// An error with its sources, which is where reqwest says what failed (refused, timed out).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn refused(context: &str, status: u16) -> StoreError {
    if status >= 500 {
        unavailable(context, format!("the K2V API answered {status}"))
    } else {
        // 4xx: a wrong key, region or bucket; retrying will not help.
        StoreError::Config(format!("{context}: the K2V API answered {status}"))
    }
}
