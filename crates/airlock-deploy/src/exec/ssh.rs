//! The system OpenSSH client, one multiplexed connection per host.
