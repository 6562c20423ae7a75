//! The OCI Distribution pull API: routing (project, `ns`, default), handlers, error codes.
