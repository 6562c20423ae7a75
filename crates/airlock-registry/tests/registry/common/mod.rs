//! Serves the registry alone: `airlock_registry::Registry` over a store under the config's
//! `data_dir`, mounted at `/v2/` on a loopback port as the gateway mounts it, until a
//! shutdown future completes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use airlock_config::Config;
use airlock_registry::{Registry, SetupError};
use airlock_store::{BlobStore, FsStore, MetaIndex, StoreError, layout};
use airlock_upstream::fetch::Downloads;
use axum::Router;
use axum::routing::any;
use tokio::net::TcpListener;

pub use airlock_testkit::http::{get, raw_get};

/// Why a test server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("cannot create or bind: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound registry server, not serving yet.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    registry: Arc<Registry>,
}

impl Server {
    /// Opens the store and index under `config.data_dir` (removing unfinished downloads, as
    /// the gateway does at startup), builds the registry and binds `server.listen`.
    pub async fn bind(config: Config) -> Result<Self, StartError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let store = FsStore::open(layout::store_root(&config.data_dir)).await?;
        store.clean_temp().await?;
        let store: Arc<dyn BlobStore> = Arc::new(store);
        let index = MetaIndex::open(&layout::index_path(&config.data_dir))?;
        let downloads = Arc::new(Downloads::new(store.clone(), index.clone()));
        let registry = Arc::new(Registry::new(&config, None, store, index, downloads)?);
        let listener = TcpListener::bind(config.server.listen).await?;
        Ok(Self { listener, registry })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap()
    }

    /// Serves until `shutdown` completes and the connections close, then records last-use
    /// times, as the gateway does when it stops.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let app = Router::new()
            .route("/v2", any(airlock_registry::handle))
            .route("/v2/", any(airlock_registry::handle))
            .route("/v2/{*rest}", any(airlock_registry::handle))
            .with_state(self.registry.clone());
        let _ = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        let _ = self.registry.index().flush_touches().await;
    }
}
