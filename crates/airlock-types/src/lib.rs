//! Pure types shared by every airlock crate: digests, repository names, image references,
//! media types, `PyPI` project names, the duration and size notations of the configuration,
//! what a proxy tells the access log about a response it served, what a client asked of a
//! cached file, request ids, and the host names, allowlist entries and IP networks of the
//! egress configuration.
//!
//! Nothing here performs I/O (a fresh request id reads the thread's random generator);
//! everything is cheap to test exhaustively.

pub mod allowlist;
mod cidr;
mod digest;
pub mod host;
pub mod image;
pub mod media;
mod name;
mod notation;
pub mod pypi;
pub mod range;
mod request;
mod request_id;
mod served;

pub use cidr::{Cidr, CidrError};
pub use digest::{Digest, DigestError, Sha256Verifier};
pub use image::{ImageRef, ImageRefError};
pub use name::{NameError, Reference, RepoName};
pub use notation::{ByteSize, HumanDuration, NotationError};
pub use request::{ClientRequest, ReadMethod};
pub use request_id::RequestId;
pub use served::{CacheOutcome, ServedBy, UpstreamFailure};
