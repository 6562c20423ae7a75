//! Globs as policy rules write them: `*` matches any run of characters (`/` included, so
//! `org/*` reaches `org/team/app`), `?` exactly one; every other character stands for
//! itself. No classes or braces: a rule reads the same to everyone.

use std::fmt;

/// A parsed glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    /// A glob over characters `allowed` accepts (besides `*` and `?`); `None` when `text` is
    /// empty or holds another character.
    pub(crate) fn parse(text: &str, allowed: impl Fn(char) -> bool) -> Option<Self> {
        let valid = !text.is_empty()
            && text.len() <= 256
            && text.chars().all(|c| c == '*' || c == '?' || allowed(c));
        valid.then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the glob matches all of `text`. Linear backtracking over the last `*`: at
    /// most `len(glob) × len(text)` steps, whatever the input.
    pub fn matches(&self, text: &str) -> bool {
        let pattern: Vec<char> = self.0.chars().collect();
        let text: Vec<char> = text.chars().collect();
        let (mut p, mut t) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
                p += 1;
                t += 1;
            } else if p < pattern.len() && pattern[p] == '*' {
                star = Some((p, t));
                p += 1;
            } else if let Some((star_p, star_t)) = star {
                p = star_p + 1;
                t = star_t + 1;
                star = Some((star_p, star_t + 1));
            } else {
                return false;
            }
        }
        pattern[p..].iter().all(|&c| c == '*')
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn glob(text: &str) -> Glob {
        Glob::parse(text, |_| true).unwrap()
    }

    #[test]
    fn stars_and_question_marks() {
        assert!(glob("library/evil*").matches("library/evil"));
        assert!(glob("library/evil*").matches("library/evil-twin"));
        assert!(!glob("library/evil*").matches("library/good"));
        assert!(glob("org/*").matches("org/team/app"));
        assert!(!glob("org/*").matches("org"));
        assert!(glob("*").matches(""));
        assert!(glob("v1.?").matches("v1.2"));
        assert!(!glob("v1.?").matches("v1.23"));
        assert!(glob("*a*b*c").matches("xxaxxbxxc"));
        assert!(!glob("*a*b*c").matches("xxaxxcxxb"));
        assert!(glob("a**b").matches("ab"));
    }

    #[test]
    fn empty_and_disallowed_characters_are_refused() {
        assert!(Glob::parse("", |_| true).is_none());
        assert!(Glob::parse("a b", |c| c != ' ').is_none());
        assert!(Glob::parse(&"a".repeat(257), |_| true).is_none());
    }

    /// The obvious recursive matcher, exponential but correct, for comparison.
    fn reference(pattern: &[char], text: &[char]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some(('*', rest)) => (0..=text.len()).any(|i| reference(rest, &text[i..])),
            Some((&c, rest)) => text
                .split_first()
                .is_some_and(|(&t, tail)| (c == '?' || c == t) && reference(rest, tail)),
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_reference_matcher(pattern in "[ab*?]{1,8}", text in "[ab/]{0,10}") {
            let chars: Vec<char> = pattern.chars().collect();
            let text_chars: Vec<char> = text.chars().collect();
            prop_assert_eq!(glob(&pattern).matches(&text), reference(&chars, &text_chars));
        }

        #[test]
        fn hostile_inputs_finish_quickly(pattern in "[*a]{1,64}", text in "a{0,2000}") {
            // Worst case for naive matchers: many stars against a long run of one letter.
            let _ = glob(&pattern).matches(&text);
        }
    }
}
