//! The listener: accept under the connection caps, TLS handshake, HTTP/1.1 or HTTP/2
//! with header and idle timeouts, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use airlock_config::{Config, ServerConfig};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::limits::{Activity, Expiry, Tracked, Watched};
use crate::{AppState, GatewayError, build, routes};

/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a connection closed by the watchdog may take to say goodbye.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// hyper's smallest HTTP/1 read buffer (`max_header_size` is validated to be at least this).
const MIN_HTTP1_BUFFER: usize = 8 << 10;
/// Encrypted bytes a TLS connection holds while its socket is full: one record and a bit.
/// rustls' default (64 KiB) beside the 128 KiB chunk hyper holds cost each of a rollout's
/// thousands of stalled streams a third more memory, and sent nothing sooner.
const TLS_UNSENT_LIMIT: usize = 20 << 10;

const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// A bound, ready-to-serve gateway.
pub struct Gateway {
    listener: TcpListener,
    egress_listener: Option<TcpListener>,
    app: axum::Router,
    tls: Option<TlsAcceptor>,
    state: Arc<AppState>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listen", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Opens the store, prepares TLS and binds the listener. No upstream is contacted:
    /// the gateway starts with every upstream unreachable.
    pub async fn bind(config: Config) -> Result<Self, GatewayError> {
        let addr = config.server.listen;
        let (state, tls) = build(config).await?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| GatewayError::Bind { addr, source })?;
        let egress_listener = match &state.egress {
            Some(policy) => {
                let addr = policy.listen();
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| GatewayError::Bind { addr, source })?,
                )
            }
            None => None,
        };
        let app = routes::router(state.clone());
        Ok(Self {
            listener,
            egress_listener,
            app,
            tls: tls.map(|t| TlsAcceptor::from(t.server_config)),
            state,
        })
    }

    /// Where the egress proxy listens, when it runs.
    pub fn egress_addr(&self) -> Option<SocketAddr> {
        self.egress_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The generated CA (PEM), when `tls.mode = "self-signed"`.
    pub fn ca_pem(&self) -> Option<&str> {
        self.state.ca_pem.as_deref()
    }

    /// Serves until `shutdown` completes, then stops accepting and waits up to
    /// `server.shutdown_grace` for requests in flight.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), GatewayError> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        tracing::info!(
            target: "airlock::gateway",
            listen = %self.local_addr(),
            scheme,
            proxies = self.state.config.proxies.len(),
            "gateway listening"
        );
        let upkeep = tokio::spawn(crate::maintenance::run(self.state.clone()));
        let (stop_egress, egress_stopped) = tokio::sync::watch::channel(false);
        let egress = match (self.egress_listener, self.state.egress.clone()) {
            (Some(listener), Some(policy)) => {
                let mut stopped = egress_stopped;
                Some(tokio::spawn(airlock_egress::serve(
                    policy,
                    listener,
                    async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    },
                )))
            }
            _ => None,
        };
        let builder = http_builder(&self.state.config.server);
        let (stop, stopping) = tokio::sync::watch::channel(false);
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(target: "airlock::gateway", %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Admitted here, in accept order, so the caps are exact; a refused connection is
            // closed at once (dropping the stream), before any TLS work is spent on it.
            let slot = match self.state.connections.admit(peer.ip()) {
                Ok(slot) => slot,
                Err(reason) => {
                    self.state.metrics.connection_refused(reason);
                    self.state.connections.warn_refused(reason, peer.ip());
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let connection = Connection {
                app: self.app.clone(),
                builder: builder.clone(),
                state: self.state.clone(),
                stopping: stopping.clone(),
                peer,
            };
            let tls = self.tls.clone();
            tokio::spawn(async move {
                let _slot = slot;
                match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        {
                            Ok(Ok(mut tls_stream)) => {
                                tls_stream
                                    .get_mut()
                                    .1
                                    .set_buffer_limit(Some(TLS_UNSENT_LIMIT));
                                connection.serve(tls_stream).await;
                            }
                            Ok(Err(error)) => {
                                tracing::debug!(target: "airlock::gateway", %peer, %error, "TLS handshake failed");
                            }
                            Err(_) => connection
                                .state
                                .metrics
                                .connection_timed_out(Expiry::Handshake),
                        }
                    }
                    None => connection.serve(stream).await,
                }
            });
        }
        drop(self.listener);
        drop(stopping);
        upkeep.abort();
        let _ = stop_egress.send(true);
        if let Err(error) = self.state.registry.index().flush_touches().await {
            tracing::warn!(target: "airlock::gateway", %error, "could not record last-use times at shutdown");
        }
        let grace = self.state.config.server.shutdown_grace.0;
        tracing::info!(target: "airlock::gateway", grace_secs = grace.as_secs(), "shutting down: draining requests");
        let _ = stop.send(true);
        tokio::select! {
            // Every connection task holds a receiver until it ends.
            () = stop.closed() => tracing::info!(target: "airlock::gateway", "all connections closed"),
            () = tokio::time::sleep(grace) => tracing::warn!(target: "airlock::gateway", "grace period over: closing remaining connections"),
        }
        if let Some(egress) = egress {
            match egress.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(target: "airlock::egress", %error, "egress proxy stopped with an error");
                }
                Err(error) => {
                    tracing::warn!(target: "airlock::egress", %error, "egress proxy task failed");
                }
            }
        }
        Ok(())
    }
}

/// The HTTP/1.1 and HTTP/2 settings of every connection.
fn http_builder(server: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let max_header_size = server.max_header_size.0 as usize;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // Header and idle timeouts are the watchdog's (see `limits`): hyper's header timer
        // would also cut idle keep-alive connections at the header timeout.
        .header_read_timeout(None)
        .keep_alive(true)
        // hyper answers 431 when a request head does not fit its read buffer. The same
        // bound caps its write buffer, which costs nothing here: blob bodies come in 256KiB
        // chunks and a chunk is always written whole.
        .max_buf_size(max_header_size.max(MIN_HTTP1_BUFFER));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_header_size).unwrap_or(u32::MAX))
        // Pings find peers that vanished mid-download without closing the connection.
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    builder
}

/// What one accepted connection needs to be served.
struct Connection {
    app: axum::Router,
    builder: auto::Builder<TokioExecutor>,
    state: Arc<AppState>,
    stopping: tokio::sync::watch::Receiver<bool>,
    peer: SocketAddr,
}

impl Connection {
    /// Serves HTTP on `io` until the client closes, the watchdog closes it for being slow
    /// or idle, or shutdown drains it.
    async fn serve<T>(mut self, io: T)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Activity::start(&self.state.config.server);
        let service = Tracked::new(
            TowerToHyperService::new(self.app),
            activity.clone(),
            self.peer,
        );
        let connection = self.builder.serve_connection_with_upgrades(
            TokioIo::new(Watched::new(io, activity.clone())),
            service,
        );
        tokio::pin!(connection);
        let peer = self.peer;
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = async { drop(self.stopping.wait_for(|stop| *stop).await) } => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
            why = activity.expired() => {
                self.state.metrics.connection_timed_out(why);
                tracing::debug!(target: "airlock::gateway", %peer, reason = why.as_str(), "closing connection");
                // An idle connection gets a goodbye (HTTP/2 GOAWAY) if the client takes it
                // promptly. A half-sent request head gets none: hyper would wait for the
                // head to finish before closing.
                if why == Expiry::Idle {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(GOODBYE_TIMEOUT, connection).await;
                }
                return;
            }
        };
        if let Err(error) = result {
            tracing::debug!(target: "airlock::gateway", %peer, %error, "connection ended with an error");
        }
    }
}

/// Runs the gateway for `config` until `shutdown`.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), GatewayError> {
    Gateway::bind(config).await?.serve(shutdown).await
}
