//! The S3 backend: blobs are objects `blobs/sha256/<hex>` in one bucket.
//!
//! A write goes to a local temp file while it is hashed; only after the digest matched are
//! the bytes uploaded under their key, so the bucket never holds an unverified object under
//! a blob key (a multipart upload stays invisible until it completes). The temp file also
//! serves readers that join a download under way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use airlock_types::{Digest, Sha256Verifier};
use bytes::Bytes;
use futures_util::TryStreamExt;
use futures_util::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::client::{HttpClient, HttpConnector};
use object_store::path::Path as Key;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload,
    RetryConfig, WriteMultipart,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fs::FsFile;
use crate::hot::HotTier;
use crate::layout::TEMP_SUFFIX;
use crate::{BlobFile, BlobRead, BlobStore, BlobWriter, Committed, PartialSource, StoreError};

/// Uploads are sent in parts of this size; smaller blobs go in one request.
const PART_SIZE: usize = 8 << 20;
/// Parts in flight at once for one upload.
const PARTS_IN_FLIGHT: usize = 4;

/// Where the bucket is and how to reach it.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// `http://host:port` for a self-hosted store such as Garage; `None` for AWS.
    pub endpoint: Option<String>,
    pub region: String,
    /// Bucket in the path (`endpoint/bucket/key`) rather than in the host name.
    pub path_style: bool,
    pub credentials: S3Credentials,
}

/// An access key: read from files, or from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
#[derive(Clone)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl S3Credentials {
    /// Each part from its file when one is given, else from the standard environment
    /// variable; an error names what is missing.
    pub fn load(id_file: Option<&Path>, secret_file: Option<&Path>) -> Result<Self, StoreError> {
        Ok(Self {
            access_key_id: credential(id_file, "AWS_ACCESS_KEY_ID")?,
            secret_access_key: credential(secret_file, "AWS_SECRET_ACCESS_KEY")?,
        })
    }
}

fn credential(file: Option<&Path>, variable: &str) -> Result<String, StoreError> {
    let value = match file {
        Some(file) => std::fs::read_to_string(file).map_err(StoreError::io(format!(
            "reading the S3 credential file {}",
            file.display()
        )))?,
        None => std::env::var(variable).map_err(|_| {
            StoreError::Config(format!(
                "no S3 credential: set {variable} or name a file in [storage]"
            ))
        })?,
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(StoreError::Config(format!(
            "the S3 credential from {} is empty",
            file.map_or_else(|| variable.to_owned(), |f| f.display().to_string())
        )));
    }
    Ok(value.to_owned())
}

/// Blobs in an S3 bucket, with a local directory for writes in progress and, unless its
/// budget is 0, a hot tier of local copies in front of the bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    bucket: Arc<dyn ObjectStore>,
    temp: PathBuf,
    hot: Option<Arc<HotTier>>,
}

/// How long the bucket may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A whole request, body included: room for a multi-GiB blob on a slow link.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How long the bucket may take: a bucket that is down must turn into a clear error (the
/// registry answers 503) within seconds, not after minutes of retries.
fn client_options() -> (ClientOptions, RetryConfig) {
    let options = ClientOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT);
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
        },
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
    };
    (options, retry)
}

/// The bucket's HTTP client: reqwest as `object_store` would build it, except that it never
/// takes a proxy from the environment (`HTTP_PROXY`, `ALL_PROXY`): the gateway's requests go
/// where its configuration says, and nowhere else.
#[derive(Debug)]
struct Direct;

impl HttpConnector for Direct {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })?;
        Ok(HttpClient::new(client))
    }
}

impl S3Store {
    /// Connects to the bucket (no request is made yet), creates `local_dir/tmp`, where
    /// writes are verified before they are uploaded, and opens the hot tier of
    /// `hot_budget` bytes under `local_dir/hot` (0: none).
    pub async fn open(
        settings: &S3Settings,
        local_dir: &Path,
        hot_budget: u64,
    ) -> Result<Self, StoreError> {
        let (options, retry) = client_options();
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_virtual_hosted_style_request(!settings.path_style)
            .with_access_key_id(&settings.credentials.access_key_id)
            .with_secret_access_key(&settings.credentials.secret_access_key)
            .with_client_options(
                options.with_allow_http(
                    settings
                        .endpoint
                        .as_deref()
                        .is_some_and(|e| e.starts_with("http://")),
                ),
            )
            .with_retry(retry)
            .with_http_connector(Direct);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let bucket = builder
            .build()
            .map_err(|e| StoreError::Config(format!("S3 bucket {}: {e}", settings.bucket)))?;
        let temp = local_dir.join("tmp");
        tokio::fs::create_dir_all(&temp)
            .await
            .map_err(StoreError::io(format!("creating {}", temp.display())))?;
        let hot = match hot_budget {
            0 => None,
            budget => Some(Arc::new(
                HotTier::start(&local_dir.join("hot"), budget).await?,
            )),
        };
        Ok(Self {
            bucket: Arc::new(bucket),
            temp,
            hot,
        })
    }

    /// Asks the bucket for an object that does not exist: `Ok` when the bucket answers as
    /// it should (the object is absent), else why it cannot be used.
    pub async fn probe(&self) -> Result<(), StoreError> {
        match self.bucket.head(&Key::from("airlock-probe")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3_error("probing the bucket".to_owned())(e)),
        }
    }

    /// The bucket itself, for tests that look behind the store's back.
    pub fn bucket(&self) -> Arc<dyn ObjectStore> {
        self.bucket.clone()
    }

    /// The object key of a blob.
    pub fn key(digest: &Digest) -> Key {
        Key::from(format!("blobs/{}/{}", digest.algorithm(), digest.hex()))
    }

    fn temp_path(&self) -> PathBuf {
        self.temp
            .join(format!("{:032x}{TEMP_SUFFIX}", rand::random::<u128>()))
    }

    /// The object, or `None` when the bucket does not hold it.
    async fn get(
        &self,
        digest: &Digest,
        offset: u64,
    ) -> Result<Option<object_store::GetResult>, StoreError> {
        let options = GetOptions {
            range: (offset > 0).then_some(GetRange::Offset(offset)),
            ..GetOptions::default()
        };
        match self.bucket.get_opts(&Self::key(digest), options).await {
            Ok(result) => Ok(Some(result)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(s3_error(format!("reading {digest}"))(e)),
        }
    }

    /// Brings the object into the hot tier when it fits there; `false` when the bucket
    /// does not hold it. The tier's writer checks the bytes against the digest.
    async fn warm(&self, hot: &HotTier, digest: &Digest) -> Result<bool, StoreError> {
        let Some(result) = self.get(digest, 0).await? else {
            return Ok(false);
        };
        if hot.fits(result.meta.size) {
            hot.fill(digest, reader(result.into_stream())).await?;
        }
        Ok(true)
    }

    /// Downloads the object into an unlinked local file, checking it against its digest,
    /// so positional reads go at disk speed and outlive a delete from the bucket.
    async fn download(&self, digest: &Digest) -> Result<Option<Arc<dyn BlobFile>>, StoreError> {
        let Some(result) = self.get(digest, 0).await? else {
            return Ok(None);
        };
        let path = self.temp_path();
        let context = || format!("downloading {digest} to {}", path.display());
        let mut file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(StoreError::io(context()))?;
        let removed = tokio::fs::remove_file(&path).await;
        removed.map_err(StoreError::io(context()))?;
        let mut verifier = Sha256Verifier::new();
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.try_next().await.map_err(s3_error(context()))? {
            verifier.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(StoreError::io(context()))?;
        }
        let size = verifier.len();
        let actual = verifier.finish();
        if &actual != digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
                size,
            });
        }
        file.flush().await.map_err(StoreError::io(context()))?;
        Ok(Some(Arc::new(FsFile(file.into_std().await))))
    }
}

/// An error of the bucket: absent objects are not errors (callers get `None`); anything
/// else means the bucket could not be used for now.
fn s3_error(context: String) -> impl FnOnce(object_store::Error) -> StoreError {
    move |e| StoreError::Unavailable {
        context,
        reason: e.to_string(),
    }
}

fn reader(stream: BoxStream<'static, object_store::Result<Bytes>>) -> BlobRead {
    Box::pin(tokio_util::io::StreamReader::new(
        stream.map_err(std::io::Error::other),
    ))
}

#[async_trait::async_trait]
impl BlobStore for S3Store {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        if let Some(hot) = &self.hot {
            if let Some(size) = hot.stat(digest).await? {
                return Ok(Some(size));
            }
        }
        match self.bucket.head(&Self::key(digest)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(s3_error(format!("stat {digest}"))(e)),
        }
    }

    async fn open(&self, digest: &Digest, offset: u64) -> Result<Option<BlobRead>, StoreError> {
        if let Some(hot) = &self.hot {
            if let Some(read) = hot.open(digest, offset).await? {
                return Ok(Some(read));
            }
            if !self.warm(hot, digest).await? {
                return Ok(None);
            }
            if let Some(read) = hot.open(digest, offset).await? {
                return Ok(Some(read));
            }
        }
        if offset > 0 {
            // S3 refuses a range that starts at or past the end; the contract reads nothing.
            match self.stat(digest).await? {
                None => return Ok(None),
                Some(size) if offset >= size => return Ok(Some(Box::pin(tokio::io::empty()))),
                Some(_) => {}
            }
        }
        Ok(self
            .get(digest, offset)
            .await?
            .map(|result| reader(result.into_stream())))
    }

    async fn open_file(&self, digest: &Digest) -> Result<Option<Arc<dyn BlobFile>>, StoreError> {
        if let Some(hot) = &self.hot {
            if let Some(file) = hot.open_file(digest).await? {
                return Ok(Some(file));
            }
            if !self.warm(hot, digest).await? {
                return Ok(None);
            }
            if let Some(file) = hot.open_file(digest).await? {
                return Ok(Some(file));
            }
        }
        self.download(digest).await
    }

    async fn create(&self, expected: Option<&Digest>) -> Result<Box<dyn BlobWriter>, StoreError> {
        let path = self.temp_path();
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(StoreError::io(format!("creating {}", path.display())))?;
        Ok(Box::new(S3Writer {
            file: Some(file),
            temp: Arc::new(TempFile { path }),
            bucket: self.bucket.clone(),
            hot: self.hot.clone(),
            expected: expected.cloned(),
            verifier: Sha256Verifier::new(),
        }))
    }

    async fn delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        let in_hot = match &self.hot {
            Some(hot) => hot.delete(digest).await?,
            None => false,
        };
        // S3 deletes succeed whether or not the object was there; ask first.
        let in_bucket = match self.bucket.head(&Self::key(digest)).await {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => return Err(s3_error(format!("stat {digest}"))(e)),
        };
        if in_bucket {
            self.bucket
                .delete(&Self::key(digest))
                .await
                .map_err(s3_error(format!("deleting {digest}")))?;
        }
        Ok(in_hot || in_bucket)
    }

    fn tier_stats(&self) -> Option<crate::TierStats> {
        self.hot.as_ref().map(|hot| hot.stats())
    }

    /// Removes local temp files a crash left; the bucket holds nothing of an unfinished
    /// write but an incomplete multipart upload, which never becomes visible.
    async fn clean_temp(&self) -> Result<usize, StoreError> {
        crate::fs::empty_dir(&self.temp).await
    }
}

/// The local temp file of a write; removed when the last handle goes.
#[derive(Debug)]
struct TempFile {
    path: PathBuf,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[async_trait::async_trait]
impl PartialSource for TempFile {
    async fn open_file(&self) -> Result<Arc<dyn BlobFile>, StoreError> {
        crate::fs::open_temp(&self.path).await
    }
}

struct S3Writer {
    file: Option<tokio::fs::File>,
    temp: Arc<TempFile>,
    bucket: Arc<dyn ObjectStore>,
    hot: Option<Arc<HotTier>>,
    expected: Option<Digest>,
    verifier: Sha256Verifier,
}

#[async_trait::async_trait]
impl BlobWriter for S3Writer {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        let file = self.file.as_mut().expect("writer is open until commit");
        let context = || format!("writing {}", self.temp.path.display());
        file.write_all(chunk)
            .await
            .map_err(StoreError::io(context()))?;
        file.flush().await.map_err(StoreError::io(context()))?;
        self.verifier.update(chunk);
        Ok(())
    }

    fn written(&self) -> u64 {
        self.verifier.len()
    }

    fn partial(&self) -> Arc<dyn PartialSource> {
        self.temp.clone()
    }

    async fn commit(mut self: Box<Self>) -> Result<Committed, StoreError> {
        let mut file = self.file.take().expect("commit happens once");
        let context = || format!("writing {}", self.temp.path.display());
        file.flush().await.map_err(StoreError::io(context()))?;
        let size = self.verifier.len();
        let actual = self.verifier.clone().finish();
        if let Some(expected) = &self.expected {
            if &actual != expected {
                return Err(StoreError::DigestMismatch {
                    expected: expected.clone(),
                    actual,
                    size,
                });
            }
        }
        upload(
            self.bucket.as_ref(),
            &self.temp.path,
            &S3Store::key(&actual),
            size,
        )
        .await?;
        if let Some(hot) = &self.hot {
            if hot.fits(size) {
                // The tier keeps only what is on disk for good: synced before it moves in.
                file.sync_all().await.map_err(StoreError::io(context()))?;
                hot.adopt(&actual, size, &self.temp.path).await?;
            }
        }
        Ok(Committed {
            digest: actual,
            size,
        })
    }
}

/// Uploads a verified local file under `key`: one request when small, else a multipart
/// upload (aborted on failure) that becomes visible only when it completes.
async fn upload(
    bucket: &dyn ObjectStore,
    path: &Path,
    key: &Key,
    size: u64,
) -> Result<(), StoreError> {
    let context = || format!("uploading {} to {key}", path.display());
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(StoreError::io(context()))?;
    if size <= PART_SIZE as u64 {
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .await
            .map_err(StoreError::io(context()))?;
        bucket
            .put(key, PutPayload::from(bytes))
            .await
            .map_err(s3_error(context()))?;
        return Ok(());
    }
    let mut upload = WriteMultipart::new_with_chunk_size(
        bucket
            .put_multipart(key)
            .await
            .map_err(s3_error(context()))?,
        PART_SIZE,
    );
    let sent: Result<(), StoreError> = async {
        loop {
            let mut part = vec![0; PART_SIZE];
            let n = read_full(&mut file, &mut part)
                .await
                .map_err(StoreError::io(context()))?;
            if n == 0 {
                return Ok(());
            }
            part.truncate(n);
            upload
                .wait_for_capacity(PARTS_IN_FLIGHT)
                .await
                .map_err(s3_error(context()))?;
            upload.put(Bytes::from(part));
        }
    }
    .await;
    match sent {
        Ok(()) => {
            upload.finish().await.map_err(s3_error(context()))?;
            Ok(())
        }
        Err(e) => {
            let _ = upload.abort().await;
            Err(e)
        }
    }
}

async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unavailable_store_is_classified_unavailable() {
        let down = s3_error("stat".to_owned())(object_store::Error::NotImplemented {
            operation: "head".to_owned(),
            implementer: "test".to_owned(),
        });
        assert!(crate::is_unavailable(&down));
        assert!(!crate::is_unavailable(&StoreError::Index("x".to_owned())));
        assert!(!crate::is_unavailable(&std::io::Error::other("x")));
    }
}
