//! Pure types shared by every airlock crate: digests, repository names, image references,
//! media types, the duration and size notations of the configuration, and what a proxy
//! tells the access log about a response it served, and what a client asked of a cached
//! file.
//!
//! Nothing here performs I/O; everything is cheap to test exhaustively.

mod digest;
pub mod media;
mod name;
mod notation;
pub mod range;
mod request;
mod served;

pub use digest::{Digest, DigestError, Sha256Verifier};
pub use name::{NameError, Reference, RepoName};
pub use notation::{ByteSize, HumanDuration, NotationError};
pub use request::{ClientRequest, ReadMethod};
pub use served::{CacheOutcome, ServedBy, UpstreamFailure};
