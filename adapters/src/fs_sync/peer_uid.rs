//! Who owns the other end of a loopback TCP connection: one exact `sock_diag` query to the
//! kernel (NETLINK_SOCK_DIAG, `inet_diag_req_v2` naming the four-tuple). Reading
//! /proc/net/tcp instead costs the whole socket table per connection, which a local flood
//! makes quadratic. The request is built by hand (72 bytes, layout of linux/inet_diag.h): no
//! crate in our tree speaks sock_diag, and this is the only query we need.

use std::net::{IpAddr, SocketAddr};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const IPPROTO_TCP: u8 = 6;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// nlmsghdr (16) + inet_diag_msg: family, state, timer, retrans (4), sockid (48), expires,
/// rqueue, wqueue (12), then the uid.
const UID_OFFSET: usize = 16 + 4 + 48 + 12;

/// The uid owning the socket whose local end is `local` and remote end `remote` (in this
/// network namespace), if the kernel knows it.
pub fn owner(local: SocketAddr, remote: SocketAddr) -> std::io::Result<u32> {
    let mut s = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_SOCK_DIAG)?;
    s.bind_auto()?;
    s.connect(&netlink_sys::SocketAddr::new(0, 0))?;
    s.send(&request(local, remote), 0)?;
    let mut buf = Vec::with_capacity(8192);
    let n = s.recv(&mut buf, 0)?;
    let msg = &buf[..n.min(buf.len())];
    let kind = msg.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    if kind == Some(NLMSG_ERROR) || msg.len() < UID_OFFSET + 4 {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such socket"));
    }
    let u = &msg[UID_OFFSET..UID_OFFSET + 4];
    Ok(u32::from_ne_bytes([u[0], u[1], u[2], u[3]]))
}

fn request(local: SocketAddr, remote: SocketAddr) -> Vec<u8> {
    let mut m = Vec::with_capacity(72);
    m.extend_from_slice(&72u32.to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    m.push(if local.is_ipv4() { AF_INET } else { AF_INET6 });
    m.push(IPPROTO_TCP);
    m.push(0); // no extensions
    m.push(0);
    m.extend_from_slice(&u32::MAX.to_ne_bytes()); // every TCP state
                                                  // inet_diag_sockid: ports and addresses in network order, the socket's own end first.
    m.extend_from_slice(&local.port().to_be_bytes());
    m.extend_from_slice(&remote.port().to_be_bytes());
    m.extend_from_slice(&addr16(local.ip()));
    m.extend_from_slice(&addr16(remote.ip()));
    m.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    m.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
    m
}

fn addr16(ip: IpAddr) -> [u8; 16] {
    let mut a = [0u8; 16];
    match ip {
        IpAddr::V4(v) => a[..4].copy_from_slice(&v.octets()),
        IpAddr::V6(v) => a = v.octets(),
    }
    a
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_owner_of_our_own_loopback_connection_is_us() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let me = std::fs::metadata("/proc/self").expect("proc").uid();
        let uid = super::owner(c.local_addr().expect("addr"), c.peer_addr().expect("addr")).expect("the kernel knows it");
        assert_eq!(uid, me);
        let nobody: std::net::SocketAddr = "127.0.0.1:1".parse().expect("addr");
        assert!(super::owner(nobody, c.peer_addr().expect("addr")).is_err(), "no such connection");
    }
}
