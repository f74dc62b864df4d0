//! ARP frames by hand (RFC 826, RFC 5227), sent and read on an AF_PACKET socket: gratuitous ARP
//! announcements, and probes asking whether any other host answers for an address.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

pub type Mac = [u8; 6];
const BROADCAST: Mac = [0xff; 6];
const ETH_P_ARP: [u8; 2] = [0x08, 0x06];

/// An Ethernet frame carrying one ARP packet.
pub fn frame(op: u16, src_mac: Mac, sender_ip: Ipv4Addr, target_mac: Mac, target_ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&BROADCAST);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&ETH_P_ARP);
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]); // Ethernet, IPv4, lengths
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&sender_ip.octets());
    f.extend_from_slice(&target_mac);
    f.extend_from_slice(&target_ip.octets());
    f
}

/// Gratuitous ARP for `ip`: a request and a reply, both announcing `mac` (switches learn from
/// either; some phones only update from one of them).
pub fn gratuitous(mac: Mac, ip: Ipv4Addr) -> [Vec<u8>; 2] {
    [frame(1, mac, ip, [0; 6], ip), frame(2, mac, ip, BROADCAST, ip)]
}

/// An RFC 5227 probe: "who has `ip`?", from sender address 0.0.0.0 so no cache is touched.
pub fn probe(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
    frame(1, mac, Ipv4Addr::UNSPECIFIED, [0; 6], ip)
}

/// The ARP fields we need from a received frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

pub fn parse(f: &[u8]) -> Option<Arp> {
    if f.len() < 42 || f[12..14] != ETH_P_ARP || f[14..20] != [0, 1, 0x08, 0x00, 6, 4] {
        return None;
    }
    let mac = |i: usize| -> Mac { f[i..i + 6].try_into().unwrap_or([0; 6]) };
    let ip = |i: usize| Ipv4Addr::new(f[i], f[i + 1], f[i + 2], f[i + 3]);
    Some(Arp { op: u16::from_be_bytes([f[20], f[21]]), sender_mac: mac(22), sender_ip: ip(28), target_ip: ip(38) })
}

/// How another host showed up for an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// It answered or announced the address: it holds it.
    Holds(Mac),
    /// It probed for the address at the same time (RFC 5227 §2.1.1): it wants it.
    Probes(Mac),
}

impl std::fmt::Display for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mac = |m: &Mac| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
        match self {
            Claim::Holds(m) => write!(f, "answered by {}", mac(m)),
            Claim::Probes(m) => write!(f, "probed for by {}", mac(m)),
        }
    }
}

/// Does this frame show another host claiming `ip`: an answer or announcement from it, or its
/// own probe for the same address at the same time?
pub fn claim(arp: &Arp, ip: Ipv4Addr, my_mac: Mac) -> Option<Claim> {
    if arp.sender_mac == my_mac {
        return None;
    }
    if arp.sender_ip == ip {
        return Some(Claim::Holds(arp.sender_mac));
    }
    (arp.sender_ip.is_unspecified() && arp.op == 1 && arp.target_ip == ip).then_some(Claim::Probes(arp.sender_mac))
}

pub fn claims(arp: &Arp, ip: Ipv4Addr, my_mac: Mac) -> bool {
    claim(arp, ip, my_mac).is_some()
}

/// Reads a claim for the probed address out of a received frame.
type ClaimOf = Box<dyn Fn(&[u8]) -> Option<Claim>>;

/// Blocking: sends `count` probes `gap` apart (ARP for IPv4, DAD neighbour solicitations from
/// `::` for IPv6) and listens until `wait` has passed; who else answered or probed for `ip`,
/// if anyone. A host that holds the address (`defending`) only counts answers: another host's
/// probe is a host asking, which the holder's kernel answers.
pub fn probe_blocking(
    iface: &str,
    my_mac: Mac,
    ip: std::net::IpAddr,
    count: u32,
    gap: Duration,
    wait: Duration,
    defending: bool,
) -> std::io::Result<Option<Claim>> {
    let (frame, seen): (Vec<u8>, ClaimOf) = match ip {
        std::net::IpAddr::V4(v4) => (probe(my_mac, v4), Box::new(move |f| parse(f).and_then(|a| claim(&a, v4, my_mac)))),
        std::net::IpAddr::V6(v6) => (super::ndp::dad_probe(my_mac, v6), Box::new(move |f| super::ndp::claim(f, v6, my_mac))),
    };
    let (mut tx, mut rx) = open(iface, Some(Duration::from_millis(5)))?;
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < wait {
        if sent < count && start.elapsed() >= gap * sent {
            send(&mut *tx, &frame)?;
            sent += 1;
        }
        match rx.next() {
            Ok(f) => match seen(f) {
                Some(Claim::Probes(_)) if defending => {}
                Some(c) => return Ok(Some(c)),
                None => {}
            },
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Blocking: one burst of announcements (gratuitous ARP, or unsolicited NA for IPv6), `count`
/// rounds `gap` apart.
pub fn announce_blocking(iface: &str, mac: Mac, ip: std::net::IpAddr, count: u32, gap: Duration) -> std::io::Result<()> {
    let (mut tx, _rx) = open(iface, Some(Duration::from_millis(5)))?;
    let frames: Vec<Vec<u8>> = match ip {
        std::net::IpAddr::V4(v4) => gratuitous(mac, v4).to_vec(),
        std::net::IpAddr::V6(v6) => vec![super::ndp::unsolicited_na(mac, v6)],
    };
    let start = Instant::now();
    // A burst the process was stopped in the middle of (SIGSTOP, a stall) is stale when it
    // wakes: the address may be someone else's by then, and our announcement would pull
    // clients, and the new holder's conflict check, back to us. CLOCK_MONOTONIC counts the
    // stopped time, so the bound sees it.
    let bound = gap * count + Duration::from_millis(200);
    for i in 0..count {
        if start.elapsed() > bound {
            return Ok(());
        }
        for f in &frames {
            send(&mut *tx, f)?;
        }
        if i + 1 < count {
            std::thread::sleep(gap);
        }
    }
    Ok(())
}

type Tx = Box<dyn pnet_datalink::DataLinkSender>;
type Rx = Box<dyn pnet_datalink::DataLinkReceiver>;

fn open(iface: &str, read_timeout: Option<Duration>) -> std::io::Result<(Tx, Rx)> {
    let nif = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == iface)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("no interface {iface}")))?;
    let cfg = pnet_datalink::Config { read_timeout, ..Default::default() };
    match pnet_datalink::channel(&nif, cfg)? {
        pnet_datalink::Channel::Ethernet(tx, rx) => Ok((tx, rx)),
        _ => Err(std::io::Error::other("not an Ethernet channel")),
    }
}

fn send(tx: &mut dyn pnet_datalink::DataLinkSender, f: &[u8]) -> std::io::Result<()> {
    tx.send_to(f, None).unwrap_or_else(|| Err(std::io::Error::other("send queue full")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_claims_follow_rfc_5227() {
        let me = [2, 0, 0, 0, 0, 1];
        let other = [2, 0, 0, 0, 0, 2];
        let vip = Ipv4Addr::new(198, 18, 0, 100);
        let [req, rep] = gratuitous(other, vip);
        assert_eq!(req.len(), 42);
        let a = parse(&req).expect("parse");
        assert_eq!((a.op, a.sender_ip, a.target_ip, a.sender_mac), (1, vip, vip, other));
        assert!(claims(&a, vip, me), "another host announcing the VIP claims it");
        assert!(claims(&parse(&rep).expect("parse"), vip, me));
        assert!(!claims(&a, vip, other), "our own frames are not claims");
        let p = parse(&probe(other, vip)).expect("parse");
        assert!(claims(&p, vip, me), "a simultaneous probe for the same address is a conflict");
        assert_eq!(claim(&p, vip, me), Some(Claim::Probes(other)), "told apart from an answer");
        assert_eq!(claim(&a, vip, me), Some(Claim::Holds(other)));
        assert_eq!(Claim::Holds(other).to_string(), "answered by 02:00:00:00:00:02");
        assert!(!claims(&p, Ipv4Addr::new(198, 18, 0, 7), me));
        assert_eq!(parse(&req[..30]), None);
    }
}
