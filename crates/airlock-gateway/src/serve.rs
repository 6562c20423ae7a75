//! The listener: accept, TLS handshake, HTTP/1.1 or HTTP/2, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use airlock_config::Config;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::{AppState, GatewayError, build, routes};

/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

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
        let graceful = GracefulShutdown::new();
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
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(self.app.clone());
            let watcher = graceful.watcher();
            let tls = self.tls.clone();
            tokio::spawn(async move {
                let builder = auto::Builder::new(TokioExecutor::new());
                let result = match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        {
                            Ok(Ok(tls_stream)) => {
                                watcher
                                    .watch(
                                        builder
                                            .serve_connection_with_upgrades(
                                                TokioIo::new(tls_stream),
                                                service,
                                            )
                                            .into_owned(),
                                    )
                                    .await
                            }
                            Ok(Err(error)) => {
                                tracing::debug!(target: "airlock::gateway", %peer, %error, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        }
                    }
                    None => {
                        watcher
                            .watch(
                                builder
                                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                    .into_owned(),
                            )
                            .await
                    }
                };
                if let Err(error) = result {
                    tracing::debug!(target: "airlock::gateway", %peer, %error, "connection ended with an error");
                }
            });
        }
        drop(self.listener);
        upkeep.abort();
        let _ = stop_egress.send(true);
        if let Err(error) = self.state.registry.index().flush_touches().await {
            tracing::warn!(target: "airlock::gateway", %error, "could not record last-use times at shutdown");
        }
        let grace = self.state.config.server.shutdown_grace.0;
        tracing::info!(target: "airlock::gateway", grace_secs = grace.as_secs(), "shutting down: draining requests");
        tokio::select! {
            () = graceful.shutdown() => tracing::info!(target: "airlock::gateway", "all connections closed"),
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

/// Runs the gateway for `config` until `shutdown`.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), GatewayError> {
    Gateway::bind(config).await?.serve(shutdown).await
}
