//! Property tests of the small parsers that read what clients send and operators write:
//! `Range` headers, host names, CIDR networks, and the size and duration notations of the
//! configuration. Arbitrary input never panics; what is accepted is canonical and reads
//! back to itself; a range is always inside the blob it is resolved against.
//!
//! `PROPTEST_CASES` raises the case count (scripts/fuzz.sh).

use airlock_types::host::canonicalize;
use airlock_types::range::{ByteRange, RangeRequest, Spec, parse, resolve};
use airlock_types::{ByteSize, Cidr, HumanDuration};
use proptest::prelude::*;

fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(cases)
}

/// A `Range` value near the grammar: digits, dashes, commas, spaces and units.
fn near_range() -> impl Strategy<Value = String> {
    "(bytes|BYTES|items|bytes )?=?[0-9 ,+-]{0,24}"
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn a_resolved_range_is_inside_the_blob(header in prop_oneof![near_range(), "\\PC{0,40}"], size in prop_oneof![Just(0u64), 1u64..1000, any::<u64>()]) {
        match resolve(parse(Some(&header)), size) {
            RangeRequest::Partial(ByteRange { start, end }) => {
                prop_assert!(start <= end && end < size, "{start}-{end} of {size}");
                let range = ByteRange { start, end };
                prop_assert!(range.byte_count() <= size);
            }
            RangeRequest::Full | RangeRequest::Unsatisfiable => {}
        }
    }

    #[test]
    fn written_ranges_parse_to_what_they_say(start in any::<u64>(), end in any::<u64>(), spaces in "[ ]{0,2}") {
        let from = parse(Some(&format!("{spaces}bytes={start}-{end}{spaces}")));
        prop_assert_eq!(from, (start <= end).then_some(Spec::From(start, Some(end))));
        prop_assert_eq!(parse(Some(&format!("bytes={start}-"))), Some(Spec::From(start, None)));
        prop_assert_eq!(parse(Some(&format!("bytes=-{end}"))), Some(Spec::Suffix(end)));
        // Several ranges are served whole (RFC 9110 allows ignoring them).
        prop_assert_eq!(parse(Some(&format!("bytes={start}-,0-{end}"))), None);
    }

    #[test]
    fn a_suffix_or_open_range_is_partial_or_unsatisfiable_never_full(n in any::<u64>(), size in any::<u64>()) {
        prop_assert_ne!(resolve(Some(Spec::Suffix(n)), size), RangeRequest::Full);
        prop_assert_ne!(resolve(Some(Spec::From(n, None)), size), RangeRequest::Full);
        if n > 0 && size > 0 {
            let RangeRequest::Partial(r) = resolve(Some(Spec::Suffix(n)), size) else {
                return Err(TestCaseError::fail("a suffix of a non-empty blob is satisfiable"));
            };
            prop_assert_eq!(r.byte_count(), n.min(size));
        }
    }

    #[test]
    fn accepted_hosts_are_canonical_names(raw in prop_oneof!["\\PC{0,64}", "[a-zA-Z0-9.:\\[\\]%@_-]{0,40}"]) {
        if let Ok(host) = canonicalize(&raw) {
            prop_assert_eq!(canonicalize(host.as_str()), Ok(host.clone()));
            let name = host.as_str();
            prop_assert!(!name.is_empty() && name.len() <= 253, "{name}");
            prop_assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' || b == b'_'), "{name}");
            prop_assert!(!name.contains(':') && !name.contains('@') && !name.contains(".."), "{name}");
        }
    }

    #[test]
    fn written_names_canonicalize_to_lowercase(labels in proptest::collection::vec("[a-zA-Z]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?", 1..5), dot in any::<bool>()) {
        let name = labels.join(".");
        let raw = if dot { format!("{name}.") } else { name.clone() };
        let host = canonicalize(&raw);
        prop_assert_eq!(host.map(|h| h.as_str().to_owned()), Ok(name.to_ascii_lowercase()));
    }

    #[test]
    fn cidrs_read_back_from_their_display(raw in prop_oneof!["\\PC{0,40}", "[0-9a-f.:/]{0,30}"], v4 in any::<[u8; 4]>(), prefix in 0u8..=32) {
        if let Ok(cidr) = raw.parse::<Cidr>() {
            prop_assert_eq!(cidr.to_string().parse::<Cidr>(), Ok(cidr));
        }
        let written = format!("{}.{}.{}.{}/{prefix}", v4[0], v4[1], v4[2], v4[3]);
        if let Ok(cidr) = written.parse::<Cidr>() {
            prop_assert!(cidr.contains(std::net::IpAddr::from(v4)));
        }
    }

    #[test]
    fn sizes_and_durations_read_back_from_their_display(raw in prop_oneof!["\\PC{0,20}", "[0-9]{0,22}(|[kKmMgGtT]i?B|B|b|s|m|h|d|ms| )"], n in any::<u64>()) {
        if let Ok(size) = raw.parse::<ByteSize>() {
            prop_assert_eq!(size.to_string().parse::<ByteSize>().map(|s| s.0).ok(), Some(size.0));
        }
        if let Ok(duration) = raw.parse::<HumanDuration>() {
            prop_assert_eq!(duration.to_string().parse::<HumanDuration>().map(|d| d.0).ok(), Some(duration.0));
        }
        prop_assert_eq!(format!("{n}").parse::<ByteSize>().map(|s| s.0).ok(), Some(n));
    }
}
