//! Starts the package proxies alone: `airlock_packages::Packages` over a store in a temporary
//! directory, mounted at `/repository/` on a loopback port, as the gateway mounts it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use airlock_config::Config;
use airlock_packages::Packages;
use airlock_store::{BlobStore, FsStore, MetaIndex, layout};
use airlock_upstream::fetch::Downloads;
use axum::Router;
use axum::routing::any;

pub use airlock_testkit::http::{client, get, get_accepting, raw_get};

/// Serves the package proxies of the given `[[proxy]]` tables on a free loopback port,
/// plain HTTP, their data under `dir/data`; they run until the test ends.
pub async fn start(dir: &Path, proxies: &str) -> SocketAddr {
    start_with_packages(dir, proxies).await.0
}

/// Proxies started by [`start_stoppable`]: stopped, they release their data directory (the
/// metadata index is locked while open), so the same one can be started again.
pub struct Stoppable {
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<()>,
}

impl Stoppable {
    /// Stops accepting, lets open connections finish, and waits until everything the
    /// proxies held is dropped.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(std::time::Duration::from_secs(30), self.served)
            .await
            .expect("the proxies stop within 30 s")
            .unwrap();
    }
}

/// [`start`], stoppable.
pub async fn start_stoppable(dir: &Path, proxies: &str) -> Stoppable {
    let (app, _) = app(dir, proxies).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Stoppable { addr, stop, served }
}

/// [`start`], also handing back the proxies' service (for their derived-cache statistics).
pub async fn start_with_packages(dir: &Path, proxies: &str) -> (SocketAddr, Arc<Packages>) {
    let (app, packages) = app(dir, proxies).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, packages)
}

/// The proxies' router over the data in `dir/data`.
/// The index at `path`. A gateway stopped a moment ago on the same data may still be
/// dropping what held its index (tasks it spawned, finishing in the background), and its
/// lock goes with the last of them: wait for it, a bounded while.
async fn open_index(path: &Path) -> MetaIndex {
    for _ in 0..200 {
        match MetaIndex::open(path) {
            Err(airlock_store::StoreError::Locked { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            opened => return opened.unwrap(),
        }
    }
    panic!("{} stayed locked for 10 s", path.display())
}

async fn app(dir: &Path, proxies: &str) -> (Router, Arc<Packages>) {
    let text = format!(
        "data_dir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\n[tls]\nmode = \"off\"\n{proxies}",
        dir.join("data").display().to_string()
    );
    let config = Config::from_toml_str(&text, "test").expect("test config is valid");
    std::fs::create_dir_all(&config.data_dir).unwrap();
    let store: Arc<dyn BlobStore> = Arc::new(
        FsStore::open(layout::store_root(&config.data_dir))
            .await
            .unwrap(),
    );
    let index = open_index(&layout::index_path(&config.data_dir)).await;
    let downloads = Arc::new(Downloads::new(store.clone(), index.clone()));
    let packages = Arc::new(
        Packages::new(&config, None, &store, &index, &downloads).expect("the proxies start"),
    );
    let app = Router::new()
        .route("/repository/{*rest}", any(airlock_packages::handle))
        .with_state(packages.clone());
    (app, packages)
}

/// A loopback port nothing listens on: an upstream that cannot be reached.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where the store under `dir/data` keeps the blob of `bytes`.
pub fn blob_file(dir: &Path, bytes: &[u8]) -> std::path::PathBuf {
    let hex = airlock_types::Digest::of(bytes).hex().to_owned();
    layout::store_root(&dir.join("data"))
        .join("blobs/sha256")
        .join(&hex[..2])
        .join(hex)
}
