//! Tunnels: relaying bytes both ways once a request is allowed.
//!
//! Each direction is its own copy loop so that end-of-stream is propagated as a half-close
//! (`shutdown(Write)` on the other socket) while the opposite direction keeps flowing. The
//! tunnel ends when both directions have finished, on the first error, when no byte has
//! moved for the idle timeout, at the maximum lifetime, or when the server shuts down;
//! both sockets are then dropped, so neither side is left in `CLOSE_WAIT`.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use crate::decision::CloseReason;
use crate::metrics::EgressMetrics;

const BUFFER: usize = 64 * 1024;

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
    mut client: TcpStream,
    mut upstream: TcpStream,
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
    let (client_r, client_w) = client.split();
    let (upstream_r, upstream_w) = upstream.split();
    let up = pump(
        client_r,
        upstream_w,
        Side::Client,
        &up_bytes,
        &activity,
        |n| {
            metrics.add_up(n);
        },
    );
    let down = pump(
        upstream_r,
        client_w,
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

/// Copy one direction; on end-of-stream, half-close the writer. The error names the socket
/// that failed (`from` is the reading side).
///
/// The buffer exists only while data is flowing: it is allocated when the socket becomes
/// readable and released once it is drained, so a thousand idle tunnels cost sockets and
/// task state, not a thousand pairs of 64 KiB buffers.
async fn pump(
    reader: ReadHalf<'_>,
    mut writer: WriteHalf<'_>,
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
        let mut buf = Vec::with_capacity(BUFFER);
        loop {
            buf.clear();
            let n = match reader.try_read_buf(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return Err(from),
            };
            if n == 0 {
                // The peer may already be gone; the other direction will report that.
                let _ = writer.shutdown().await;
                return Ok(());
            }
            writer.write_all(&buf).await.map_err(|_| to)?;
            count.fetch_add(n as u64, Ordering::Relaxed);
            on_bytes(n as u64);
            activity.touch();
        }
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
