//! `tags/list` of a hosted repository and `/v2/_catalog` of hosted repositories, both in
//! lexical order with `n`/`last` pagination and a `Link` to the next page.

use std::collections::BTreeSet;

use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode, header};

use super::{CATALOG, Caller, Hosted, HostedRequest, header_value};
use crate::error::internal;
use crate::{Query, Registry, RegistryError, with_api_version};

/// One page of `items` (sorted, unique): those after `last`, at most `n`, and whether
/// more follow.
fn page(items: BTreeSet<String>, query: &Query) -> Result<(Vec<String>, bool), RegistryError> {
    let n = match query.get("n") {
        Some(n) => Some(n.parse::<usize>().map_err(|_| {
            RegistryError::Unsupported(format!("n={n:?} is not a number of entries"))
        })?),
        None => None,
    };
    let after = |item: &String| query.get("last").is_none_or(|last| item.as_str() > last);
    let mut rest = items.into_iter().filter(after);
    let page: Vec<String> = match n {
        Some(n) => rest.by_ref().take(n).collect(),
        None => rest.by_ref().collect(),
    };
    let more = rest.next().is_some();
    Ok((page, more))
}

/// The JSON answer, with a `Link` to the page after `page` when `more`.
fn paged(
    body: serde_json::Value,
    path: &str,
    page: &[String],
    more: bool,
    query: &Query,
) -> Response {
    let mut response = axum::Json(body).into_response();
    if let (true, Some(last)) = (more, page.last()) {
        let mut next = url::form_urlencoded::Serializer::new(String::new());
        if let Some(n) = query.get("n") {
            next.append_pair("n", n);
        }
        next.append_pair("last", last);
        let link = format!("<{path}?{}>; rel=\"next\"", next.finish());
        response
            .headers_mut()
            .insert(header::LINK, header_value(&link));
    }
    with_api_version(StatusCode::OK, response)
}

impl Registry {
    /// `GET …/tags/list`.
    pub(crate) async fn hosted_tags(
        &self,
        request: &HostedRequest<'_>,
        query: &Query,
    ) -> Result<Response, RegistryError> {
        let records = self
            .index
            .tags_under(&request.project.name, Some(request.repo.as_str()))
            .await
            .map_err(internal)?;
        if records.is_empty() {
            return Err(RegistryError::NameUnknown {
                name: request.name.to_owned(),
                why: "nothing was pushed to this repository".into(),
            });
        }
        let tags = records
            .into_iter()
            .filter(|(key, _)| key.variant.is_empty())
            .map(|(key, _)| key.tag)
            .collect();
        let (tags, more) = page(tags, query)?;
        let body = serde_json::json!({ "name": request.name, "tags": tags });
        let path = format!("/v2/{}/tags/list", request.name);
        Ok(paged(body, &path, &tags, more, query))
    }

    /// `GET /v2/_catalog`: the repositories of the hosted projects `caller` may pull from
    /// (the proxies' upstreams are not listed: they are not ours to enumerate).
    pub(crate) async fn catalog(
        &self,
        method: &Method,
        query: &Query,
        caller: &Caller,
    ) -> Result<Response, RegistryError> {
        if *method != Method::GET {
            return Err(RegistryError::Unsupported(format!(
                "{method} is not part of the API at {CATALOG}"
            )));
        }
        let mut names = BTreeSet::new();
        for project in self.hosted.projects.values() {
            if !Hosted::listable(project, caller) {
                continue;
            }
            let records = self
                .index
                .tags_under(&project.name, None)
                .await
                .map_err(internal)?;
            names.extend(
                records
                    .into_iter()
                    .map(|(key, _)| format!("{}/{}", project.name, key.repo)),
            );
        }
        let (repositories, more) = page(names, query)?;
        let body = serde_json::json!({ "repositories": repositories });
        Ok(paged(body, CATALOG, &repositories, more, query))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(q: &str) -> Query {
        Query::parse(Some(q))
    }

    fn items(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|&n| n.to_owned()).collect()
    }

    #[test]
    fn pages_follow_last_and_stop_at_n() {
        let all = items(&["a", "b", "c", "d"]);
        assert_eq!(
            page(all.clone(), &query("")).unwrap(),
            (vec!["a".into(), "b".into(), "c".into(), "d".into()], false)
        );
        assert_eq!(
            page(all.clone(), &query("n=2")).unwrap(),
            (vec!["a".into(), "b".into()], true)
        );
        assert_eq!(
            page(all.clone(), &query("n=2&last=b")).unwrap(),
            (vec!["c".into(), "d".into()], false)
        );
        assert_eq!(
            page(all.clone(), &query("last=d")).unwrap(),
            (vec![], false)
        );
        assert_eq!(page(all.clone(), &query("n=0")).unwrap(), (vec![], true));
        assert!(page(all, &query("n=lots")).is_err());
    }
}
