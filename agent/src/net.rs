//! Sockets: the gossip socket, the multicast beacon socket, and working out our own address.

use crate::config::Multicast;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket as StdUdp};

/// Errors setting up sockets, with what was being attempted.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// Underlying error.
        source: io::Error,
    },
    /// The configured multicast interface does not exist or has no IPv4 address.
    #[error(
        "discovery.multicast_interface {0:?} is not an interface with an IPv4 address on this host"
    )]
    NoSuchInterface(String),
    /// No address could be derived for peers to reach us.
    #[error(
        "cannot tell which address peers should use to reach gossip.bind {0}; set gossip.advertise (or bind a specific address)"
    )]
    NoAdvertise(SocketAddr),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> NetError {
    let what = what.into();
    move |source| NetError::Io { what, source }
}

/// Binds the gossip socket.
pub fn bind_gossip(addr: SocketAddr) -> Result<tokio::net::UdpSocket, NetError> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
        .map_err(io_err("creating the gossip socket"))?;
    // Room for bursts (a Feed reply to many announces) without drops in the kernel.
    let _ = s.set_recv_buffer_size(1 << 20);
    s.bind(&addr.into())
        .map_err(io_err(format!("binding gossip.bind {addr}")))?;
    s.set_nonblocking(true)
        .map_err(io_err("gossip socket non-blocking"))?;
    tokio::net::UdpSocket::from_std(s.into()).map_err(io_err("registering the gossip socket"))
}

/// Resolves `discovery.multicast_interface` (a name or an IPv4 address) to an IPv4 address.
pub fn interface_addr(spec: &str) -> Result<Ipv4Addr, NetError> {
    if let Ok(ip) = spec.parse::<Ipv4Addr>() {
        return Ok(ip);
    }
    let ifaces = if_addrs::get_if_addrs().map_err(io_err("listing network interfaces"))?;
    ifaces
        .into_iter()
        .find_map(|i| match i.ip() {
            IpAddr::V4(v4) if i.name == spec => Some(v4),
            _ => None,
        })
        .ok_or_else(|| NetError::NoSuchInterface(spec.to_string()))
}

/// Opens the beacon socket: bound to the group's port, joined to the group on the chosen
/// interface, with the TTL and outgoing interface set for sending.
pub fn open_beacon(m: &Multicast) -> Result<tokio::net::UdpSocket, NetError> {
    let iface = match &m.interface {
        Some(spec) => Some(interface_addr(spec)?),
        None => None,
    };
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(io_err("creating the beacon socket"))?;
    // Several agents on one host (a development cluster) share the group port.
    s.set_reuse_address(true)
        .map_err(io_err("SO_REUSEADDR on the beacon socket"))?;
    s.set_reuse_port(true)
        .map_err(io_err("SO_REUSEPORT on the beacon socket"))?;
    // Only this group's datagrams, not every group some other process joined on this port.
    s.set_multicast_all_v4(false)
        .map_err(io_err("IP_MULTICAST_ALL off"))?;
    let bind = SocketAddrV4::new(*m.group.ip(), m.group.port());
    s.bind(&SocketAddr::V4(bind).into())
        .map_err(io_err(format!("binding the beacon socket to {bind}")))?;
    let join_if = iface.unwrap_or(Ipv4Addr::UNSPECIFIED);
    s.join_multicast_v4(m.group.ip(), &join_if).map_err(io_err(format!(
        "joining multicast group {} on {} (a host without a multicast route needs discovery.multicast_interface)",
        m.group.ip(),
        iface.map_or("the default interface".to_string(), |i| i.to_string())
    )))?;
    if let Some(i) = iface {
        s.set_multicast_if_v4(&i)
            .map_err(io_err(format!("IP_MULTICAST_IF {i}")))?;
    }
    s.set_multicast_ttl_v4(m.ttl)
        .map_err(io_err("IP_MULTICAST_TTL"))?;
    s.set_multicast_loop_v4(true)
        .map_err(io_err("IP_MULTICAST_LOOP"))?;
    s.set_nonblocking(true)
        .map_err(io_err("beacon socket non-blocking"))?;
    tokio::net::UdpSocket::from_std(s.into()).map_err(io_err("registering the beacon socket"))
}

/// The address peers should use to reach our gossip socket.
pub fn advertise_addr(
    bind: SocketAddr,
    advertise: Option<SocketAddr>,
    multicast: Option<&Multicast>,
) -> Result<SocketAddr, NetError> {
    if let Some(a) = advertise {
        return Ok(a);
    }
    if !bind.ip().is_unspecified() {
        return Ok(bind);
    }
    if let Some(m) = multicast {
        if let Some(spec) = &m.interface {
            return Ok(SocketAddr::new(
                IpAddr::V4(interface_addr(spec)?),
                bind.port(),
            ));
        }
        // Ask the routing table which source address it would use towards the group; connecting a
        // UDP socket sends nothing.
        if let Ok(s) = StdUdp::bind("0.0.0.0:0")
            && s.connect(SocketAddr::V4(m.group)).is_ok()
            && let Ok(local) = s.local_addr()
            && !local.ip().is_unspecified()
        {
            return Ok(SocketAddr::new(local.ip(), bind.port()));
        }
    }
    // Otherwise the single non-loopback IPv4 address of the host, if there is exactly one.
    let candidates: Vec<Ipv4Addr> = if_addrs::get_if_addrs()
        .map(|v| {
            v.into_iter()
                .filter_map(|i| match i.ip() {
                    IpAddr::V4(a) if !a.is_loopback() => Some(a),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    match candidates.as_slice() {
        [one] => Ok(SocketAddr::new(IpAddr::V4(*one), bind.port())),
        _ => Err(NetError::NoAdvertise(bind)),
    }
}
