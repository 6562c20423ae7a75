//! The scratch gateway `bundle create` warms a spec's package sections through: the
//! configuration's proxies on a loopback listener, plain HTTP, with a data directory of its
//! own beside the bundle being written. [`airlock_bundle::create::warm`] asks it for exactly
//! what the sections name, as pip, dnf and helm would; the gateway fetches, verifies and
//! caches each document and file; then it stops and its store is exported into the bundle,
//! so the isolated gateway gets the same documents and files at the same paths.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use airlock_bundle::create::spec::Spec;
use airlock_bundle::create::warm::{Warmed, warm};
use airlock_bundle::export::Store;
use airlock_config::{Config, TlsMode};
use airlock_gateway::Gateway;

/// How long the scratch gateway may take to stop after warming.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// A warmed scratch store: removed with this value.
pub struct Scratch {
    /// Keeps the directory until the bundle is written.
    _dir: tempfile::TempDir,
    pub store: Store,
    /// The proxies the warming went through: the ones to export.
    pub proxies: Vec<String>,
    pub warmed: Warmed,
}

/// `config` as a scratch gateway runs it: data under `data_dir`, loopback, no TLS, no egress
/// proxy, no admin API, and nothing evicted while warming.
fn scratch_config(config: &Config, data_dir: &Path) -> Config {
    let mut scratch = config.clone();
    data_dir.clone_into(&mut scratch.data_dir);
    scratch.server.listen = (std::net::Ipv4Addr::LOCALHOST, 0).into();
    scratch.tls.mode = TlsMode::Off;
    scratch.tls.cert = None;
    scratch.tls.key = None;
    scratch.egress = None;
    scratch.admin_users.clear();
    scratch.cache.max_size = None;
    scratch.cache.unused_for = None;
    scratch
}

/// Runs a scratch gateway for `config` in a directory beside `out`, warms `spec`'s package
/// sections through it, stops it and opens its store for export.
pub fn warm_scratch(config: &Config, spec: &Spec, out: &Path) -> anyhow::Result<Scratch> {
    let parent = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let dir = tempfile::Builder::new()
        .prefix(".airlock-warm-")
        .tempdir_in(parent)
        .with_context(|| {
            format!(
                "making the scratch gateway's directory in {}",
                parent.display()
            )
        })?;
    let data_dir = dir.path().join("data");
    let scratch = scratch_config(config, &data_dir);
    // A runtime of its own: dropping it ends every task of the gateway, so its index is
    // closed before the store is opened for export.
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let warmed = runtime.block_on(async {
        let gateway = Gateway::bind(scratch.clone())
            .await
            .context("starting the scratch gateway")?;
        let url = url::Url::parse(&format!("http://{}/", gateway.local_addr()))
            .context("the scratch gateway's address")?;
        tracing::info!(gateway = %url, "warming the spec's package sections through a scratch gateway");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(gateway.serve(async move {
            let _ = stopped.await;
        }));
        let warmed = warm(&url, &scratch, spec).await;
        let _ = stop.send(());
        match tokio::time::timeout(STOP_TIMEOUT, served).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "the scratch gateway stopped with an error"),
            Ok(Err(error)) => tracing::warn!(%error, "the scratch gateway's task failed"),
            Err(_) => tracing::warn!("the scratch gateway did not stop in time"),
        }
        anyhow::Ok(warmed?)
    })?;
    drop(runtime);
    let store = Store::open(&data_dir).context("opening the scratch gateway's store")?;
    let proxies: BTreeSet<String> = [&warmed.python, &warmed.rpms, &warmed.charts, &warmed.k3s]
        .into_iter()
        .flat_map(|section| section.documents.iter().chain(&section.files))
        .map(|fetched| fetched.proxy.clone())
        .collect();
    for left in &warmed.rpms_left_to_os {
        tracing::info!(requirement = %left, "not carried: no repository of the spec provides it (the nodes' own repositories must)");
    }
    Ok(Scratch {
        _dir: dir,
        store,
        proxies: proxies.into_iter().collect(),
        warmed,
    })
}
