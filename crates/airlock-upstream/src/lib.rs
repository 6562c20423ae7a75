//! Outbound HTTP to upstream registries: TLS roots, token auth, redacted URLs.
