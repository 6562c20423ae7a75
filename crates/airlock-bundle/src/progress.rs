//! Progress of the long passes (reading every byte of a bundle, writing one), reported to
//! whatever the caller draws: the library only counts.

use std::sync::Arc;

use airlock_types::Digest;

/// Told what a pass is doing. Calls come from the thread running the pass, in order:
/// [`Progress::start`] once, then [`Progress::blob`] and [`Progress::advance`] as bytes
/// stream; the done count never goes down and, when the pass succeeds, reaches the total.
pub trait Progress: Send + Sync {
    /// The pass begins; `total` is the blob bytes it will read or write, when known.
    fn start(&self, total: Option<u64>);
    /// The pass moves on to the blob `digest` of `size` bytes.
    fn blob(&self, digest: &Digest, size: u64);
    /// `bytes` more of the current blob were read (or written).
    fn advance(&self, bytes: u64);
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: Option<u64>) {}
    fn blob(&self, _: &Digest, _: u64) {}
    fn advance(&self, _: u64) {}
}

/// The reporter a bundle or writer starts with.
pub(crate) fn silent() -> Arc<dyn Progress> {
    Arc::new(Silent)
}
