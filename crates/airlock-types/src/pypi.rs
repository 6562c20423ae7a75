//! `PyPI` project names: the check against PEP 508's name grammar and PEP 503's
//! normalization (lowercase, every run of `-`, `_` and `.` one `-`), written once for the
//! proxy and anything else that compares project names.

/// A name that is not a Python project name (PEP 508): empty, over 200 bytes, not ASCII
/// letters, digits, `-`, `_` and `.`, or not starting and ending with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a Python project name")]
pub struct ProjectNameError {
    pub name: String,
}

/// The longest project name accepted, in bytes.
pub const MAX_NAME: usize = 200;

/// The PEP 503 normal form of `name`, after checking it against PEP 508's grammar (which
/// also keeps path separators and traversal out of it).
pub fn normalize(name: &str) -> Result<String, ProjectNameError> {
    let bytes = name.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= MAX_NAME
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b));
    if !valid {
        return Err(ProjectNameError {
            name: name.to_owned(),
        });
    }
    Ok(fold_separators(name))
}

/// PEP 503's folding alone, without the grammar check: runs of `-`, `_`, `.` become one
/// `-`, ASCII letters lowercase. For text that is not a name itself (a policy's name glob).
pub fn fold_separators(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if "-_.".contains(c) {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{MAX_NAME, normalize};
    use proptest::prelude::*;

    #[test]
    fn pep_503_examples() {
        assert_eq!(normalize("Foo_Bar..baz").unwrap(), "foo-bar-baz");
        assert_eq!(normalize("requests").unwrap(), "requests");
        assert_eq!(normalize("zope.interface").unwrap(), "zope-interface");
        assert_eq!(normalize("A-_.-B").unwrap(), "a-b");
        assert_eq!(normalize(&"a".repeat(MAX_NAME)).unwrap().len(), MAX_NAME);
    }

    #[test]
    fn names_outside_pep_508_are_refused() {
        for bad in [
            "",
            "-a",
            "a-",
            ".a",
            "a_",
            "a/b",
            "..",
            "a b",
            "a%2fb",
            "ä",
            &"a".repeat(MAX_NAME + 1),
        ] {
            assert!(normalize(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn normal_forms_are_fixed_points(name in "[A-Za-z0-9]([A-Za-z0-9._-]{0,30}[A-Za-z0-9])?") {
            let normal = normalize(&name).unwrap();
            prop_assert_eq!(normalize(&normal).unwrap(), normal.clone());
            prop_assert!(!normal.contains("--") && !normal.contains(['_', '.']));
            prop_assert_eq!(normal.clone(), normal.to_ascii_lowercase());
        }
    }
}
