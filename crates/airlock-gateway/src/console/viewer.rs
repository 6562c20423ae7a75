//! Who may look at a console page: an admin login (HTTP basic, the admin API's), checked
//! before any page is built.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;

use super::page::Viewer;
use crate::AppState;

impl FromRequestParts<Arc<AppState>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let Some(logins) = &state.logins else {
            return Err(http::StatusCode::NOT_FOUND.into_response());
        };
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        let user = logins
            .authenticate(client, &parts.headers)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Viewer {
            user: Some(user),
            csrf: None,
        })
    }
}
