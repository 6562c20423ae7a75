//! Single-range `Range: bytes=…` requests on blobs (RFC 9110 §14).
//!
//! Multiple ranges and syntax we do not understand are ignored: the full blob is then
//! served with 200, which the RFC allows.

/// A satisfiable byte range, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    /// How many bytes the range covers (at least one: ranges are inclusive).
    pub fn byte_count(self) -> u64 {
        self.end - self.start + 1
    }
}

/// What a `Range` header asks of a blob of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    Full,
    Partial(ByteRange),
    Unsatisfiable,
}

/// The byte positions a `Range` header names, before the size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spec {
    From(u64, Option<u64>),
    Suffix(u64),
}

pub fn parse(header: Option<&str>) -> Option<Spec> {
    let spec = header?.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => number(suffix).map(Spec::Suffix),
        (start, "") => number(start).map(|s| Spec::From(s, None)),
        (start, end) => {
            let (s, e) = (number(start)?, number(end)?);
            (s <= e).then_some(Spec::From(s, Some(e)))
        }
    }
}

pub fn resolve(spec: Option<Spec>, size: u64) -> RangeRequest {
    match spec {
        None => RangeRequest::Full,
        Some(Spec::Suffix(0)) => RangeRequest::Unsatisfiable,
        Some(Spec::Suffix(_)) if size == 0 => RangeRequest::Unsatisfiable,
        Some(Spec::Suffix(n)) => RangeRequest::Partial(ByteRange {
            start: size.saturating_sub(n),
            end: size - 1,
        }),
        Some(Spec::From(start, _)) if start >= size => RangeRequest::Unsatisfiable,
        Some(Spec::From(start, end)) => RangeRequest::Partial(ByteRange {
            start,
            end: end.map_or(size - 1, |e| e.min(size - 1)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = |h: &str, size| resolve(parse(Some(h)), size);
        assert_eq!(
            r("bytes=0-9", 100),
            RangeRequest::Partial(ByteRange { start: 0, end: 9 })
        );
        assert_eq!(
            r("bytes=90-", 100),
            RangeRequest::Partial(ByteRange { start: 90, end: 99 })
        );
        assert_eq!(
            r("bytes=90-500", 100),
            RangeRequest::Partial(ByteRange { start: 90, end: 99 })
        );
        assert_eq!(
            r("bytes=-10", 100),
            RangeRequest::Partial(ByteRange { start: 90, end: 99 })
        );
        assert_eq!(
            r("bytes=-1000", 100),
            RangeRequest::Partial(ByteRange { start: 0, end: 99 })
        );
        assert_eq!(r("bytes=100-", 100), RangeRequest::Unsatisfiable);
        assert_eq!(r("bytes=-0", 100), RangeRequest::Unsatisfiable);
        for ignored in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=5-1",
            "bytes=x-",
            "bytes=-",
            "bytes=+1-2",
        ] {
            assert_eq!(r(ignored, 100), RangeRequest::Full, "{ignored}");
        }
        assert_eq!(resolve(None, 0), RangeRequest::Full);
    }
}
