//! Pure types shared by every airlock crate: digests, repository names, image references,
//! media types, and the duration and size notations of the configuration.
//!
//! Nothing here performs I/O; everything is cheap to test exhaustively.

mod digest;
pub mod media;
mod name;
mod notation;
pub mod range;

pub use digest::{Digest, DigestError, Sha256Verifier};
pub use name::{NameError, Reference, RepoName};
pub use notation::{ByteSize, HumanDuration, NotationError};
