//! URLs safe to log: no userinfo, no query string (CDN redirects sign their queries).

use std::fmt;

/// A URL with credentials and query removed for display.
#[derive(Clone)]
pub struct RedactedUrl(String);

impl RedactedUrl {
    pub fn new(url: &url::Url) -> Self {
        let mut shown = url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        let had_query = shown.query().is_some();
        shown.set_query(None);
        shown.set_fragment(None);
        let mut text = shown.to_string();
        if had_query {
            text.push_str("?…");
        }
        Self(text)
    }
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_secrets() {
        let url =
            url::Url::parse("https://user:pw@cdn.example/blob?X-Amz-Signature=abc&token=t#frag")
                .unwrap();
        let shown = RedactedUrl::new(&url).to_string();
        assert_eq!(shown, "https://cdn.example/blob?…");
        assert!(!shown.contains("pw") && !shown.contains("abc"));
    }
}
