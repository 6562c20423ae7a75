//! Connection hygiene for the gateway listener: how many connections may be open (in all
//! and per client IP address), and when an open connection is closed for being slow or
//! idle. The egress proxy shares the process and its file descriptors, so a flood of
//! half-open gateway connections must not be able to starve it.
//!
//! The timeouts are kept here rather than left to hyper because hyper's HTTP/1 header
//! timer does not cover what the listener needs: it does not run while the auto builder
//! tells HTTP/1 from HTTP/2 (a client that sends nothing at all is never closed), there is
//! no equivalent for HTTP/2, and it restarts whenever a keep-alive connection goes idle, so
//! it would also cut idle connections at the header timeout instead of `idle_timeout`.
//! Instead [`Activity`] watches each connection: the service wrapper [`Tracked`] counts
//! requests in flight (until their response body is done or dropped) and the I/O wrapper
//! [`Watched`] notes when a new HTTP/1 request head starts arriving.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use airlock_config::ServerConfig;
use http::{Request, Response, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// At most one warning per this interval about refused connections; the rest are counted.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Which cap turned a connection away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `max_connections` were open.
    Total,
    /// `max_connections_per_client` were open from the same address.
    PerClient,
}

impl Refused {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refused::Total => "max_connections",
            Refused::PerClient => "max_connections_per_client",
        }
    }
}

/// The caps on open connections, shared by the accept loop and `/metrics`.
#[derive(Debug)]
pub(crate) struct ConnectionLimits {
    total: Arc<Semaphore>,
    max_total: usize,
    max_per_client: u32,
    /// Open connections by client address. An entry goes when its count reaches zero, so
    /// the map never holds more entries than there are open connections.
    per_client: Arc<Mutex<HashMap<IpAddr, u32>>>,
    /// When the last refusal warning was logged, and how many refusals went unlogged since.
    last_warning: Mutex<Option<Instant>>,
    unlogged: AtomicU64,
}

/// One admitted connection's place under the caps; dropping it gives the place back.
#[derive(Debug)]
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    client: IpAddr,
    per_client: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.per_client.lock().expect("connection count lock");
        if let Some(count) = counts.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

impl ConnectionLimits {
    pub(crate) fn new(server: &ServerConfig) -> Self {
        let max_total = server.max_connections as usize;
        Self {
            total: Arc::new(Semaphore::new(max_total)),
            max_total,
            max_per_client: server.max_connections_per_client,
            per_client: Arc::default(),
            last_warning: Mutex::new(None),
            unlogged: AtomicU64::new(0),
        }
    }

    /// Takes a place for a connection from `client`, or says which cap is reached.
    pub(crate) fn admit(&self, client: IpAddr) -> Result<Slot, Refused> {
        // An IPv4 client reaching a dual-stack socket arrives as ::ffff:a.b.c.d; it is the
        // same client as a.b.c.d.
        let client = client.to_canonical();
        let permit = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Total)?;
        let mut counts = self.per_client.lock().expect("connection count lock");
        let count = counts.get(&client).copied().unwrap_or(0);
        if count >= self.max_per_client {
            return Err(Refused::PerClient);
        }
        counts.insert(client, count + 1);
        drop(counts);
        Ok(Slot {
            _permit: permit,
            client,
            per_client: self.per_client.clone(),
        })
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.max_total - self.total.available_permits()
    }

    /// Client addresses with a connection open now.
    pub(crate) fn clients(&self) -> usize {
        self.per_client.lock().expect("connection count lock").len()
    }

    /// Warns about a refused connection, at most once per [`REFUSAL_LOG_INTERVAL`]: a flood
    /// of refusals must not become a flood of log lines.
    pub(crate) fn warn_refused(&self, reason: Refused, client: IpAddr) {
        let now = Instant::now();
        let mut last = self.last_warning.lock().expect("refusal log lock");
        if last.is_some_and(|at| now.duration_since(at) < REFUSAL_LOG_INTERVAL) {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(now);
        drop(last);
        let also_refused = self.unlogged.swap(0, Ordering::Relaxed);
        let limit = match reason {
            Refused::Total => self.max_total,
            Refused::PerClient => self.max_per_client as usize,
        };
        tracing::warn!(
            target: "airlock::gateway",
            %client,
            limit,
            also_refused,
            "connection refused: [server] {} ({limit}) reached; raise it if this is real load",
            reason.as_str()
        );
    }
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// The TLS handshake took too long.
    Handshake,
    /// A request head did not arrive in full within `header_timeout`.
    Header,
    /// No request was in flight for `idle_timeout`.
    Idle,
}

impl Expiry {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Expiry::Handshake => "handshake_timeout",
            Expiry::Header => "header_timeout",
            Expiry::Idle => "idle_timeout",
        }
    }
}

/// What one connection is doing, as far as its timeouts care.
#[derive(Debug)]
pub(crate) struct Activity {
    header_timeout: Duration,
    idle_timeout: Duration,
    state: Mutex<ActivityState>,
    changed: Notify,
}

#[derive(Debug)]
struct ActivityState {
    /// Requests whose response is not yet fully sent (or abandoned).
    in_flight: usize,
    /// Requests received so far; until the first, the header timeout runs from the start.
    received: u64,
    http2: bool,
    /// Since when no request has been in flight (or when the connection started).
    idle_since: Instant,
    /// When the first byte after `idle_since` arrived: on HTTP/1 that is a request head
    /// starting. On HTTP/2 bytes between requests are as likely to be pings or window
    /// updates, so there only `idle_timeout` applies between requests.
    head_started: Option<Instant>,
}

impl Activity {
    /// A connection whose first request head is due within the header timeout from now.
    pub(crate) fn start(server: &ServerConfig) -> Arc<Self> {
        Arc::new(Self {
            header_timeout: server.header_timeout.0,
            idle_timeout: server.idle_timeout.0,
            state: Mutex::new(ActivityState {
                in_flight: 0,
                received: 0,
                http2: false,
                idle_since: Instant::now(),
                head_started: None,
            }),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().expect("connection activity lock")
    }

    /// When the connection is due to be closed and why; `None` while a request is in flight.
    fn deadline(&self) -> Option<(Instant, Expiry)> {
        let state = self.lock();
        if state.in_flight > 0 {
            return None;
        }
        if state.received == 0 {
            return Some((state.idle_since + self.header_timeout, Expiry::Header));
        }
        let idle = (state.idle_since + self.idle_timeout, Expiry::Idle);
        match state.head_started {
            Some(at) if !state.http2 && at + self.header_timeout < idle.0 => {
                Some((at + self.header_timeout, Expiry::Header))
            }
            _ => Some(idle),
        }
    }

    /// Completes when the connection should be closed.
    pub(crate) async fn expired(&self) -> Expiry {
        loop {
            // Registered before the state is read, so a change in between is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.deadline() {
                None => changed.await,
                Some((at, _)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {
                            // The deadline may have moved while asleep; act on the current one.
                            match self.deadline() {
                                Some((again, why)) if again <= Instant::now() => return why,
                                _ => {}
                            }
                        }
                        () = changed => {}
                    }
                }
            }
        }
    }

    fn request_started(&self, version: Version) {
        let mut state = self.lock();
        state.in_flight += 1;
        state.received += 1;
        state.http2 = version == Version::HTTP_2;
        state.head_started = None;
        drop(state);
        self.changed.notify_waiters();
    }

    fn request_finished(&self) {
        let mut state = self.lock();
        state.in_flight -= 1;
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
            state.head_started = None;
        }
        drop(state);
        self.changed.notify_waiters();
    }

    fn bytes_read(&self) {
        let mut state = self.lock();
        if state.in_flight == 0 && state.received > 0 && state.head_started.is_none() {
            state.head_started = Some(Instant::now());
            drop(state);
            self.changed.notify_waiters();
        }
    }
}

/// Counts a request as in flight from the moment hyper hands it over until its response
/// body is finished or dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>, version: Version) -> Self {
        activity.request_started(version);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A response body that keeps its request counted as in flight while it is alive.
pub(crate) struct TrackedBody<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A hyper service that reports its requests to the connection's [`Activity`].
#[derive(Clone)]
pub(crate) struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    /// The client's address, handed to handlers as axum's `ConnectInfo`.
    peer: SocketAddr,
}

impl<S> Tracked<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>, peer: SocketAddr) -> Self {
        Self {
            inner,
            activity,
            peer,
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: Body + Unpin,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        // Made before the handler runs so that a handler abandoned mid-way (the client went
        // away) still ends the request when its future is dropped.
        let in_flight = InFlight::new(&self.activity, request.version());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|inner| TrackedBody {
                inner,
                _in_flight: in_flight,
            }))
        })
    }
}

/// The connection's byte stream, reporting reads to its [`Activity`].
pub(crate) struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    pub(crate) fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(total: u32, per_client: u32) -> ServerConfig {
        ServerConfig {
            max_connections: total,
            max_connections_per_client: per_client,
            ..ServerConfig::default()
        }
    }

    #[test]
    fn per_client_cap_counts_each_address_and_forgets_it_at_zero() {
        let limits = ConnectionLimits::new(&server(10, 2));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "::1".parse().unwrap();
        let a1 = limits.admit(a).unwrap();
        // The IPv4-mapped form is the same client.
        let a2 = limits.admit("::ffff:127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(limits.admit(a).unwrap_err(), Refused::PerClient);
        let b1 = limits.admit(b).unwrap();
        assert_eq!((limits.open(), limits.clients()), (3, 2));
        drop(a1);
        let a3 = limits.admit(a).unwrap();
        drop((a2, a3, b1));
        assert_eq!(
            (limits.open(), limits.clients()),
            (0, 0),
            "no state left once every connection closed"
        );
    }

    #[test]
    fn total_cap_refuses_before_touching_the_client_map() {
        let limits = ConnectionLimits::new(&server(2, 2));
        let held: Vec<_> = (1..=2u8)
            .map(|i| limits.admit(IpAddr::from([127, 0, 0, i])).unwrap())
            .collect();
        assert_eq!(
            limits.admit(IpAddr::from([127, 0, 0, 3])).unwrap_err(),
            Refused::Total
        );
        assert_eq!(limits.clients(), 2, "a refused client leaves no entry");
        drop(held);
        assert!(limits.admit(IpAddr::from([127, 0, 0, 3])).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_connection_state() {
        let config = ServerConfig {
            header_timeout: airlock_types::HumanDuration::from_secs(10),
            idle_timeout: airlock_types::HumanDuration::from_secs(60),
            ..ServerConfig::default()
        };
        let activity = Activity::start(&config);
        let start = Instant::now();
        assert_eq!(
            activity.deadline(),
            Some((start + Duration::from_secs(10), Expiry::Header))
        );
        let request = InFlight::new(&activity, Version::HTTP_11);
        assert_eq!(activity.deadline(), None, "nothing expires mid-request");
        tokio::time::advance(Duration::from_secs(100)).await;
        activity.bytes_read();
        drop(request);
        let idle = Instant::now();
        assert_eq!(
            activity.deadline(),
            Some((idle + Duration::from_secs(60), Expiry::Idle))
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        activity.bytes_read();
        assert_eq!(
            activity.deadline(),
            Some((idle + Duration::from_secs(40), Expiry::Header)),
            "a started HTTP/1 head must finish within the header timeout"
        );
        assert_eq!(activity.expired().await, Expiry::Header);
        assert_eq!(Instant::now(), idle + Duration::from_secs(40));

        let http2 = Activity::start(&config);
        drop(InFlight::new(&http2, Version::HTTP_2));
        http2.bytes_read();
        assert_eq!(
            http2.deadline().map(|(_, why)| why),
            Some(Expiry::Idle),
            "bytes between HTTP/2 requests are not a request head"
        );
    }
}
