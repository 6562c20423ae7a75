//! Tunnels: relaying bytes both ways once a request is allowed.
//!
//! Each direction is its own loop so that end-of-stream is propagated as a half-close
//! (`shutdown(Write)` on the other socket) while the opposite direction keeps flowing. The
//! tunnel ends when both directions have finished, on the first error, when no byte has
//! moved for the idle timeout, at the maximum lifetime, or when the server shuts down;
//! both sockets are then dropped, so neither side is left in `CLOSE_WAIT`.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use crate::decision::CloseReason;
use crate::metrics::EgressMetrics;

/// Reads of each burst start in a buffer this big; one that fills it switches to bulk.
const SMALL: usize = 16 * 1024;
/// The size of one bulk move through a user-space buffer.
const BUFFER: usize = 64 * 1024;
/// The pipe a bulk burst goes through on Linux, asked of the kernel (the default pipe
/// holds 64 KiB; each move of a burst costs two `splice` calls and two readiness checks,
/// so a larger pipe moves the same bytes with a quarter of the wakeups). Pipe pages are
/// taken as data arrives and given back when the burst drains.
#[cfg(target_os = "linux")]
const PIPE: usize = 256 * 1024;

/// How long a tunnel may live.
#[derive(Debug, Clone, Copy)]
pub struct TunnelLimits {
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
}

/// What a tunnel did.
#[derive(Debug, Clone, Copy)]
pub struct TunnelOutcome {
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub close: CloseReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Upstream,
}

/// Milliseconds since the tunnel started at which a byte last moved.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Relay between `client` and `upstream` until the tunnel ends. `shutdown` turning true
/// closes the tunnel.
pub async fn relay(
    client: TcpStream,
    upstream: TcpStream,
    limits: TunnelLimits,
    metrics: &EgressMetrics,
    mut shutdown: watch::Receiver<bool>,
) -> TunnelOutcome {
    let start = Instant::now();
    let activity = Activity {
        start,
        last_ms: AtomicU64::new(0),
    };
    let up_bytes = AtomicU64::new(0);
    let down_bytes = AtomicU64::new(0);
    let up = pump::<Chan>(
        &client,
        &upstream,
        Side::Client,
        &up_bytes,
        &activity,
        |n| {
            metrics.add_up(n);
        },
    );
    let down = pump::<Chan>(
        &upstream,
        &client,
        Side::Upstream,
        &down_bytes,
        &activity,
        |n| {
            metrics.add_down(n);
        },
    );
    tokio::pin!(up, down);
    let idle = idle_expiry(&activity, limits.idle_timeout);
    tokio::pin!(idle);
    let lifetime = sleep_until(start + limits.max_lifetime);
    tokio::pin!(lifetime);

    let mut first_eof: Option<Side> = None;
    let (mut up_done, mut down_done) = (false, false);
    let close = loop {
        tokio::select! {
            r = &mut up, if !up_done => {
                up_done = true;
                match r {
                    Err(side) => break error_close(side),
                    Ok(()) => { first_eof.get_or_insert(Side::Client); }
                }
            }
            r = &mut down, if !down_done => {
                down_done = true;
                match r {
                    Err(side) => break error_close(side),
                    Ok(()) => { first_eof.get_or_insert(Side::Upstream); }
                }
            }
            () = &mut idle => break CloseReason::IdleTimeout,
            () = &mut lifetime => break CloseReason::MaxLifetime,
            _ = shutdown.wait_for(|stop| *stop) => break CloseReason::Shutdown,
        }
        if up_done && down_done {
            break match first_eof {
                Some(Side::Upstream) => CloseReason::UpstreamClosed,
                _ => CloseReason::ClientClosed,
            };
        }
    };
    TunnelOutcome {
        bytes_up: up_bytes.load(Ordering::Relaxed),
        bytes_down: down_bytes.load(Ordering::Relaxed),
        close,
    }
}

fn error_close(side: Side) -> CloseReason {
    match side {
        Side::Client => CloseReason::ClientError,
        Side::Upstream => CloseReason::UpstreamError,
    }
}

/// Move one direction; on end-of-stream, half-close the writer. The error names the socket
/// that failed (`from` is the reading side).
///
/// Reads start in a small buffer; a read that fills it means bulk data, and the rest of
/// the burst goes through the `Bulk` channel (a kernel pipe on Linux). Both exist only
/// while data is flowing: made when the socket becomes readable, dropped once it is
/// drained, so a thousand idle tunnels cost sockets and task state, not buffers.
async fn pump<Bulk: Channel>(
    reader: &TcpStream,
    writer: &TcpStream,
    from: Side,
    count: &AtomicU64,
    activity: &Activity,
    on_bytes: impl Fn(u64),
) -> Result<(), Side> {
    let to = match from {
        Side::Client => Side::Upstream,
        Side::Upstream => Side::Client,
    };
    loop {
        reader.readable().await.map_err(|_| from)?;
        let mut small = BufferChannel::with_capacity(SMALL);
        let mut bulk: Option<Bulk> = None;
        loop {
            let filled = match &mut bulk {
                Some(ch) => reader.try_io(Interest::READABLE, || ch.fill(reader)),
                None => reader.try_io(Interest::READABLE, || small.fill(reader)),
            };
            let n = match filled {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return Err(from),
            };
            if n == 0 {
                // The peer may already be gone; the other direction will report that.
                let _ = socket2::SockRef::from(writer).shutdown(std::net::Shutdown::Write);
                return Ok(());
            }
            let mut left = n;
            while left > 0 {
                writer.writable().await.map_err(|_| to)?;
                let drained = match &mut bulk {
                    Some(ch) => writer.try_io(Interest::WRITABLE, || ch.drain(writer, left)),
                    None => writer.try_io(Interest::WRITABLE, || small.drain(writer, left)),
                };
                match drained {
                    Ok(m) => left -= m,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return Err(to),
                }
            }
            count.fetch_add(n as u64, Ordering::Relaxed);
            on_bytes(n as u64);
            activity.touch();
            if bulk.is_none() && n >= SMALL {
                bulk = Some(Bulk::open().map_err(|_| from)?);
            }
        }
    }
}

/// Where bytes wait between the two sockets. `fill` reads once from the socket; `drain`
/// writes up to `len` of what is held. Both are non-blocking and report `WouldBlock`.
trait Channel: Sized {
    fn open() -> io::Result<Self>;
    fn fill(&mut self, from: &TcpStream) -> io::Result<usize>;
    fn drain(&mut self, to: &TcpStream, len: usize) -> io::Result<usize>;
}

/// Linux: `splice(2)` through a pipe, so the bytes never enter user space.
#[cfg(target_os = "linux")]
type Chan = PipeChannel;
#[cfg(not(target_os = "linux"))]
type Chan = BufferChannel;

#[cfg(target_os = "linux")]
struct PipeChannel {
    read: std::os::fd::OwnedFd,
    write: std::os::fd::OwnedFd,
    /// What the pipe holds: [`PIPE`], or the default where the kernel refuses more
    /// (`fs.pipe-max-size`, or a user over `fs.pipe-user-pages-soft`).
    capacity: usize,
}

#[cfg(target_os = "linux")]
impl Channel for PipeChannel {
    fn open() -> io::Result<Self> {
        use rustix::pipe::{PipeFlags, fcntl_setpipe_size, pipe_with};
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        let capacity = fcntl_setpipe_size(&write, PIPE).unwrap_or(BUFFER);
        Ok(Self {
            read,
            write,
            capacity,
        })
    }

    fn fill(&mut self, from: &TcpStream) -> io::Result<usize> {
        use rustix::pipe::{SpliceFlags, splice};
        Ok(splice(
            from,
            None,
            &self.write,
            None,
            self.capacity,
            SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
        )?)
    }

    fn drain(&mut self, to: &TcpStream, len: usize) -> io::Result<usize> {
        use rustix::pipe::{SpliceFlags, splice};
        Ok(splice(
            &self.read,
            None,
            to,
            None,
            len,
            SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
        )?)
    }
}

/// A user-space buffer: the first reads of every burst, and the bulk channel elsewhere
/// than Linux.
struct BufferChannel {
    buf: Vec<u8>,
    start: usize,
}

impl BufferChannel {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
            start: 0,
        }
    }
}

impl Channel for BufferChannel {
    fn open() -> io::Result<Self> {
        Ok(Self::with_capacity(BUFFER))
    }

    fn fill(&mut self, from: &TcpStream) -> io::Result<usize> {
        self.buf.clear();
        self.start = 0;
        from.try_read_buf(&mut self.buf)
    }

    fn drain(&mut self, to: &TcpStream, len: usize) -> io::Result<usize> {
        let end = self.buf.len().min(self.start + len);
        let n = to.try_write(&self.buf[self.start..end])?;
        self.start += n;
        Ok(n)
    }
}

/// Completes once no byte has moved for `idle`.
async fn idle_expiry(activity: &Activity, idle: Duration) {
    loop {
        let expires = activity.last() + idle;
        if Instant::now() >= expires {
            return;
        }
        sleep_until(expires).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (b, _) = listener.accept().await.unwrap();
        (a, b)
    }

    /// Both channel kinds move every byte in order and pass end-of-stream on as a FIN.
    async fn moves_bytes_and_eof<C: Channel>() {
        let (mut source, from) = pair().await;
        let (to, mut sink) = pair().await;
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let activity = Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        };
        let count = AtomicU64::new(0);
        let sender = {
            let payload = payload.clone();
            tokio::spawn(async move {
                source.write_all(&payload).await.unwrap();
                source.shutdown().await.unwrap();
                source
            })
        };
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            sink.read_to_end(&mut got).await.unwrap();
            got
        });
        pump::<C>(&from, &to, Side::Client, &count, &activity, |_| {})
            .await
            .unwrap();
        assert_eq!(count.load(Ordering::Relaxed), payload.len() as u64);
        assert_eq!(reader.await.unwrap(), payload);
        drop(sender.await.unwrap());
    }

    const BOUND: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn buffer_channel_relays() {
        tokio::time::timeout(BOUND, moves_bytes_and_eof::<BufferChannel>())
            .await
            .unwrap();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn pipe_channel_relays() {
        tokio::time::timeout(BOUND, moves_bytes_and_eof::<PipeChannel>())
            .await
            .unwrap();
    }

    /// A bulk pipe holds [`PIPE`] where the kernel allows pipes that large, and the default
    /// elsewhere (the relay works with either).
    #[cfg(target_os = "linux")]
    #[test]
    fn bulk_pipes_are_as_large_as_the_kernel_allows() {
        let max: usize = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let pipe = PipeChannel::open().unwrap();
        if max >= PIPE {
            assert!(pipe.capacity >= PIPE, "{}", pipe.capacity);
        } else {
            assert!(pipe.capacity >= BUFFER, "{}", pipe.capacity);
        }
    }
}
