//! Wiring for `airlock serve`: configuration → store, registry and routes; the listener
//! with TLS (HTTP/1.1 and HTTP/2); health, Harbor-compatible status endpoints and the CA
//! download; `/metrics`; one access-log line per request; store upkeep (last-use times,
//! eviction); connection caps and timeouts; graceful shutdown.

mod admin;
mod console;
mod limits;
mod maintenance;
mod metrics;
mod registry_auth;
mod routes;
mod serve;
pub mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use airlock_config::{Config, S3Config, StorageConfig};
use airlock_registry::Registry;
use airlock_store::k2v::{K2v, K2vSettings};
use airlock_store::shared::Shared;
use airlock_store::{BlobStore, FsStore, MetaIndex, S3Credentials, S3Settings, S3Store, layout};
use airlock_upstream::fetch::Downloads;
use airlock_upstream::{SiteProxy, SiteProxyError};

pub use serve::{Gateway, run};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot create data_dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] airlock_store::StoreError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Setup(#[from] airlock_registry::SetupError),
    #[error(transparent)]
    SiteProxy(#[from] SiteProxyError),
    #[error(transparent)]
    Pins(#[from] admin::pins::PinFileError),
    #[error("cannot open the audit trail {path}: {source}")]
    Audit {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot set up the registry's token key: {0}")]
    TokenKey(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Everything the HTTP routes need.
#[derive(Debug)]
pub(crate) struct AppState {
    pub config: Config,
    pub registry: Arc<Registry>,
    pub packages: Arc<airlock_packages::Packages>,
    pub ca_pem: Option<String>,
    pub metrics: metrics::Metrics,
    pub connections: limits::ConnectionLimits,
    pub egress: Option<Arc<airlock_egress::EgressPolicy>>,
    /// The store and index the registry and package proxies share (bundle imports write
    /// into them).
    pub store: Arc<dyn BlobStore>,
    pub index: MetaIndex,
    /// `[admin]` users and failed logins; `None`: no admin API.
    pub logins: Option<admin::Logins>,
    /// Failed logins per client, over the admin API, the console and `/service/token`.
    pub(crate) failures: Arc<admin::Failures>,
    /// The registry's tokens (`/service/token`).
    pub(crate) tokens: registry_auth::token::Tokens,
    /// Bundle imports run one at a time.
    pub imports: tokio::sync::Mutex<()>,
    /// Console sessions.
    pub sessions: admin::session::Sessions,
    /// Pins made through the admin API, held against eviction with `[cache] pin`.
    pub pins: admin::pins::RuntimePins,
    /// Prefetch jobs and their progress.
    pub jobs: admin::Jobs,
    /// The audit trail every request's upstream fetches are written to.
    pub audit: airlock_audit::Audit,
    /// The last 24 hours per proxy, for the console.
    pub history: console::History,
}

/// Opens the store and index under `data_dir`, cleaning up after any crash.
async fn open_store(config: &Config) -> Result<(Arc<dyn BlobStore>, MetaIndex), GatewayError> {
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|source| GatewayError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    let (store, shared): (Arc<dyn BlobStore>, _) = match &config.storage {
        StorageConfig::Fs => (
            Arc::new(FsStore::open(layout::store_root(data_dir)).await?),
            None,
        ),
        StorageConfig::S3(s3) => (Arc::new(open_bucket(s3, data_dir).await?), open_shared(s3)?),
    };
    let removed = store.clean_temp().await?;
    if removed > 0 {
        tracing::info!(target: "airlock::store", removed, "removed unfinished downloads left by a previous run");
    }
    let mut index = MetaIndex::open(&layout::index_path(data_dir))?;
    if let Some(shared) = shared {
        index = index.sharing(Arc::new(shared));
    }
    // Uploads a previous run was receiving or importing when it stopped.
    let uploads = layout::uploads_dir(data_dir);
    if uploads.exists() {
        std::fs::remove_dir_all(&uploads).map_err(|source| GatewayError::DataDir {
            path: uploads.display().to_string(),
            source,
        })?;
    }
    Ok((store, index))
}

/// The s3 backend: the access key from its files or the environment, local state under
/// `data_dir`. A bucket that cannot be reached now is logged, not fatal: the hot tier
/// still serves, and the bucket is tried again on every miss.
async fn open_bucket(s3: &S3Config, data_dir: &Path) -> Result<S3Store, GatewayError> {
    let settings = S3Settings {
        bucket: s3.bucket.clone(),
        endpoint: s3.endpoint_text(),
        region: s3.region.clone(),
        path_style: s3.path_style,
        credentials: S3Credentials::load(
            s3.access_key_id_file.as_deref(),
            s3.secret_access_key_file.as_deref(),
        )?,
    };
    let store = S3Store::open(&settings, &layout::s3_local_dir(data_dir), s3.local_cache.0).await?;
    match store.probe().await {
        Ok(()) => {
            tracing::info!(target: "airlock::store", bucket = %s3.bucket, "blobs are kept in the S3 bucket");
        }
        Err(error) => {
            tracing::warn!(target: "airlock::store", bucket = %s3.bucket, %error, "the S3 bucket cannot be used yet; serving what the hot tier holds");
        }
    }
    Ok(store)
}

/// With `k2v_endpoint`: the records this replica shares with the others on the bucket,
/// under a name of its own for download leases (host name and a random suffix, so two
/// replicas on one host differ too).
fn open_shared(s3: &S3Config) -> Result<Option<Shared>, GatewayError> {
    let Some(endpoint) = s3.k2v_endpoint_text() else {
        return Ok(None);
    };
    let k2v = K2v::new(K2vSettings {
        endpoint,
        bucket: s3.bucket.clone(),
        region: s3.region.clone(),
        credentials: S3Credentials::load(
            s3.access_key_id_file.as_deref(),
            s3.secret_access_key_file.as_deref(),
        )?,
    })?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "airlock".to_owned(), |h| h.trim().to_owned());
    let replica = format!("{host}-{:08x}", rand::random::<u32>());
    tracing::info!(target: "airlock::store", %replica, "tags, records and download leases are shared with the other gateways on the bucket (K2V)");
    Ok(Some(Shared::new(k2v, replica)))
}

/// Builds the application from a configuration (no sockets yet).
pub(crate) async fn build(
    config: Config,
) -> Result<(Arc<AppState>, Option<tls::Tls>), GatewayError> {
    let (store, index) = open_store(&config).await?;
    let audit = airlock_audit::Audit::open(&airlock_audit::Settings {
        path: config.audit.path.clone(),
        max_size: config.audit.max_size.0,
        keep: config.audit.keep,
    })
    .map_err(|source| GatewayError::Audit {
        path: config.audit.path.display().to_string(),
        source,
    })?;
    let downloads = Arc::new(Downloads::new(store.clone(), index.clone()));
    let site_proxy = config
        .upstream_proxy
        .as_ref()
        .map(SiteProxy::load)
        .transpose()?;
    if let Some(site) = &site_proxy {
        tracing::info!(
            target: "airlock::upstream",
            proxy = %site.settings().url,
            no_proxy = site.settings().no_proxy.len(),
            "upstream requests go through the site's proxy"
        );
    }
    let packages = Arc::new(
        airlock_packages::Packages::new(&config, site_proxy.as_ref(), &store, &index, &downloads)
            .map_err(|e| GatewayError::Setup(e.into()))?,
    );
    let registry = Arc::new(Registry::new(
        &config,
        site_proxy.as_ref(),
        store.clone(),
        index.clone(),
        downloads,
    )?);
    let tls = tls::setup(&config, &layout::tls_dir(&config.data_dir))?;
    let ca_pem = tls.as_ref().and_then(|t| t.ca_pem.clone());
    let egress = config.egress.clone().map(|settings| {
        let policy = airlock_egress::EgressPolicy::new(settings).with_audit(audit.clone());
        let Some(site) = &site_proxy else {
            return Arc::new(policy);
        };
        match airlock_egress::UpstreamChain::new(site.settings(), site.password()) {
            Ok(chain) => Arc::new(policy.with_upstream_chain(chain)),
            Err(err) => {
                tracing::warn!(target: "airlock::egress", error = %err, "egress tunnels go direct");
                Arc::new(policy)
            }
        }
    });
    let connections = limits::ConnectionLimits::new(&config.server);
    let pins = admin::pins::RuntimePins::load(&config.data_dir, &registry)?;
    let config_users = config.admin_users.clone();
    let failures = Arc::new(admin::Failures::default());
    let tokens = registry_auth::token::Tokens::load(&config.data_dir, config.token_ttl.0)
        .map_err(GatewayError::TokenKey)?;
    Ok((
        Arc::new(AppState {
            connections,
            config,
            registry,
            packages,
            ca_pem,
            metrics: metrics::Metrics::default(),
            egress,
            store,
            index,
            logins: admin::Logins::new(&config_users, failures.clone()),
            failures,
            tokens,
            imports: tokio::sync::Mutex::new(()),
            sessions: admin::session::Sessions::new(admin::session::IDLE, admin::session::ABSOLUTE),
            pins,
            jobs: admin::Jobs::default(),
            audit,
            history: console::History::default(),
        }),
        tls,
    ))
}
