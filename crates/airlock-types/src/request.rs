//! What a client asked of a cached file: GET or HEAD, the `ETag`s it already holds
//! (`If-None-Match`), the one byte range it wants, and the representations it accepts.
//! Read once from the request and handed down whole, instead of a `head` flag and the raw
//! header map beside it.

use http::{HeaderMap, HeaderValue, Method, header};

use crate::range::{self, Spec};

/// GET or HEAD: the only methods a cache answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMethod {
    Get,
    Head,
}

/// A client's read request, as far as serving a cached file depends on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest {
    pub method: ReadMethod,
    /// `If-None-Match`, as sent (a list of entity tags, or `*`).
    pub if_none_match: Option<String>,
    /// `Range`, when it names one range this gateway understands (anything else is served
    /// whole, as RFC 9110 §14.2 allows).
    pub range: Option<Spec>,
    /// `Accept`, as sent (formats that negotiate a representation read it, and decide what
    /// a value that is not text means).
    pub accept: Option<HeaderValue>,
}

impl ClientRequest {
    /// A plain GET: no conditions, no range (what a format asks for on its own behalf).
    #[must_use]
    pub fn get() -> Self {
        Self {
            method: ReadMethod::Get,
            if_none_match: None,
            range: None,
            accept: None,
        }
    }

    /// The read request `method` and `headers` make; `None` for a method other than GET
    /// or HEAD. Conditional and range values that are not text count as absent.
    #[must_use]
    pub fn from_http(method: &Method, headers: &HeaderMap) -> Option<Self> {
        let method = match *method {
            Method::GET => ReadMethod::Get,
            Method::HEAD => ReadMethod::Head,
            _ => return None,
        };
        let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
        Some(Self {
            method,
            if_none_match: text(header::IF_NONE_MATCH).map(str::to_owned),
            range: range::parse(text(header::RANGE)),
            accept: headers.get(header::ACCEPT).cloned(),
        })
    }

    /// Whether only the headers are wanted.
    #[must_use]
    pub fn is_head(&self) -> bool {
        self.method == ReadMethod::Head
    }

    /// Whether the client already holds the representation tagged `etag` (quoted), or
    /// any (`*`) when `wildcard` counts (RFC 9110 §13.1.2).
    #[must_use]
    pub fn holds(&self, etag: &str, wildcard: bool) -> bool {
        self.if_none_match.as_deref().is_some_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|t| t == etag || (wildcard && t == "*"))
        })
    }

    /// The same request without its conditions (for a protocol that has none).
    #[must_use]
    pub fn unconditional(mut self) -> Self {
        self.if_none_match = None;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pairs: &[(header::HeaderName, &str)], method: &Method) -> Option<ClientRequest> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(name, HeaderValue::from_str(value).unwrap());
        }
        ClientRequest::from_http(method, &headers)
    }

    #[test]
    fn reads_method_conditions_and_range() {
        let r = request(
            &[
                (header::IF_NONE_MATCH, "\"a\", \"b\""),
                (header::RANGE, "bytes=2-"),
                (header::ACCEPT, "text/html"),
            ],
            &Method::HEAD,
        )
        .unwrap();
        assert!(r.is_head());
        assert!(r.holds("\"b\"", false) && !r.holds("\"c\"", true));
        assert_eq!(r.range, Some(Spec::From(2, None)));
        assert_eq!(r.accept, Some(HeaderValue::from_static("text/html")));
        assert!(request(&[], &Method::POST).is_none());
    }

    #[test]
    fn wildcard_only_where_it_counts() {
        let r = request(&[(header::IF_NONE_MATCH, "*")], &Method::GET).unwrap();
        assert!(r.holds("\"x\"", true));
        assert!(!r.holds("\"x\"", false));
        assert!(!r.unconditional().holds("\"x\"", true));
    }
}
