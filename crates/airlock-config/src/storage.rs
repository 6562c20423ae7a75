//! `[storage]`: where blobs and package files live. The table as written is [`Storage`];
//! [`Storage::resolve`] checks it once into [`StorageConfig`].
//!
//! `fs` (the default) keeps everything under `data_dir`. `s3` keeps the content-addressed
//! objects in a bucket of any S3-compatible store (Garage, `MinIO`, AWS), with a bounded hot
//! tier on local disk in front of it; the metadata index stays under `data_dir`. Secrets are
//! never written in the file: the access key comes from the files named here, else from
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` in the gateway's environment.

use std::path::PathBuf;

use airlock_types::ByteSize;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::raw::Written;

/// The `[storage]` table.
///
/// ```toml
/// [storage]
/// backend = "s3"
/// bucket = "airlock"
/// endpoint = "http://10.0.0.7:3900"          # absent: AWS
/// region = "garage"
/// path_style = true                          # default: true with an endpoint
/// access_key_id_file = "/etc/airlock/s3.id"
/// secret_access_key_file = "/etc/airlock/s3.secret"
/// local_cache = "50GiB"                      # hot tier on local disk; "0" turns it off
/// k2v_endpoint = "http://10.0.0.7:3904"      # replicas share tags, records and leases
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_cache: Option<Written<ByteSize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k2v_endpoint: Option<String>,
    /// Read only to refuse it with a clear message: secrets are never inline.
    #[serde(default, skip_serializing)]
    pub access_key_id: Option<InlineSecret>,
    /// Read only to refuse it with a clear message: secrets are never inline.
    #[serde(default, skip_serializing)]
    pub secret_access_key: Option<InlineSecret>,
}

/// A secret written in the file: whatever it was, it is not kept, only refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InlineSecret;

impl<'de> Deserialize<'de> for InlineSecret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer)?;
        Ok(Self)
    }
}

/// `backend`: where the content-addressed objects go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Files under `data_dir`.
    #[default]
    Fs,
    /// Objects in an S3 bucket.
    S3,
}

/// Where blobs and package files live, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StorageConfig {
    #[default]
    Fs,
    S3(Box<S3Config>),
}

/// `backend = "s3"`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// `None`: AWS, found from the region.
    pub endpoint: Option<Url>,
    pub region: String,
    /// The bucket in the URL's path rather than its host name.
    pub path_style: bool,
    /// `None`: `AWS_ACCESS_KEY_ID` from the environment.
    pub access_key_id_file: Option<PathBuf>,
    /// `None`: `AWS_SECRET_ACCESS_KEY` from the environment.
    pub secret_access_key_file: Option<PathBuf>,
    /// The hot tier's size on local disk; 0: none, every read goes to the bucket.
    pub local_cache: ByteSize,
    /// Garage's K2V API beside the bucket: several gateways on the bucket share tags,
    /// manifest and file records and download leases there. `None`: this gateway keeps its
    /// records to itself.
    pub k2v_endpoint: Option<Url>,
}

impl S3Config {
    pub const DEFAULT_REGION: &str = "us-east-1";
    pub const DEFAULT_LOCAL_CACHE: ByteSize = ByteSize(10 << 30);

    /// The endpoint as written: `scheme://host[:port]`, without the slash `Url` adds.
    pub fn endpoint_text(&self) -> Option<String> {
        self.endpoint
            .as_ref()
            .map(|url| url.as_str().trim_end_matches('/').to_owned())
    }

    /// The K2V endpoint as written, like [`Self::endpoint_text`].
    pub fn k2v_endpoint_text(&self) -> Option<String> {
        self.k2v_endpoint
            .as_ref()
            .map(|url| url.as_str().trim_end_matches('/').to_owned())
    }
}

/// A `[storage]` table that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("{key} is only for backend = \"s3\"")]
    OnlyForS3 { key: &'static str },
    #[error("backend = \"s3\" needs a bucket")]
    NoBucket,
    #[error("bucket {bucket:?} is not an S3 bucket name (3-63 of a-z, 0-9, '.', '-')")]
    Bucket { bucket: String },
    #[error(
        "{key} {endpoint:?} must be an http:// or https:// URL naming only the host and port (e.g. \"http://10.0.0.7:3900\")"
    )]
    Endpoint { key: &'static str, endpoint: String },
    #[error("region must not be empty")]
    Region,
    #[error(
        "{key} is never written in the file: put the value in a file readable by the gateway and set {key}_file, or set {variable} in its environment"
    )]
    InlineSecret {
        key: &'static str,
        variable: &'static str,
    },
}

impl Storage {
    /// Checks the table: every key known to its backend, the endpoint a bare URL, no secret
    /// inline.
    pub fn resolve(&self) -> Result<StorageConfig, StorageError> {
        if self.access_key_id.is_some() {
            return Err(StorageError::InlineSecret {
                key: "access_key_id",
                variable: "AWS_ACCESS_KEY_ID",
            });
        }
        if self.secret_access_key.is_some() {
            return Err(StorageError::InlineSecret {
                key: "secret_access_key",
                variable: "AWS_SECRET_ACCESS_KEY",
            });
        }
        if self.backend.unwrap_or_default() == Backend::Fs {
            let s3_keys = [
                ("bucket", self.bucket.is_some()),
                ("endpoint", self.endpoint.is_some()),
                ("region", self.region.is_some()),
                ("path_style", self.path_style.is_some()),
                ("access_key_id_file", self.access_key_id_file.is_some()),
                (
                    "secret_access_key_file",
                    self.secret_access_key_file.is_some(),
                ),
                ("local_cache", self.local_cache.is_some()),
                ("k2v_endpoint", self.k2v_endpoint.is_some()),
            ];
            return match s3_keys.iter().find(|(_, set)| *set) {
                Some((key, _)) => Err(StorageError::OnlyForS3 { key }),
                None => Ok(StorageConfig::Fs),
            };
        }
        let bucket = self.bucket.clone().ok_or(StorageError::NoBucket)?;
        if !valid_bucket(&bucket) {
            return Err(StorageError::Bucket { bucket });
        }
        let endpoint = self
            .endpoint
            .as_deref()
            .map(|e| parse_endpoint("endpoint", e))
            .transpose()?;
        let k2v_endpoint = self
            .k2v_endpoint
            .as_deref()
            .map(|e| parse_endpoint("k2v_endpoint", e))
            .transpose()?;
        let region = self
            .region
            .clone()
            .unwrap_or_else(|| S3Config::DEFAULT_REGION.to_owned());
        if region.trim().is_empty() {
            return Err(StorageError::Region);
        }
        Ok(StorageConfig::S3(Box::new(S3Config {
            bucket,
            path_style: self.path_style.unwrap_or(endpoint.is_some()),
            endpoint,
            region,
            access_key_id_file: self.access_key_id_file.clone(),
            secret_access_key_file: self.secret_access_key_file.clone(),
            local_cache: self
                .local_cache
                .as_ref()
                .map_or(S3Config::DEFAULT_LOCAL_CACHE, Written::value),
            k2v_endpoint,
        })))
    }
}

impl StorageConfig {
    /// The table this is, every default written out.
    pub fn to_raw(&self) -> Storage {
        match self {
            Self::Fs => Storage {
                backend: Some(Backend::Fs),
                ..Storage::default()
            },
            Self::S3(s3) => Storage {
                backend: Some(Backend::S3),
                bucket: Some(s3.bucket.clone()),
                endpoint: s3.endpoint_text(),
                region: Some(s3.region.clone()),
                path_style: Some(s3.path_style),
                access_key_id_file: s3.access_key_id_file.clone(),
                secret_access_key_file: s3.secret_access_key_file.clone(),
                local_cache: Some(Written::new(s3.local_cache)),
                k2v_endpoint: s3.k2v_endpoint_text(),
                access_key_id: None,
                secret_access_key: None,
            },
        }
    }
}

/// The rules S3 gives for new buckets: 3 to 63 characters of lowercase letters, digits,
/// dots and hyphens, beginning and ending with a letter or digit.
fn valid_bucket(bucket: &str) -> bool {
    let bytes = bucket.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

fn parse_endpoint(key: &'static str, text: &str) -> Result<Url, StorageError> {
    let refuse = || StorageError::Endpoint {
        key,
        endpoint: text.to_owned(),
    };
    let url = Url::parse(text).map_err(|_| refuse())?;
    let bare = matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none();
    if bare { Ok(url) } else { Err(refuse()) }
}
