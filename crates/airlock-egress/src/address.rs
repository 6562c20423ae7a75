//! Address checks after DNS: which resolved addresses the proxy refuses to dial. The CIDR
//! notation of `egress.clients` and `egress.allow_internal` is [`Cidr`], parsed with the
//! configuration.
//!
//! The point is that an allowed *name* proves nothing about where it points: a name can be
//! rebound to 127.0.0.1, to 169.254.169.254 or to the internal network at any time. Every
//! answer is classified; one non-public answer is enough to refuse the request.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use airlock_types::{Cidr, CidrError};

/// Why an address is not a public internet address, or `None` when it is one.
pub fn non_public_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => v6_class(v6),
    }
}

const V4_RANGES: &[([u8; 4], u8, &str)] = &[
    ([255, 255, 255, 255], 32, "broadcast"),
    ([0, 0, 0, 0], 8, "unspecified"),
    ([10, 0, 0, 0], 8, "private"),
    ([100, 64, 0, 0], 10, "cgnat"),
    ([127, 0, 0, 0], 8, "loopback"),
    ([169, 254, 0, 0], 16, "link-local"),
    ([172, 16, 0, 0], 12, "private"),
    ([192, 0, 0, 0], 24, "ietf-protocol"),
    ([192, 0, 2, 0], 24, "documentation"),
    ([192, 88, 99, 0], 24, "6to4-relay"),
    ([192, 168, 0, 0], 16, "private"),
    ([198, 18, 0, 0], 15, "benchmarking"),
    ([198, 51, 100, 0], 24, "documentation"),
    ([203, 0, 113, 0], 24, "documentation"),
    ([224, 0, 0, 0], 4, "multicast"),
    ([240, 0, 0, 0], 4, "reserved"),
];

fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    V4_RANGES.iter().find_map(|(net, prefix, class)| {
        let mask = mask32(*prefix);
        (u32::from(ip) & mask == u32::from_be_bytes(*net)).then_some(*class)
    })
}

const V6_RANGES: &[(u128, u8, &str)] = &[
    (0, 128, "unspecified"),
    (1, 128, "loopback"),
    (0xffff_0000_0000, 96, "ipv4-mapped"),
    (0, 96, "ipv4-compatible"),
    (0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96, "nat64"),
    (0x0064_ff9b_0001_0000_0000_0000_0000_0000, 48, "nat64"),
    (0x0100_0000_0000_0000_0000_0000_0000_0000, 64, "discard"),
    (0x2001_0000_0000_0000_0000_0000_0000_0000, 32, "teredo"),
    (
        0x2001_0db8_0000_0000_0000_0000_0000_0000,
        32,
        "documentation",
    ),
    (0x2002_0000_0000_0000_0000_0000_0000_0000, 16, "6to4"),
    (0xfc00_0000_0000_0000_0000_0000_0000_0000, 7, "unique-local"),
    (0xfe80_0000_0000_0000_0000_0000_0000_0000, 10, "link-local"),
    (0xfec0_0000_0000_0000_0000_0000_0000_0000, 10, "site-local"),
    (0xff00_0000_0000_0000_0000_0000_0000_0000, 8, "multicast"),
];

fn v6_class(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(ip);
    V6_RANGES
        .iter()
        .find_map(|(net, prefix, class)| (bits & mask128(*prefix) == *net).then_some(*class))
        // Only 2000::/3 is global unicast; everything else is unassigned or special.
        .or_else(|| (bits >> 125 != 0b001).then_some("reserved"))
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Option<&'static str> {
        non_public_class(s.parse().unwrap())
    }

    #[test]
    fn classifies_special_ranges() {
        let cases = [
            ("127.0.0.1", "loopback"),
            ("127.255.1.2", "loopback"),
            ("10.1.2.3", "private"),
            ("172.31.255.255", "private"),
            ("192.168.0.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "cgnat"),
            ("100.127.255.255", "cgnat"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "ipv4-mapped"),
            ("::ffff:8.8.8.8", "ipv4-mapped"),
            ("::127.0.0.1", "ipv4-compatible"),
            ("64:ff9b::a9fe:a9fe", "nat64"),
            ("2002:7f00:1::", "6to4"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "teredo"),
            ("fd00::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("4000::1", "reserved"),
        ];
        for (ip, want) in cases {
            assert_eq!(class(ip), Some(want), "{ip}");
        }
        for public in [
            "8.8.8.8",
            "20.190.160.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1",
        ] {
            assert_eq!(class(public), None, "{public}");
        }
    }
}
