//! Dev-only helpers: fake upstreams and fixture builders for tests.
