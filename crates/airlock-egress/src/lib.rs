//! The egress proxy: `CONNECT` to an allowlist only.
