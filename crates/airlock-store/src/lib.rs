//! The content-addressed store: the `BlobStore` trait, verified commits, the metadata index.
