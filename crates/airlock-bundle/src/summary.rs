//! The human summary `airlock bundle inspect` prints: what a bundle holds, by kind and
//! proxy, and whether it is signed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::index::Kind;
use crate::reader::Catalog;
use crate::volume::Volumes;

/// Sizes as people read them: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[derive(Default)]
struct Row {
    entries: usize,
    carried: usize,
    carried_bytes: u64,
    expected: usize,
}

/// The summary of a bundle's catalog (nothing here is verified: `verify` does that).
pub fn summarize(catalog: &Catalog, volumes: &Volumes) -> String {
    let index = &catalog.index;
    let mut out = String::new();
    let names: Vec<String> = volumes.paths().map(|p| p.display().to_string()).collect();
    let _ = writeln!(
        out,
        "bundle:   {} ({} in {} volume{})",
        volumes.first().display(),
        human_bytes(volumes.len()),
        volumes.count(),
        if volumes.count() == 1 { "" } else { "s" }
    );
    if volumes.count() > 1 {
        let _ = writeln!(out, "volumes:  {}", names.join(" "));
    }
    let _ = writeln!(
        out,
        "index:    version {}, created {}",
        index.version,
        humantime::format_rfc3339_seconds(index.created)
    );
    let _ = match &catalog.signature {
        Some(signature) => writeln!(
            out,
            "signed:   by key {} (not checked here: `airlock bundle verify FILE --trust-key KEY.pub`)",
            signature.key()
        ),
        None => writeln!(out, "signed:   no"),
    };

    let mut rows: BTreeMap<(Kind, &str), Row> = BTreeMap::new();
    // Bytes count once per digest (in the first row naming it), as the archive holds them.
    let mut counted = std::collections::BTreeSet::new();
    for entry in &index.entries {
        let row = rows.entry((entry.kind, entry.proxy.as_str())).or_default();
        row.entries += 1;
        if entry.carried {
            row.carried += 1;
            if counted.insert(&entry.digest) {
                row.carried_bytes += entry.size;
            }
        } else {
            row.expected += 1;
        }
    }
    let _ = writeln!(
        out,
        "\n{:<9} {:<20} {:>8} {:>8} {:>12} {:>9}",
        "kind", "proxy", "entries", "carried", "bytes", "expected"
    );
    for ((kind, proxy), row) in &rows {
        let _ = writeln!(
            out,
            "{:<9} {:<20} {:>8} {:>8} {:>12} {:>9}",
            kind.as_str(),
            proxy,
            row.entries,
            row.carried,
            human_bytes(row.carried_bytes),
            row.expected
        );
    }
    let carried = index.carried();
    let _ = writeln!(
        out,
        "total: {} entries; {} distinct blobs carried ({}); {} entries expected at the target",
        index.entries.len(),
        carried.len(),
        human_bytes(carried.values().sum()),
        index.entries.iter().filter(|e| !e.carried).count()
    );

    for (kind, title) in [
        (Kind::Image, "images"),
        (Kind::File, "files"),
        (Kind::Package, "packages"),
    ] {
        let listed: Vec<_> = index.entries.iter().filter(|e| e.kind == kind).collect();
        if listed.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{title}:");
        for entry in listed {
            let _ = writeln!(
                out,
                "  {}  {}  {}  {}{}",
                entry.proxy,
                entry.subject(),
                entry.digest,
                human_bytes(entry.size),
                if entry.carried {
                    ""
                } else {
                    "  (expected at the target)"
                }
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_read_as_people_read_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }
}
