//! Persistence by client network (`ipvsadm -p TIMEOUT -M NETMASK`, IPVS
//! `ip_vs_sched_persist`): every client of one network gets the same affinity key, so while
//! the host keeps a template for that key, all their new flows go to the same realserver.
//!
//! IPVS masks the client address with the service's netmask, `snet = caddr & netmask`, and
//! looks up the template `(proto, snet, vaddr, vport)`; the host here scopes keys by service
//! already, so the key is just `snet`:
//!
//! - IPv4: `key = u32(caddr) & mask`, with `mask = !0 << (32 − len)` (`len` = 0 masks
//!   everything: every client shares one template, IPVS's `-M 0.0.0.0`). Written as an
//!   address, the key reads like the source column of `ipvsadm -Lnc` for a template
//!   (`10.77.0.0` for `10.77.0.42` and 255.255.255.0), and `ringvs list --connections` shows
//!   it so.
//! - IPv6 (IPVS takes a prefix length for v6 services): the address masked to `netmask6` bits
//!   is 128 bits wide and a key is 64, so `key = high64` when `netmask6 <= 64` (exact), and
//!   `high64 ^ (low64_masked × 0x9E37_79B9_7F4A_7C15)` beyond (two networks share a key only
//!   by a 2⁻⁶⁴ accident: they then share a realserver, nothing worse).
//!
//! Config: `netmask` — a dotted mask with contiguous ones (`"255.255.255.0"`) or a prefix
//! length (`24` or `"/24"`), default `255.255.255.255` (IPVS's default: one template per
//! client address); `netmask6` — a prefix length 0–128, default 128. Anything else is refused
//! with a message that says what was expected.
//!
//! The plugin keeps no state: templates, their timeouts and their realservers are the host's.

#![no_std]

use ringvs_sdk::prelude::*;

/// The masks of one service.
pub struct Netmask {
    /// IPv4 prefix length (0–32).
    v4: u8,
    /// IPv6 prefix length (0–128).
    v6: u8,
}

impl Default for Netmask {
    fn default() -> Self {
        Netmask { v4: 32, v6: 128 }
    }
}

/// Parses an IPv4 netmask: a dotted mask whose ones are contiguous, or a prefix length
/// (`24`, `/24`). Returns the prefix length.
pub fn parse_v4_mask(s: &str) -> Result<u8, String> {
    let t = s.trim();
    let len = t.strip_prefix('/').unwrap_or(t);
    if !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) {
        return match len.parse::<u8>() {
            Ok(n) if n <= 32 => Ok(n),
            _ => Err(format!(
                "netmask {s:?}: a prefix length must be 0 to 32 (expected e.g. \"255.255.255.0\" or 24)"
            )),
        };
    }
    let mask: Ipv4Addr = t.parse().map_err(|_| {
        format!(
            "netmask {s:?} is neither a dotted mask (\"255.255.255.0\") nor a prefix length (24)"
        )
    })?;
    let m = u32::from(mask);
    let ones = m.leading_ones();
    // Contiguous: the ones end where the zeros begin.
    if m.checked_shl(ones).unwrap_or(0) != 0 {
        return Err(format!(
            "netmask {s:?} is not contiguous (its ones must all come first, as in 255.255.255.0)"
        ));
    }
    Ok(ones as u8)
}

/// Parses an IPv6 prefix length (`64` or `/64`).
pub fn parse_v6_prefix(s: &str) -> Result<u8, String> {
    let t = s.trim();
    let t = t.strip_prefix('/').unwrap_or(t);
    match t.parse::<u8>() {
        Ok(n) if n <= 128 => Ok(n),
        _ => Err(format!("netmask6 {s:?}: expected a prefix length 0 to 128")),
    }
}

/// `!0 << (bits − len)` without overflow, for `len` in `0..=bits`.
fn mask_u128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len as u32)
    }
}

impl Netmask {
    /// The affinity key of a client address (see the module documentation).
    pub fn key(&self, client: IpAddr) -> u64 {
        match client {
            IpAddr::V4(a) => {
                let mask = if self.v4 == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.v4 as u32)
                };
                (u32::from(a) & mask) as u64
            }
            IpAddr::V6(a) => {
                let w = u128::from(a) & mask_u128(self.v6);
                let (hi, lo) = ((w >> 64) as u64, w as u64);
                if self.v6 <= 64 {
                    hi
                } else {
                    hi ^ lo.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                }
            }
        }
    }
}

impl Persistence for Netmask {
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        config.check_keys(&["netmask", "netmask6"])?;
        if let Some(m) = config.get("netmask") {
            self.v4 = parse_v4_mask(m)?;
        }
        if let Some(m) = config.get("netmask6") {
            self.v6 = parse_v6_prefix(m)?;
        }
        Ok(())
    }

    fn affinity(&mut self, flow: &Flow) -> Option<u64> {
        Some(self.key(flow.client))
    }
}

export_persistence!(Netmask);

#[cfg(test)]
mod tests {
    use super::*;
    use ringvs_sdk::testing::{flow, PersistenceHarness};

    const VIP: &str = "10.77.100.100:80";

    fn key(p: &mut PersistenceHarness<Netmask>, client: &str) -> u64 {
        p.affinity(&flow(client, VIP))
            .expect("every flow is persistent")
    }

    #[test]
    fn one_key_per_network() {
        let mut p = PersistenceHarness::<Netmask>::new(&[("netmask", "255.255.255.0")]).unwrap();
        let a = key(&mut p, "10.77.0.42:40000");
        assert_eq!(a, 0x0a4d_0000, "the key is the masked address 10.77.0.0");
        assert_eq!(key(&mut p, "10.77.0.200:1"), a, "same /24, other port");
        assert_eq!(key(&mut p, "10.77.0.1:65535"), a);
        let b = key(&mut p, "10.77.1.42:40000");
        assert_eq!(b, 0x0a4d_0100);
        assert_ne!(a, b, "another /24 is another key");
    }

    #[test]
    fn prefix_lengths_and_dotted_masks_agree() {
        for (dotted, len) in [
            ("255.255.255.0", "24"),
            ("255.255.0.0", "/16"),
            ("255.255.255.255", "32"),
            ("0.0.0.0", "0"),
            ("255.255.255.252", "30"),
        ] {
            let mut d = PersistenceHarness::<Netmask>::new(&[("netmask", dotted)]).unwrap();
            let mut l = PersistenceHarness::<Netmask>::new(&[("netmask", len)]).unwrap();
            for c in ["10.77.3.201:5", "192.0.2.7:9", "255.255.255.255:1"] {
                assert_eq!(key(&mut d, c), key(&mut l, c), "{dotted} vs {len} for {c}");
            }
        }
    }

    #[test]
    fn defaults_to_one_template_per_client() {
        let mut p = PersistenceHarness::<Netmask>::new(&[]).unwrap();
        assert_eq!(key(&mut p, "10.77.0.42:1"), 0x0a4d_002a);
        assert_ne!(key(&mut p, "10.77.0.42:1"), key(&mut p, "10.77.0.43:1"));
    }

    #[test]
    fn a_zero_mask_puts_every_client_together() {
        let mut p = PersistenceHarness::<Netmask>::new(&[("netmask", "0.0.0.0")]).unwrap();
        assert_eq!(key(&mut p, "10.77.0.42:1"), 0);
        assert_eq!(key(&mut p, "198.51.100.1:1"), 0);
    }

    #[test]
    fn bad_masks_are_refused_with_what_was_expected() {
        let err = |v: &str| {
            PersistenceHarness::<Netmask>::new(&[("netmask", v)])
                .err()
                .unwrap_or_else(|| panic!("{v:?} was accepted"))
        };
        assert!(
            err("255.0.255.0").contains("not contiguous"),
            "{}",
            err("255.0.255.0")
        );
        assert!(err("255.255.255.1").contains("not contiguous"));
        assert!(err("33").contains("0 to 32"));
        assert!(err("/40").contains("0 to 32"));
        assert!(err("255.255.255").contains("neither a dotted mask"));
        assert!(err("abc").contains("neither a dotted mask"));
        assert!(err("").contains("neither"));
        let typo = PersistenceHarness::<Netmask>::new(&[("netmsk", "24")])
            .err()
            .unwrap();
        assert!(typo.contains("unknown config key `netmsk`"), "{typo}");
        let v6 = PersistenceHarness::<Netmask>::new(&[("netmask6", "129")])
            .err()
            .unwrap();
        assert!(v6.contains("0 to 128"), "{v6}");
    }

    #[test]
    fn ipv6_networks() {
        let mut p = PersistenceHarness::<Netmask>::new(&[("netmask6", "64")]).unwrap();
        let f = |c: &str| flow(c, "[2001:db8::100]:80");
        let a = p.affinity(&f("[2001:db8:0:1::5]:1000")).unwrap();
        assert_eq!(a, 0x2001_0db8_0000_0001);
        assert_eq!(p.affinity(&f("[2001:db8:0:1:ffff::9]:2")), Some(a));
        assert_ne!(p.affinity(&f("[2001:db8:0:2::5]:1000")), Some(a));
        // Beyond 64 bits the low half counts, masked.
        let mut q = PersistenceHarness::<Netmask>::new(&[("netmask6", "/120")]).unwrap();
        let b = q.affinity(&f("[2001:db8::1:0:0:1]:1")).unwrap();
        assert_eq!(q.affinity(&f("[2001:db8::1:0:0:ff]:1")), Some(b));
        assert_ne!(q.affinity(&f("[2001:db8::1:0:1:1]:1")), Some(b));
    }
}
