//! The id that ties one client request to its log lines: the access log, the `tracing`
//! spans of the request and of its upstream fetches, and the `X-Request-Id` response header.
//!
//! An id a client sends is kept only when it is a short plain token (at most
//! [`RequestId::MAX_LEN`] bytes of `[A-Za-z0-9._-]`), so that a load balancer's id can be
//! followed through airlock while a client can never put spaces, quotes, control characters
//! or anything else that shapes a log line into one; any other value is replaced by a fresh
//! id.

/// A request id: a plain token, safe to write into a log line or a header as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct RequestId(String);

impl RequestId {
    /// The longest id accepted from a client, in bytes.
    pub const MAX_LEN: usize = 64;

    /// A fresh random id: 32 lowercase hex digits (128 bits).
    #[must_use]
    pub fn generate() -> Self {
        Self(format!("{:032x}", rand::random::<u128>()))
    }

    /// The id a client sent, if it is a plain token; `None` for anything else.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        (!text.is_empty() && text.len() <= Self::MAX_LEN && text.bytes().all(plain))
            .then(|| Self(text.to_owned()))
    }

    /// The id a client sent when it is acceptable (see [`RequestId::parse`]), else a fresh
    /// one.
    #[must_use]
    pub fn from_client(sent: Option<&[u8]>) -> Self {
        sent.and_then(|bytes| std::str::from_utf8(bytes).ok())
            .and_then(Self::parse)
            .unwrap_or_else(Self::generate)
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::RequestId;
    use proptest::prelude::*;

    #[test]
    fn plain_tokens_are_kept() {
        for sent in [
            "abc",
            "0af7651916cd43dd8448eb211c80319c",
            "lb-1.req_42",
            &"a".repeat(64),
        ] {
            assert_eq!(RequestId::parse(sent).unwrap().as_str(), sent);
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for sent in [
            "",
            &"a".repeat(65),
            "a b",
            "a\"b",
            "a\nstatus=200",
            "a=b",
            "id;x",
            "ümlaut",
            "a/b",
        ] {
            assert_eq!(RequestId::parse(sent), None, "{sent:?}");
        }
        let fresh = RequestId::from_client(Some(b"evil\r\nX-Injected: 1"));
        assert_eq!(fresh.as_str().len(), 32);
        assert_ne!(fresh.as_str(), "evil");
        assert_eq!(
            RequestId::from_client(Some(&[0xff, 0xfe])).as_str().len(),
            32
        );
    }

    #[test]
    fn generated_ids_differ_and_parse_back() {
        let (a, b) = (RequestId::generate(), RequestId::generate());
        assert_ne!(a, b);
        assert_eq!(RequestId::parse(a.as_str()), Some(a));
    }

    proptest! {
        #[test]
        fn an_accepted_id_is_always_a_plain_token(sent in any::<Vec<u8>>()) {
            let id = RequestId::from_client(Some(&sent));
            prop_assert!(id.as_str().len() <= RequestId::MAX_LEN);
            prop_assert!(id.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
        }
    }
}
