//! Blob uploads: monolithic (`POST ?digest=`), chunked (`POST`, `PATCH`…, `PUT ?digest=`),
//! resumable (`GET` says how far an upload got), cancellable (`DELETE`), and cross-repo
//! mounts (`POST ?mount=&from=`).
//!
//! An upload is a [`BlobWriter`] in the store's temporary area, kept here by id. Its bytes
//! become a blob only when the final `PUT` names a digest they hash to; on a mismatch
//! nothing is stored. Uploads idle for [`IDLE`] are dropped (and their temporary files
//! with them) when the next upload starts and at every upkeep round; at most
//! [`MAX_UPLOADS`] are open at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use airlock_config::Action;
use airlock_store::{BlobWriter, StoreError, TagRecord, stage, unix_now};
use airlock_types::Digest;
use axum::body::Body;
use axum::response::Response;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::{BLOB_LINK, Caller, HostedRequest, access, blob_link_key, digest_key, header_value};
use crate::error::internal;
use crate::{Query, Registry, RegistryError, with_api_version};

/// Uploads open at once, over every project.
pub(crate) const MAX_UPLOADS: usize = 256;
/// An upload nobody touched for this long is abandoned.
pub(crate) const IDLE: Duration = Duration::from_secs(3600);

/// The uploads under way, by id.
pub(crate) struct Uploads {
    open: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Upload>>>>,
    /// [`IDLE`], but for tests.
    idle: Duration,
}

impl Default for Uploads {
    fn default() -> Self {
        Self {
            open: Mutex::default(),
            idle: IDLE,
        }
    }
}

impl std::fmt::Debug for Uploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Uploads")
            .field("open", &open.len())
            .field("idle", &self.idle)
            .finish()
    }
}

/// One upload: where it goes and the bytes so far.
pub(crate) struct Upload {
    /// `<project>/<repo>`: an id is good only under the name it was started with.
    name: String,
    /// `None` once the final `PUT` took it.
    writer: Option<Box<dyn BlobWriter>>,
    touched: Instant,
}

impl Uploads {
    /// Drops the uploads idle for [`IDLE`] (an upload in use right now holds its lock, so
    /// it is never one of them); returns how many went.
    pub(crate) fn sweep(&self) -> usize {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        self.sweep_locked(&mut open)
    }

    fn sweep_locked(&self, open: &mut HashMap<String, Arc<tokio::sync::Mutex<Upload>>>) -> usize {
        let before = open.len();
        open.retain(|_, upload| {
            upload
                .try_lock()
                .map_or(true, |u| u.touched.elapsed() < self.idle)
        });
        before - open.len()
    }

    /// Opens an upload for `name`, after dropping abandoned ones.
    fn start(&self, name: &str, writer: Box<dyn BlobWriter>) -> Result<String, RegistryError> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        self.sweep_locked(&mut open);
        if open.len() >= MAX_UPLOADS {
            return Err(RegistryError::TooManyUploads(MAX_UPLOADS));
        }
        let id = format!("{:032x}", rand::random::<u128>());
        let upload = Upload {
            name: name.to_owned(),
            writer: Some(writer),
            touched: Instant::now(),
        };
        open.insert(id.clone(), Arc::new(tokio::sync::Mutex::new(upload)));
        Ok(id)
    }

    /// The upload `id` (its name is checked once it is locked: [`Upload::writer`]).
    fn get(&self, id: &str) -> Result<Arc<tokio::sync::Mutex<Upload>>, RegistryError> {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(id)
            .cloned()
            .ok_or_else(|| RegistryError::BlobUploadUnknown(id.to_owned()))
    }

    fn remove(&self, id: &str) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

impl Upload {
    /// The writer of upload `id`, asked for under `request`'s name.
    fn writer(
        &mut self,
        id: &str,
        request: &HostedRequest<'_>,
    ) -> Result<&mut Box<dyn BlobWriter>, RegistryError> {
        self.touched = Instant::now();
        self.writer
            .as_mut()
            .filter(|_| self.name == request.name)
            .ok_or_else(|| RegistryError::BlobUploadUnknown(id.to_owned()))
    }
}

/// The `Range` header of an upload holding `written` bytes: `0-<last byte>`, and `0-0`
/// for none, as distribution writes it.
pub(crate) fn upload_range(written: u64) -> HeaderValue {
    header_value(&format!("0-{}", written.saturating_sub(1)))
}

/// Where a chunk says it starts and ends (inclusive): `Content-Range: <start>-<end>` (the
/// spec's form), or with a `bytes ` prefix and `/<size>` suffix, which some clients send.
fn chunk_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>, RegistryError> {
    let Some(value) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let invalid = || {
        RegistryError::BlobUploadInvalid(format!("Content-Range {value:?} is not <start>-<end>"))
    };
    let text = value.to_str().map_err(|_| invalid())?.trim();
    let text = text.strip_prefix("bytes ").unwrap_or(text);
    let range = text.split('/').next().unwrap_or_default();
    let (start, end) = range.split_once('-').ok_or_else(invalid)?;
    let start: u64 = start.trim().parse().map_err(|_| invalid())?;
    let end: u64 = end.trim().parse().map_err(|_| invalid())?;
    if end < start {
        return Err(invalid());
    }
    Ok(Some((start, end)))
}

/// Appends a request body to an upload.
async fn append(writer: &mut dyn BlobWriter, body: Body) -> Result<(), RegistryError> {
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            RegistryError::BlobUploadInvalid(format!("the request body broke off: {e}"))
        })?;
        writer.write(&chunk).await.map_err(internal)?;
    }
    Ok(())
}

/// Checks a chunk continues the upload, then appends it and checks it was as long as its
/// `Content-Range` said (`SIZE_INVALID` otherwise: the upload then holds bytes the client
/// did not mean, and the caller drops it).
async fn append_chunk(
    writer: &mut dyn BlobWriter,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), RegistryError> {
    let written = writer.written();
    let range = chunk_range(headers)?;
    if let Some((start, _)) = range {
        if start != written {
            return Err(RegistryError::UploadOutOfOrder { start, written });
        }
    }
    append(writer, body).await?;
    if let Some((start, end)) = range {
        let (said, got) = (end - start + 1, writer.written() - written);
        if said != got {
            return Err(RegistryError::SizeInvalid { said, got });
        }
    }
    Ok(())
}

fn digest_param(query: &Query) -> Result<Option<Digest>, RegistryError> {
    query
        .get("digest")
        .map(|d| {
            d.parse()
                .map_err(|_| RegistryError::DigestInvalid(d.to_owned()))
        })
        .transpose()
}

/// 202 for an upload under way.
fn accepted(request: &HostedRequest<'_>, id: &str, written: u64, status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        header_value(&format!("/v2/{}/blobs/uploads/{id}", request.name)),
    );
    headers.insert(header::RANGE, upload_range(written));
    headers.insert("docker-upload-uuid", header_value(id));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    with_api_version(status, response)
}

/// 201 for a blob now in the repository.
fn created(request: &HostedRequest<'_>, digest: &Digest) -> Response {
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        header_value(&format!("/v2/{}/blobs/{digest}", request.name)),
    );
    headers.insert("docker-content-digest", header_value(&digest.to_string()));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    with_api_version(StatusCode::CREATED, response)
}

fn mismatch(error: StoreError) -> RegistryError {
    match error {
        StoreError::DigestMismatch { .. } => {
            RegistryError::ContentDigestMismatch(error.to_string())
        }
        other => internal(other),
    }
}

impl Registry {
    /// `POST …/blobs/uploads/`: a mount, a monolithic upload, or a new upload session.
    pub(crate) async fn start_upload(
        &self,
        request: &HostedRequest<'_>,
        query: &Query,
        body: Body,
        caller: &Caller,
    ) -> Result<Response, RegistryError> {
        if let Some(mount) = query.get("mount") {
            // A blob the caller may read where it comes from is mounted; otherwise the
            // client uploads it (spec: "Mounting a blob from another repository").
            if let Ok(digest) = mount.parse::<Digest>() {
                let _linking = self.hosted.writing().await;
                if self.mountable(&digest, query.get("from"), caller).await? {
                    self.link_blob(request, &digest).await?;
                    return Ok(created(request, &digest));
                }
            }
        } else if let Some(digest) = digest_param(query)? {
            let mut writer = self.store.create(Some(&digest)).await.map_err(internal)?;
            append(writer.as_mut(), body).await?;
            let _linking = self.hosted.writing().await;
            let committed = writer.commit().await.map_err(mismatch)?;
            self.take_blob(request, &committed.digest, committed.size)
                .await?;
            return Ok(created(request, &digest));
        }
        let writer = self.store.create(None).await.map_err(internal)?;
        let id = self.hosted.uploads.start(request.name, writer)?;
        Ok(accepted(request, &id, 0, StatusCode::ACCEPTED))
    }

    /// `PATCH …/blobs/uploads/<id>`: one more chunk.
    pub(crate) async fn patch_upload(
        &self,
        request: &HostedRequest<'_>,
        id: &str,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Response, RegistryError> {
        let upload = self.hosted.uploads.get(id)?;
        let mut upload = upload.lock().await;
        let writer = upload.writer(id, request)?;
        let appended = append_chunk(writer.as_mut(), headers, body).await;
        if let Err(RegistryError::SizeInvalid { .. }) = &appended {
            self.hosted.uploads.remove(id);
        }
        appended?;
        let written = writer.written();
        Ok(accepted(request, id, written, StatusCode::ACCEPTED))
    }

    /// `PUT …/blobs/uploads/<id>?digest=`: the last chunk (if any), then the check.
    pub(crate) async fn finish_upload(
        &self,
        request: &HostedRequest<'_>,
        id: &str,
        query: &Query,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Response, RegistryError> {
        let Some(expected) = digest_param(query)? else {
            return Err(RegistryError::DigestInvalid(
                "the final PUT of an upload needs ?digest=".into(),
            ));
        };
        let upload = self.hosted.uploads.get(id)?;
        let mut upload = upload.lock().await;
        let appended = append_chunk(upload.writer(id, request)?.as_mut(), headers, body).await;
        if let Err(RegistryError::SizeInvalid { .. }) = &appended {
            self.hosted.uploads.remove(id);
        }
        appended?;
        let writer = upload.writer.take().expect("checked just above");
        // Finished, well or not: the id is spent (a failed check leaves nothing to resume).
        self.hosted.uploads.remove(id);
        drop(upload);
        let staged = writer.stage().await.map_err(internal)?;
        let committed = staged.committed().clone();
        if committed.digest != expected {
            drop(staged);
            self.discard_unrecorded(&committed.digest).await;
            return Err(RegistryError::ContentDigestMismatch(format!(
                "the upload hashes to {} ({} bytes), not {expected}; nothing was stored",
                committed.digest, committed.size
            )));
        }
        let _linking = self.hosted.writing().await;
        stage::publish(vec![staged]).await.map_err(internal)?;
        self.take_blob(request, &committed.digest, committed.size)
            .await?;
        Ok(created(request, &expected))
    }

    /// Removes the object a refused upload left under its own digest (a bucket's writer
    /// commits as it stages), unless the index records that digest: then it is content
    /// someone else stored, the same bytes.
    async fn discard_unrecorded(&self, digest: &Digest) {
        let recorded = self.index.recorded_blobs(vec![digest.clone()]).await;
        if recorded.is_ok_and(|found| found.is_empty()) {
            if let Err(e) = self.store.delete(digest).await {
                tracing::warn!(target: "airlock::hosted", %digest, error = %e, "could not remove a refused upload's bytes");
            }
        }
    }

    /// Records a blob just uploaded into the request's repository and links it there.
    async fn take_blob(
        &self,
        request: &HostedRequest<'_>,
        digest: &Digest,
        size: u64,
    ) -> Result<(), RegistryError> {
        self.index
            .record_pushed(digest, size)
            .await
            .map_err(internal)?;
        self.link_blob(request, digest).await
    }

    /// Links a blob the store holds into the request's repository.
    async fn link_blob(
        &self,
        request: &HostedRequest<'_>,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        let record = TagRecord {
            digest: digest.clone(),
            media_type: String::new(),
            checked_at: unix_now(),
        };
        self.index
            .set_tag(&blob_link_key(request, digest), &record)
            .await
            .map_err(internal)
    }

    /// Whether `digest` may be mounted from `from` by `caller`: a hosted repository's blob
    /// when the caller may pull there and the blob is linked there; otherwise (a proxy's
    /// repository, or no `from`) content an upstream served, which every client can pull
    /// through a proxy anyway. Never a blob only a push brought, from where it is not.
    async fn mountable(
        &self,
        digest: &Digest,
        from: Option<&str>,
        caller: &Caller,
    ) -> Result<bool, RegistryError> {
        if self.store.stat(digest).await.map_err(internal)?.is_none() {
            return Ok(false);
        }
        let hosted_from = from.and_then(|name| {
            let (project, repo) = name.split_once('/')?;
            Some((self.hosted.project(project)?, repo))
        });
        match hosted_from {
            Some((project, repo)) => {
                let name = format!("{}/{repo}", project.name);
                if !access::allowed(project, &name, Action::Pull, caller) {
                    return Ok(false);
                }
                let key = digest_key(&project.name, repo, digest, BLOB_LINK);
                Ok(self.index.tag(&key).await.map_err(internal)?.is_some())
            }
            None => Ok(!self.index.is_pushed(digest).await.map_err(internal)?),
        }
    }

    /// `GET …/blobs/uploads/<id>`: how far the upload got.
    pub(crate) async fn upload_status(
        &self,
        request: &HostedRequest<'_>,
        id: &str,
    ) -> Result<Response, RegistryError> {
        let upload = self.hosted.uploads.get(id)?;
        let mut upload = upload.lock().await;
        let written = upload.writer(id, request)?.written();
        Ok(accepted(request, id, written, StatusCode::NO_CONTENT))
    }

    /// `DELETE …/blobs/uploads/<id>`: the upload and its bytes go.
    pub(crate) async fn cancel_upload(
        &self,
        request: &HostedRequest<'_>,
        id: &str,
    ) -> Result<Response, RegistryError> {
        let upload = self.hosted.uploads.get(id)?;
        upload.lock().await.writer(id, request)?;
        self.hosted.uploads.remove(id);
        let mut response = Response::new(Body::empty());
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
        Ok(with_api_version(StatusCode::NO_CONTENT, response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str) -> Result<Option<u64>, RegistryError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_RANGE, HeaderValue::from_str(value).unwrap());
        chunk_range(&headers).map(|r| r.map(|(start, _)| start))
    }

    #[test]
    fn chunk_ranges_in_the_spec_form_and_the_http_form() {
        assert_eq!(range("0-99").unwrap(), Some(0));
        assert_eq!(range("100-199").unwrap(), Some(100));
        assert_eq!(range("bytes 100-199/*").unwrap(), Some(100));
        assert_eq!(chunk_range(&HeaderMap::new()).unwrap(), None);
        for bad in ["", "x-1", "5-1", "100", "-5"] {
            assert!(
                matches!(range(bad), Err(RegistryError::BlobUploadInvalid(_))),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn idle_uploads_are_dropped_unless_in_use() {
        use airlock_store::BlobStore as _;
        let store = airlock_store::MemoryStore::new();
        let writer = || store.create(None);
        let mut uploads = Uploads::default();
        let recent = uploads.start("p/r", writer().await.unwrap()).unwrap();
        assert_eq!(uploads.sweep(), 0, "touched just now");
        let idle = uploads.start("p/r", writer().await.unwrap()).unwrap();
        let busy = uploads.start("p/r", writer().await.unwrap()).unwrap();
        uploads.idle = Duration::ZERO;
        let held = uploads.get(&busy).unwrap();
        let _in_use = held.lock().await;
        assert_eq!(uploads.sweep(), 2, "all but the one in use");
        assert!(matches!(
            uploads.get(&idle),
            Err(RegistryError::BlobUploadUnknown(_))
        ));
        assert!(uploads.get(&busy).is_ok());
        assert_ne!(recent, idle, "ids are random");
    }

    #[test]
    fn ranges_name_the_last_byte_held() {
        assert_eq!(upload_range(0), "0-0");
        assert_eq!(upload_range(1), "0-0");
        assert_eq!(upload_range(100), "0-99");
    }
}
