//! What the forwarding methods need of the host: the outer source address and MTU of
//! tunnelled packets (`forward = "tun"`), and the checks of directly routed realservers
//! (`forward = "dr"`).
//!
//! The director writes the outer IP header itself, so it must name a source address the
//! realservers accept and route back to: `director.tunnel_source` (IPv4 realservers) and
//! `director.tunnel_source6` (IPv6 ones) if set, else the address the kernel would use to
//! reach the first tunnelled realserver of that family (`ip route get RIP`'s `src`), looked
//! up again whenever the realservers change. One address per family serves every tunnel;
//! realservers on networks reached from different addresses need the setting. The tunnel's
//! MTU is the MTU of the interface that route leaves by (for IPv6 the route's path MTU;
//! 1500 when the kernel does not say).

use super::registry::Registry;
use crate::dataplane::tunnel::{DEFAULT_MTU, IPV6_MIN_MTU, OUTER};
use crate::io::xdp::netlink::{Iface, Netlink};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::fd::AsRawFd;

/// Checks what the packet I/O can forward: the directly routed realservers (`forward =
/// "dr"`, either family): the packet I/O must write Ethernet frames (`l2`: `director.io =
/// "af_xdp"`), and each realserver must be on a directly connected network (the frame goes
/// to its own MAC).
pub fn check_routed(registry: &Registry, l2: bool) -> Result<(), String> {
    let routed = registry.routed();
    if !l2 {
        if let Some(first) = routed.first() {
            return Err(format!(
                "realserver {first}: {}",
                crate::config::DR_NEEDS_L2
            ));
        }
        if registry.routes_directly() {
            return Err(crate::config::DR_NEEDS_L2.to_string());
        }
    }
    let mut nl = Netlink::new().map_err(|e| format!("cannot read routes: {e}"))?;
    for rip in routed {
        match nl.route_get(rip) {
            Ok(Some(r)) if r.next_hop == rip => {}
            Ok(Some(r)) => {
                return Err(format!(
                    "realserver {rip} is reached through gateway {}: forward = \"dr\" needs it on a directly connected network (use \"tun\" across routers)",
                    r.next_hop
                ))
            }
            Ok(None) => return Err(format!("realserver {rip}: no route to it")),
            Err(e) => return Err(format!("cannot look up the route to {rip}: {e}")),
        }
    }
    Ok(())
}

/// Sets `registry`'s tunnel sources and MTUs, one per family: `configured` (IPv4) and
/// `configured6` (IPv6), or found by route lookup when some realserver of that family is
/// tunnelled. Fails, naming the realserver, when no source can be found.
pub fn resolve(
    registry: &mut Registry,
    configured: Option<Ipv4Addr>,
    configured6: Option<Ipv6Addr>,
) -> Result<(), String> {
    resolve4(registry, configured)?;
    resolve6(registry, configured6)
}

fn resolve4(registry: &mut Registry, configured: Option<Ipv4Addr>) -> Result<(), String> {
    let Some(rip) = registry.first_tunnelled() else {
        registry.set_tunnel_source(configured);
        return Ok(());
    };
    let route = Netlink::new()
        .and_then(|mut nl| nl.route_get(rip))
        .map_err(|e| format!("cannot look up the route to tunnelled realserver {rip}: {e}"))?;
    let mtu = route
        .and_then(|r| Iface::by_index(r.oif).ok())
        .and_then(|i| u16::try_from(i.mtu).ok())
        .filter(|&m| usize::from(m) > OUTER + 68)
        .unwrap_or(DEFAULT_MTU);
    registry.set_tunnel_mtu(mtu);
    if configured.is_some() {
        registry.set_tunnel_source(configured);
        return Ok(());
    }
    let src = route.and_then(|r| r.src).filter(|a| !a.is_unspecified());
    match src {
        Some(IpAddr::V4(a)) => {
            registry.set_tunnel_source(Some(a));
            Ok(())
        }
        _ => Err(format!(
            "no source address for tunnelled packets: the kernel has no route with a source address to realserver {rip}; add one, or set director.tunnel_source"
        )),
    }
}

/// IPv6: the kernel's choice of source towards the first tunnelled IPv6 realserver is
/// what a UDP socket connected to it is bound to (no packet is sent), the MTU its route's
/// (`IPV6_MTU` on that socket).
fn resolve6(registry: &mut Registry, configured: Option<Ipv6Addr>) -> Result<(), String> {
    let Some(rip) = registry.first_tunnelled6() else {
        registry.set_tunnel_source6(configured);
        return Ok(());
    };
    let no_route = |e: std::io::Error| {
        format!(
            "no source address for packets tunnelled to IPv6 realserver {rip}: {e}; add a route, or set director.tunnel_source6"
        )
    };
    let sock = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).map_err(no_route)?;
    sock.connect((rip, 9)).map_err(no_route)?;
    let mtu = path_mtu6(&sock)
        .and_then(|m| u16::try_from(m).ok())
        // Any IPv6 link carries 1280 bytes; below what the tunnel needs on top of that the
        // encoder still sends 1280-byte packets (RFC 8200 §5), so the route's MTU stands.
        .filter(|&m| m >= IPV6_MIN_MTU)
        .unwrap_or(DEFAULT_MTU);
    registry.set_tunnel_mtu6(mtu);
    if configured.is_some() {
        registry.set_tunnel_source6(configured);
        return Ok(());
    }
    match sock.local_addr().map_err(no_route)?.ip() {
        IpAddr::V6(a) if !a.is_unspecified() => {
            registry.set_tunnel_source6(Some(a));
            Ok(())
        }
        a => Err(format!(
            "no source address for packets tunnelled to IPv6 realserver {rip} (the kernel chose {a}); set director.tunnel_source6"
        )),
    }
}

/// The path MTU the kernel holds for a connected IPv6 socket.
fn path_mtu6(sock: &UdpSocket) -> Option<u32> {
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `sock` is an open socket for the call's duration; `mtu` and `len` are live
    // locals of the sizes passed, which the kernel writes at most.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU,
            (&raw mut mtu).cast(),
            &raw mut len,
        )
    };
    (rc == 0).then(|| u32::try_from(mtu).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn registry(forward: &str, server: &str) -> Registry {
        let text = format!(
            "[[service]]\nname = \"web\"\nvip = \"10.77.100.100:80\"\nforward = \"{forward}\"\n[[service.server]]\naddr = \"{server}\"\n"
        );
        let cfg = config::from_str(&text, "t.toml").unwrap();
        Registry::new(&cfg.services).unwrap()
    }

    #[test]
    fn configured_wins_and_nat_needs_none() {
        let mut r = registry("tun", "127.0.0.9");
        let a = Ipv4Addr::new(10, 77, 1, 254);
        resolve(&mut r, Some(a), None).unwrap();
        assert_eq!(r.tunnel_source(), Some(a));
        assert_eq!(r.snapshot().tunnel_source(), a);
        let mut r = registry("nat", "10.77.1.1:8080");
        resolve(&mut r, None, None).unwrap();
        assert_eq!(r.tunnel_source(), None);
    }

    #[test]
    fn found_by_route_lookup() {
        // Loopback has a route with a source address in every network namespace.
        let mut r = registry("tun", "127.0.0.9");
        resolve(&mut r, None, None).unwrap();
        assert_eq!(r.tunnel_source(), Some(Ipv4Addr::new(127, 0, 0, 1)));
        // lo's MTU (65536) is not a u16: the default stands.
        assert_eq!(r.snapshot().tunnel_mtu(), DEFAULT_MTU);
    }

    #[test]
    fn ipv6_source_found_by_route_lookup_or_configured() {
        let text = "[[service]]\nname = \"web6\"\nvip = \"[fd77:100::100]:80\"\nforward = \"tun\"\n[[service.server]]\naddr = \"::1\"\n";
        let cfg = config::from_str(text, "t.toml").unwrap();
        let mut r = Registry::new(&cfg.services).unwrap();
        resolve(&mut r, None, None).unwrap();
        assert_eq!(r.tunnel_source6(), Some(Ipv6Addr::LOCALHOST));
        assert_eq!(
            r.tunnel_source(),
            None,
            "no IPv4 realserver, no IPv4 source"
        );
        assert_eq!(r.snapshot().tunnel_source6(), Ipv6Addr::LOCALHOST);
        let a: Ipv6Addr = "fd77:1::fe".parse().unwrap();
        resolve(&mut r, None, Some(a)).unwrap();
        assert_eq!(r.snapshot().tunnel_source6(), a);
        assert_eq!(r.snapshot().tunnel_mtu6(), DEFAULT_MTU);
    }
}
