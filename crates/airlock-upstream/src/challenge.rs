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

    /// `PROPTEST_CASES` (scripts/fuzz.sh) or `default`.
    fn config(default: u32) -> ProptestConfig {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default);
        ProptestConfig::with_cases(cases)
    }

    fn challenge() -> impl Strategy<Value = Challenge> {
        (
            "[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,10}",
            proptest::collection::btree_map("[a-z][a-z0-9_-]{0,8}", "[ -~]{0,30}", 0..5),
        )
            .prop_map(|(scheme, params)| Challenge { scheme, params })
    }

    /// A challenge as a registry would write it: every value quoted, `"` and `\` escaped.
    fn render(challenge: &Challenge) -> String {
        let params: Vec<String> = challenge
            .params
            .iter()
            .map(|(name, value)| {
                let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
                format!("{name}=\"{escaped}\"")
            })
            .collect();
        if params.is_empty() {
            challenge.scheme.clone()
        } else {
            format!("{} {}", challenge.scheme, params.join(", "))
        }
    }

    proptest! {
        #![proptest_config(config(256))]

        #[test]
        fn never_panics(s in ".{0,200}") {
            let _ = parse_challenges(&s);
        }

        #[test]
        fn rendered_challenges_parse_back(challenges in proptest::collection::vec(challenge(), 1..4), sep in "(, |,|,  ,\t)") {
            let header: Vec<String> = challenges.iter().map(render).collect();
            prop_assert_eq!(parse_challenges(&header.join(&sep)), challenges);
        }

        #[test]
        fn a_cut_header_keeps_only_what_it_said(challenges in proptest::collection::vec(challenge(), 1..3), cut in any::<proptest::sample::Index>()) {
            let header = challenges.iter().map(render).collect::<Vec<_>>().join(", ");
            let cut = cut.index(header.len() + 1);
            let Some(prefix) = header.get(..cut) else { return Ok(()) };
            let parsed = parse_challenges(prefix);
            // A cut parameter name reads as the next scheme; but no parameter is invented,
            // and a value is at most cut short.
            for (got, sent) in parsed.iter().zip(&challenges) {
                for (name, value) in &got.params {
                    let Some(full) = sent.params.get(name) else {
                        return Err(TestCaseError::fail(format!("invented {name} in {prefix:?}")));
                    };
                    prop_assert!(full.starts_with(value.as_str()), "{:?} is not a prefix of {:?}", value, full);
                }
            }
        }
    }
}
