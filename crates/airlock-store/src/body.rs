//! The body of a stored blob's response: one buffer per body, filled by positional reads
//! and lent to hyper a chunk at a time.
//!
//! A chunk is handed out as [`Bytes`] that own the buffer; when hyper has written it and
//! drops it, the buffer goes back to the body and wakes it. Until then the body answers
//! `Pending`, so it never reads ahead of what the connection has sent: a slow client costs
//! one chunk of memory, whatever hyper's write queue would accept.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::BlobFile;

/// Bytes read from the store per body chunk.
pub(crate) const CHUNK: usize = 128 * 1024;

type Read = Pin<Box<dyn Future<Output = io::Result<(Vec<u8>, usize)>> + Send>>;

/// `length` bytes of `file` from `offset`, as an HTTP body.
pub(crate) struct FileBody {
    file: Arc<dyn BlobFile>,
    offset: u64,
    remaining: u64,
    buffer: Arc<Slot>,
    reading: Option<Read>,
}

/// Where the body's buffer is while hyper does not hold it, and who waits for it.
#[derive(Default)]
struct Slot(Mutex<SlotState>);

#[derive(Default)]
struct SlotState {
    /// The buffer, unless a chunk of it is out with hyper.
    buffer: Option<Vec<u8>>,
    waiting: Option<Waker>,
}

impl Slot {
    /// The buffer when it is back; else registers `waker` for its return.
    fn take(&self, waker: &Waker) -> Option<Vec<u8>> {
        let mut state = self.0.lock().expect("slot lock");
        let buffer = state.buffer.take();
        if buffer.is_none() {
            state.waiting = Some(waker.clone());
        }
        buffer
    }

    fn give_back(&self, buffer: Vec<u8>) {
        let waiting = {
            let mut state = self.0.lock().expect("slot lock");
            state.buffer = Some(buffer);
            state.waiting.take()
        };
        if let Some(waker) = waiting {
            waker.wake();
        }
    }
}

/// A chunk lent to hyper: the first `len` bytes of the body's buffer.
struct Lent {
    buffer: Vec<u8>,
    len: usize,
    slot: Arc<Slot>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buffer[..self.len]
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.slot.give_back(std::mem::take(&mut self.buffer));
    }
}

impl FileBody {
    pub(crate) fn new(file: Arc<dyn BlobFile>, offset: u64, length: u64) -> Self {
        Self {
            file,
            offset,
            remaining: length,
            buffer: Arc::new(Slot(Mutex::new(SlotState {
                buffer: Some(Vec::new()),
                waiting: None,
            }))),
            reading: None,
        }
    }
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.reading.is_none() {
            if this.remaining == 0 {
                return Poll::Ready(None);
            }
            let Some(mut buffer) = this.buffer.take(cx.waker()) else {
                return Poll::Pending;
            };
            let want = usize::try_from(this.remaining).map_or(CHUNK, |r| r.min(CHUNK));
            // Allocated (zeroed) once at its largest; later chunks reuse it as it is.
            buffer.resize(want, 0);
            this.reading = Some(this.file.clone().read_at(buffer, this.offset));
        }
        let read = this.reading.as_mut().expect("a read was started above");
        let result = std::task::ready!(read.as_mut().poll(cx));
        this.reading = None;
        let (buffer, n) = match result {
            Ok(read) => read,
            Err(e) => {
                this.remaining = 0;
                return Poll::Ready(Some(Err(e)));
            }
        };
        if n == 0 {
            // A committed blob shorter than its record: end with an error, never short.
            let missing = this.remaining;
            this.remaining = 0;
            this.buffer.give_back(buffer);
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the stored blob ended {missing} bytes early"),
            ))));
        }
        this.offset += n as u64;
        this.remaining -= n as u64;
        let chunk = Bytes::from_owner(Lent {
            buffer,
            len: n,
            slot: this.buffer.clone(),
        });
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0 && self.reading.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use http_body::Body as _;

    use super::*;
    use crate::{BlobStore, FsStore, MemoryStore, put};
    use airlock_types::Digest;

    /// Counts its wakes.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// Polls until the body is ready: a pending read on the blocking pool wakes the task.
    async fn next(body: &mut FileBody) -> Option<Result<Bytes, io::Error>> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
            .await
            .map(|frame| frame.map(|f| f.into_data().expect("data frames only")))
    }

    #[tokio::test]
    async fn no_chunk_is_read_until_the_last_one_was_dropped_and_the_buffer_is_reused() {
        let bytes = pattern(2 * CHUNK + 10);
        let store = MemoryStore::new();
        let digest = Digest::of(&bytes);
        put(&store, &digest, &bytes).await.unwrap();
        let file = store.open_file(&digest).await.unwrap().unwrap();
        let mut body = FileBody::new(file, 5, bytes.len() as u64 - 5);
        assert_eq!(body.size_hint().exact(), Some(bytes.len() as u64 - 5));

        let first = next(&mut body).await.unwrap().unwrap();
        assert_eq!(first, bytes[5..5 + CHUNK]);
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(
            Pin::new(&mut body).poll_frame(&mut cx).is_pending(),
            "hyper still holds the first chunk"
        );
        let first_at = first.as_ptr();
        drop(first);
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "the returned buffer wakes the body"
        );

        let second = next(&mut body).await.unwrap().unwrap();
        assert_eq!(second, bytes[5 + CHUNK..5 + 2 * CHUNK]);
        assert_eq!(second.as_ptr(), first_at, "one buffer per body");
        drop(second);
        let last = next(&mut body).await.unwrap().unwrap();
        assert_eq!(last, bytes[5 + 2 * CHUNK..]);
        assert!(body.is_end_stream());
        assert!(next(&mut body).await.is_none());
    }

    #[tokio::test]
    async fn a_blob_shorter_than_its_record_ends_the_body_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).await.unwrap();
        let bytes = pattern(CHUNK + 100);
        let digest = Digest::of(&bytes);
        put(&store, &digest, &bytes).await.unwrap();
        let file = store.open_file(&digest).await.unwrap().unwrap();
        let mut body = FileBody::new(file, 0, bytes.len() as u64);
        assert_eq!(next(&mut body).await.unwrap().unwrap(), bytes[..CHUNK]);
        std::fs::OpenOptions::new()
            .write(true)
            .open(crate::layout::blob_path(dir.path(), &digest))
            .unwrap()
            .set_len(CHUNK as u64 + 40)
            .unwrap();
        assert_eq!(
            next(&mut body).await.unwrap().unwrap(),
            bytes[CHUNK..CHUNK + 40]
        );
        let error = next(&mut body).await.unwrap().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        assert!(error.to_string().contains("60 bytes early"), "{error}");
        assert!(next(&mut body).await.is_none(), "nothing after the error");
    }
}
