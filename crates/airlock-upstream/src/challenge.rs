//! A `WWW-Authenticate` parser (RFC 9110 §11.6.1) robust to what registries send:
//! several challenges on one line, quoted values with commas and escapes, any parameter
//! order, missing `service`.

use std::collections::BTreeMap;

/// One challenge: a scheme and its parameters (names lowercased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    pub fn is(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t') {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while self.i < self.s.len() && is_tchar(self.s[self.i]) {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn quoted(&mut self) -> Option<String> {
        // Caller saw the opening quote.
        self.i += 1;
        let mut out = Vec::new();
        while self.i < self.s.len() {
            match self.s[self.i] {
                b'"' => {
                    self.i += 1;
                    return Some(String::from_utf8_lossy(&out).into_owned());
                }
                b'\\' if self.i + 1 < self.s.len() => {
                    out.push(self.s[self.i + 1]);
                    self.i += 2;
                }
                c => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
        None
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
}

/// Parses every challenge in one header value. Malformed parts end the parse; what was
/// understood before them is kept.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut c = Cursor {
        s: header.as_bytes(),
        i: 0,
    };
    let mut out: Vec<Challenge> = Vec::new();
    loop {
        while matches!(c.peek(), Some(b' ' | b'\t' | b',')) {
            c.i += 1;
        }
        let Some(scheme) = c.token() else { break };
        let mut challenge = Challenge {
            scheme,
            params: BTreeMap::new(),
        };
        loop {
            c.skip_ws();
            let mark = c.i;
            let Some(name) = c.token() else {
                break;
            };
            c.skip_ws();
            if c.peek() != Some(b'=') {
                // A bare token: the next challenge's scheme.
                c.i = mark;
                break;
            }
            c.i += 1;
            c.skip_ws();
            let value = match c.peek() {
                Some(b'"') => c.quoted(),
                Some(b'=' | b',') | None => {
                    // token68 (`Basic abc==`) or an empty value: skip to the next comma.
                    while c.peek().is_some_and(|b| b != b',') {
                        c.i += 1;
                    }
                    Some(String::new())
                }
                _ => c.token(),
            };
            let Some(value) = value else {
                out.push(challenge);
                return out;
            };
            challenge.params.insert(name.to_ascii_lowercase(), value);
            c.skip_ws();
            match c.peek() {
                Some(b',') => c.i += 1,
                None => break,
                Some(_) => {
                    out.push(challenge);
                    return out;
                }
            }
        }
        out.push(challenge);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn docker_hub_style() {
        let got = parse_challenges(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:library/nginx:pull""#,
        );
        assert_eq!(got.len(), 1);
        assert!(got[0].is("bearer"));
        assert_eq!(got[0].param("realm"), Some("https://auth.example/token"));
        assert_eq!(got[0].param("service"), Some("registry.example"));
        assert_eq!(got[0].param("scope"), Some("repository:library/nginx:pull"));
    }

    #[test]
    fn several_challenges_quoted_commas_and_escapes() {
        let got = parse_challenges(
            r#"Basic realm="Registry, with comma", Bearer scope="repository:a/b:pull,push", REALM="https://t.example/\"x\"" , error=invalid_token"#,
        );
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].is("Basic"));
        assert_eq!(got[0].param("realm"), Some("Registry, with comma"));
        assert!(got[1].is("Bearer"));
        assert_eq!(got[1].param("scope"), Some("repository:a/b:pull,push"));
        assert_eq!(got[1].param("realm"), Some(r#"https://t.example/"x""#));
        assert_eq!(got[1].param("error"), Some("invalid_token"));
        assert_eq!(got[1].param("service"), None);
    }

    #[test]
    fn bare_schemes_and_junk() {
        assert_eq!(parse_challenges("Negotiate, Bearer realm=x").len(), 2);
        assert!(parse_challenges("").is_empty());
        assert!(parse_challenges("   ,, ").is_empty());
        let unterminated = parse_challenges(r#"Bearer realm="https://never-closed"#);
        assert_eq!(unterminated.len(), 1);
        assert_eq!(unterminated[0].param("realm"), None);
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,200}") {
            let _ = parse_challenges(&s);
        }
    }
}
