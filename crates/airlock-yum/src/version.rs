//! RPM version comparison: `epoch:version-release` and rpmvercmp.

use std::cmp::Ordering;

/// `epoch:version-release`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Evr {
    pub epoch: u64,
    pub version: String,
    pub release: String,
}

impl Evr {
    /// Compares as rpm does; an empty release on either side is not compared.
    #[must_use]
    pub fn compare(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| rpmvercmp(&self.version, &other.version))
            .then_with(|| {
                if self.release.is_empty() || other.release.is_empty() {
                    Ordering::Equal
                } else {
                    rpmvercmp(&self.release, &other.release)
                }
            })
    }
}

impl std::fmt::Display for Evr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.epoch > 0 {
            write!(f, "{}:", self.epoch)?;
        }
        f.write_str(&self.version)?;
        if !self.release.is_empty() {
            write!(f, "-{}", self.release)?;
        }
        Ok(())
    }
}

/// rpm's version comparison (`rpmvercmp`): alternating numeric and alphabetic segments,
/// `~` sorting before anything and `^` after the end.
pub fn rpmvercmp(left: &str, right: &str) -> Ordering {
    if left == right {
        return Ordering::Equal;
    }
    let (mut one, mut two) = (left.as_bytes(), right.as_bytes());
    let separator = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    loop {
        while one.first().is_some_and(|&c| separator(c)) {
            one = &one[1..];
        }
        while two.first().is_some_and(|&c| separator(c)) {
            two = &two[1..];
        }
        let (head_one, head_two) = (one.first().copied(), two.first().copied());
        if head_one == Some(b'~') || head_two == Some(b'~') {
            if head_one != Some(b'~') {
                return Ordering::Greater;
            }
            if head_two != Some(b'~') {
                return Ordering::Less;
            }
            one = &one[1..];
            two = &two[1..];
            continue;
        }
        if head_one == Some(b'^') || head_two == Some(b'^') {
            if head_one.is_none() {
                return Ordering::Less;
            }
            if head_two.is_none() {
                return Ordering::Greater;
            }
            if head_one != Some(b'^') {
                return Ordering::Greater;
            }
            if head_two != Some(b'^') {
                return Ordering::Less;
            }
            one = &one[1..];
            two = &two[1..];
            continue;
        }
        if head_one.is_none() || head_two.is_none() {
            break;
        }
        let numeric = one[0].is_ascii_digit();
        let class = |c: &u8| {
            if numeric {
                c.is_ascii_digit()
            } else {
                c.is_ascii_alphabetic()
            }
        };
        let end_one = one.iter().position(|c| !class(c)).unwrap_or(one.len());
        let end_two = two.iter().position(|c| !class(c)).unwrap_or(two.len());
        let (seg_one, seg_two) = (&one[..end_one], &two[..end_two]);
        one = &one[end_one..];
        two = &two[end_two..];
        if seg_two.is_empty() {
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let ordering = if numeric {
            let strip =
                |s: &[u8]| -> Vec<u8> { s.iter().copied().skip_while(|&c| c == b'0').collect() };
            let (digits_one, digits_two) = (strip(seg_one), strip(seg_two));
            digits_one
                .len()
                .cmp(&digits_two.len())
                .then_with(|| digits_one.cmp(&digits_two))
        } else {
            seg_one.cmp(seg_two)
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    match (one.is_empty(), two.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dep;

    #[test]
    fn versions_compare_as_rpm_does() {
        use std::cmp::Ordering::{Equal, Greater, Less};
        for (a, b, expected) in [
            ("1.0", "1.0", Equal),
            ("1.0", "2.0", Less),
            ("2.0.1", "2.0", Greater),
            ("1.10", "1.9", Greater),
            ("1.0a", "1.0", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0^git1", "1.0", Greater),
            ("1.0^git1", "1.0.1", Less),
            ("1.05", "1.5", Equal),
            ("a", "1", Less),
            ("2.229.0", "2.164.0", Greater),
            ("1.el9", "1.el8", Greater),
        ] {
            assert_eq!(rpmvercmp(a, b), expected, "{a} vs {b}");
        }
    }

    #[test]
    fn requirements_with_versions() {
        let dep = Dep {
            name: "container-selinux".into(),
            flags: Some("GE".into()),
            evr: Some(Evr {
                epoch: 2,
                version: "2.164.2".into(),
                release: String::new(),
            }),
        };
        let at = |epoch, version: &str| Evr {
            epoch,
            version: version.into(),
            release: "1.el9".into(),
        };
        assert!(dep.satisfied_by(Some(&at(2, "2.229.0"))));
        assert!(dep.satisfied_by(Some(&at(2, "2.164.2"))));
        assert!(!dep.satisfied_by(Some(&at(2, "2.100"))));
        assert!(!dep.satisfied_by(Some(&at(1, "9.0"))));
        assert!(dep.satisfied_by(None));
        assert_eq!(dep.to_string(), "container-selinux >= 2:2.164.2");
    }
}
