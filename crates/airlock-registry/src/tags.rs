//! `tags/list`, passed through to the upstream with `n`/`last`, answered under the name
//! the client used.

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use reqwest::Method;

use crate::route::Resolved;
use crate::{CacheOutcome, Query, Registry, RegistryError, mark, with_api_version};

const MAX_TAG_LIST: usize = 16 << 20;

#[derive(serde::Deserialize)]
struct TagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

impl Registry {
    pub(crate) async fn tags(
        &self,
        resolved: &Resolved,
        query: &Query,
    ) -> Result<Response, RegistryError> {
        let proxy = self.proxy(resolved);
        let name = &proxy.config.name;
        if proxy.config.offline {
            return Err(RegistryError::NameUnknown {
                name: resolved.client_name.clone(),
                why: format!("proxy {name} is offline; tag lists come from the upstream"),
            });
        }
        let mut path = format!("v2/{}/tags/list", resolved.repo);
        let params = {
            let mut params = url::form_urlencoded::Serializer::new(String::new());
            for key in ["n", "last"] {
                if let Some(value) = query.get(key) {
                    params.append_pair(key, value);
                }
            }
            params.finish()
        };
        if !params.is_empty() {
            path = format!("{path}?{params}");
        }
        let scope = format!("repository:{}:pull", resolved.repo);
        let response = proxy
            .upstream
            .send(Method::GET, &path, HeaderMap::new(), &scope)
            .await
            .map_err(|e| RegistryError::from_upstream(name, &e))?;
        if response.status() != StatusCode::OK {
            return Err(RegistryError::from_upstream_status(
                name,
                response.status(),
                None,
                || RegistryError::NameUnknown {
                    name: resolved.client_name.clone(),
                    why: "unknown upstream".into(),
                },
            ));
        }
        let has_next = response
            .headers()
            .get_all(header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("rel=\"next\"") || v.contains("rel=next"));
        let bytes = airlock_upstream::read_body(response, MAX_TAG_LIST)
            .await
            .map_err(|e| RegistryError::body(name, "tag list", &e))?;
        let list: TagList =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::BadUpstreamContent {
                proxy: name.clone(),
                detail: format!("tag list is not JSON: {e}"),
            })?;
        let tags = list.tags.unwrap_or_default();
        let mut out = axum::Json(serde_json::json!({ "name": resolved.client_name, "tags": tags }))
            .into_response();
        if has_next {
            if let Some(last) = tags.last() {
                let mut next = url::form_urlencoded::Serializer::new(String::new());
                if let Some(n) = query.get("n") {
                    next.append_pair("n", n);
                }
                next.append_pair("last", last);
                let link = format!(
                    "</v2/{}/tags/list?{}>; rel=\"next\"",
                    resolved.client_name,
                    next.finish()
                );
                if let Ok(value) = HeaderValue::from_str(&link) {
                    out.headers_mut().insert(header::LINK, value);
                }
            }
        }
        Ok(mark(
            with_api_version(StatusCode::OK, out),
            name,
            CacheOutcome::Pass,
        ))
    }
}
