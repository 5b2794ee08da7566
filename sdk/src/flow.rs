//! The flow a decision is about.

use crate::__wit::types;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Transport protocol of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// Another IP protocol number.
    Other(u8),
}

impl From<u8> for Proto {
    fn from(n: u8) -> Proto {
        match n {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            n => Proto::Other(n),
        }
    }
}

/// A new flow the director asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    /// Its protocol.
    pub proto: Proto,
    /// The client's address.
    pub client: IpAddr,
    /// The client's port.
    pub client_port: u16,
    /// The virtual address reached.
    pub vip: IpAddr,
    /// The virtual port.
    pub vport: u16,
}

impl Flow {
    /// A TCP flow, for tests.
    pub fn tcp(client: IpAddr, client_port: u16, vip: IpAddr, vport: u16) -> Flow {
        Flow {
            proto: Proto::Tcp,
            client,
            client_port,
            vip,
            vport,
        }
    }
}

pub(crate) fn ip_from_wit(ip: types::Ip) -> IpAddr {
    match ip {
        types::Ip::V4(a) => IpAddr::V4(Ipv4Addr::from(a)),
        types::Ip::V6((hi, lo)) => IpAddr::V6(Ipv6Addr::from(((hi as u128) << 64) | lo as u128)),
    }
}

pub(crate) fn ip_to_wit(ip: IpAddr) -> types::Ip {
    match ip {
        IpAddr::V4(a) => types::Ip::V4(u32::from(a)),
        IpAddr::V6(a) => {
            let v = u128::from(a);
            types::Ip::V6(((v >> 64) as u64, v as u64))
        }
    }
}

impl From<types::Flow> for Flow {
    fn from(f: types::Flow) -> Flow {
        Flow {
            proto: Proto::from(f.proto),
            client: ip_from_wit(f.client),
            client_port: f.client_port,
            vip: ip_from_wit(f.vip),
            vport: f.vport,
        }
    }
}
