//! Who may look at a console page: the admin API's rules ([`crate::admin::session`]) — a
//! console session or HTTP basic, or nobody when `[ui] anonymous_read = true` — checked
//! before any page is built. Without a login a page redirects to `/ui/login`.

use std::sync::Arc;

use axum::extract::FromRequestParts;
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
        let viewer = crate::admin::session::Viewer::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Viewer {
            user: viewer.user,
            csrf: viewer.csrf,
        })
    }
}
