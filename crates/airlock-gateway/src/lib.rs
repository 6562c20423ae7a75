//! Wiring for `airlock serve`: config → routers, listeners, TLS, health and status.
