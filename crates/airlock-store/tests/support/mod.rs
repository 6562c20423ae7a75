//! What the store's tests against Garage share.

use airlock_store::{S3Credentials, S3Settings};
use airlock_testkit::Garage;

/// The bucket of `garage`, reached with its key.
pub fn s3_settings(garage: &Garage) -> S3Settings {
    S3Settings {
        bucket: garage.bucket.clone(),
        endpoint: Some(garage.endpoint.clone()),
        region: garage.region.clone(),
        path_style: true,
        credentials: credentials(garage),
    }
}

/// The key `garage` made for its bucket.
pub fn credentials(garage: &Garage) -> S3Credentials {
    S3Credentials {
        access_key_id: garage.key_id.clone(),
        secret_access_key: garage.secret.clone(),
    }
}
