//! The syntax of single setting values: URLs' hosts, hostnames, K3s versions, project names
//! and Kubernetes quantities.

/// The host part of `https://host:port/path`, or of a bare `host`.
pub fn host_of_url(url: &str) -> String {
    let rest = url.trim().split_once("://").map_or(url.trim(), |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    host.to_ascii_lowercase()
}

/// `v1.31.4+k3s1` or `v1.32.0-rc1+k3s1`: how K3s names its releases.
pub(super) fn is_k3s_version(v: &str) -> bool {
    let Some((semver, build)) = v.strip_prefix('v').and_then(|r| r.split_once("+k3s")) else {
        return false;
    };
    let core = semver
        .split_once('-')
        .map_or(semver, |(core, pre)| if pre.is_empty() { "" } else { core });
    let numbers: Vec<&str> = core.split('.').collect();
    numbers.len() == 3
        && numbers
            .iter()
            .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        && !build.is_empty()
        && build.chars().all(|c| c.is_ascii_digit())
}

/// A DNS name (or IPv4 address): dot-separated labels of letters, digits and inner `-`.
pub fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

pub(super) fn is_project_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
}

/// A name that is safe as one path component: letters, digits, `.`, `-`, `_`, not only dots.
pub(super) fn is_plain_name(name: &str) -> bool {
    !name.trim_matches('.').is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// `100Gi` (a Kubernetes quantity, as in `harbor_storage_size`) → `100GiB`.
pub(super) fn kubernetes_quantity_to_size(text: &str) -> Option<String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() || number.parse::<u64>().is_err() {
        return None;
    }
    let unit = match unit {
        "" | "B" => "B",
        "Ki" | "KiB" => "KiB",
        "Mi" | "MiB" => "MiB",
        "Gi" | "GiB" => "GiB",
        "Ti" | "TiB" => "TiB",
        "k" | "K" | "KB" => "KB",
        "M" | "MB" => "MB",
        "G" | "GB" => "GB",
        "T" | "TB" => "TB",
        _ => return None,
    };
    Some(if unit == "B" {
        number.to_owned()
    } else {
        format!("{number}{unit}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_urls() {
        assert_eq!(
            host_of_url("https://Scout.Example.edu:8443/x"),
            "scout.example.edu"
        );
        assert_eq!(host_of_url("staging.example.edu"), "staging.example.edu");
        assert_eq!(host_of_url("u@h:22"), "h");
    }

    #[test]
    fn hostnames() {
        assert!(is_hostname("harbor.staging.example.edu"));
        assert!(is_hostname("10.0.0.5"));
        assert!(!is_hostname("-bad.example"));
        assert!(!is_hostname("a..b"));
        assert!(!is_hostname("a_b.example"));
        assert!(!is_hostname("*.example.com"));
    }

    #[test]
    fn k3s_versions() {
        assert!(is_k3s_version("v1.31.4+k3s1"));
        assert!(is_k3s_version("v1.32.0-rc1+k3s2"));
        for bad in [
            "1.31.4+k3s1",
            "v1.31+k3s1",
            "v1.31.4",
            "v1.31.4+k3s",
            "latest",
        ] {
            assert!(!is_k3s_version(bad), "{bad}");
        }
    }

    #[test]
    fn quantities() {
        assert_eq!(
            kubernetes_quantity_to_size("100Gi").as_deref(),
            Some("100GiB")
        );
        assert_eq!(kubernetes_quantity_to_size("2T").as_deref(), Some("2TB"));
        assert_eq!(kubernetes_quantity_to_size("1024").as_deref(), Some("1024"));
        assert_eq!(kubernetes_quantity_to_size("lots"), None);
        assert_eq!(kubernetes_quantity_to_size("5Pi"), None);
    }
}
