//! Addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `addr` with an unspecified IP (`0.0.0.0`, `::`) replaced by the loopback address of its
/// family: where a client on this machine connects to a listener bound to `addr`.
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_become_loopback_of_their_family() {
        for (listen, expected) in [
            ("0.0.0.0:1883", "127.0.0.1:1883"),
            ("[::]:9090", "[::1]:9090"),
            ("192.168.1.2:80", "192.168.1.2:80"),
            ("[::1]:0", "[::1]:0"),
        ] {
            let addr: SocketAddr = listen.parse().unwrap();
            assert_eq!(reachable(addr).to_string(), expected);
        }
    }
}
