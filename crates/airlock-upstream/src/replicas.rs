//! Taking turns with the other gateways on a shared bucket before fetching a blob: one
//! replica holds the download's lease and fetches; the others wait for the object to land
//! in the bucket and serve it from there.

use std::time::Duration;

use airlock_store::BlobStore;
use airlock_store::shared::{Lease, Shared, Turn};
use airlock_types::Digest;

use crate::fetch::FetchError;

/// How often a waiting replica looks for the object in the bucket.
const POLL: Duration = Duration::from_millis(200);
/// How many polls between checks that the holder still holds its lease.
const POLLS_PER_LEASE_CHECK: u32 = 5;

/// What a replica does about a missing blob.
pub(crate) enum Next {
    /// Fetch it upstream, holding the lease until done.
    Fetch(Lease),
    /// It landed in the bucket meanwhile, with this size.
    Landed(u64),
}

/// Waits for this replica's turn to fetch `digest`, or for another replica's fetch to land.
/// Waits as long as another replica holds a live lease (it renews it while its download
/// runs; a replica that died lets it expire, and then this one takes over).
pub(crate) async fn take_turn(
    store: &dyn BlobStore,
    shared: &std::sync::Arc<Shared>,
    digest: &Digest,
) -> Result<Next, FetchError> {
    loop {
        let holder = match shared.lease(digest).await {
            Turn::Mine(lease) => {
                // It may have landed between the caller's look and the lease.
                return Ok(match store.stat(digest).await? {
                    Some(size) => Next::Landed(size),
                    None => Next::Fetch(lease),
                });
            }
            Turn::Theirs { holder } => holder,
        };
        tracing::info!(target: "airlock::fetch", %digest, %holder, "another replica is fetching this blob; waiting for it to land in the bucket");
        let mut polls = 0;
        loop {
            tokio::time::sleep(POLL).await;
            if let Some(size) = store.stat(digest).await? {
                return Ok(Next::Landed(size));
            }
            polls += 1;
            if polls % POLLS_PER_LEASE_CHECK == 0 && !shared.held_by_other(digest).await {
                break;
            }
        }
    }
}
