//! Unsolicited IPv6 neighbour advertisements (RFC 4861 §7.2.6), the IPv6 counterpart of
//! gratuitous ARP: "the VIP is at this MAC now", with the override flag so that caches update.

use super::arp::Mac;
use std::net::Ipv6Addr;

const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// An Ethernet frame with an unsolicited NA for `target` at `mac`.
pub fn unsolicited_na(mac: Mac, target: Ipv6Addr) -> Vec<u8> {
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[136, 0, 0, 0]); // type NA, code, checksum (below)
    icmp.extend_from_slice(&[0x20, 0, 0, 0]); // flags: Override
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[2, 1]); // option: target link-layer address, 8 bytes
    icmp.extend_from_slice(&mac);
    let sum = checksum(&target, &ALL_NODES, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]); // all-nodes multicast MAC
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0]); // version 6
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]); // ICMPv6, hop limit 255 (required for ND)
    f.extend_from_slice(&target.octets());
    f.extend_from_slice(&ALL_NODES.octets());
    f.extend_from_slice(&icmp);
    f
}

/// An Ethernet frame with a duplicate-address-detection probe for `target` (RFC 4862 §5.4.2):
/// a neighbour solicitation from the unspecified address to `target`'s solicited-node group.
/// A host that holds `target` answers it with an advertisement to all nodes.
pub fn dad_probe(mac: Mac, target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(t[13]), u16::from_be_bytes([t[14], t[15]]));
    let mut icmp = Vec::with_capacity(24);
    icmp.extend_from_slice(&[135, 0, 0, 0, 0, 0, 0, 0]); // type NS, code, checksum, reserved
    icmp.extend_from_slice(&t);
    let sum = checksum(&Ipv6Addr::UNSPECIFIED, &group, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&[0x33, 0x33, 0xff, t[13], t[14], t[15]]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&Ipv6Addr::UNSPECIFIED.octets());
    f.extend_from_slice(&group.octets());
    f.extend_from_slice(&icmp);
    f
}

/// Another host showing up for `target` in this frame: an advertisement for it (it holds
/// it), or a DAD probe for it from `::` (it wants it).
pub fn claim(f: &[u8], target: Ipv6Addr, my_mac: Mac) -> Option<super::arp::Claim> {
    if f.len() < 14 + 40 + 24 || f[12..14] != [0x86, 0xdd] || f[20] != 58 || f[6..12] == my_mac {
        return None;
    }
    let mut sender = [0u8; 6];
    sender.copy_from_slice(&f[6..12]);
    if f[62..78] != target.octets() {
        return None;
    }
    let from_unspecified = f[22..38].iter().all(|b| *b == 0);
    match f[54] {
        136 => Some(super::arp::Claim::Holds(sender)),
        135 if from_unspecified => Some(super::arp::Claim::Probes(sender)),
        _ => None,
    }
}

/// The ICMPv6 checksum over the pseudo-header and the message.
fn checksum(src: &Ipv6Addr, dst: &Ipv6Addr, msg: &[u8]) -> u16 {
    let mut data = Vec::with_capacity(40 + msg.len());
    data.extend_from_slice(&src.octets());
    data.extend_from_slice(&dst.octets());
    data.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    data.extend_from_slice(&[0, 0, 0, 58]);
    data.extend_from_slice(msg);
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dad_probe_is_told_from_an_advertisement() {
        let target: Ipv6Addr = "fd00:198:18::100".parse().expect("addr");
        let (me, other) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 9]);
        let p = dad_probe(other, target);
        assert_eq!(&p[0..6], &[0x33, 0x33, 0xff, 0, 1, 0]);
        let group: Ipv6Addr = "ff02::1:ff00:100".parse().expect("addr");
        assert_eq!(checksum(&Ipv6Addr::UNSPECIFIED, &group, &p[54..]), 0);
        assert_eq!(claim(&p, target, me), Some(super::super::arp::Claim::Probes(other)));
        assert_eq!(claim(&unsolicited_na(other, target), target, me), Some(super::super::arp::Claim::Holds(other)));
        assert_eq!(claim(&unsolicited_na(me, target), target, me), None, "our own frames are no claim");
        assert_eq!(claim(&unsolicited_na(other, "fd00::1".parse().expect("addr")), target, me), None);
    }

    #[test]
    fn the_checksum_verifies_and_the_layout_is_rfc_4861() {
        let target: Ipv6Addr = "fd00:198:18::100".parse().expect("addr");
        let f = unsolicited_na([2, 0, 0, 0, 0, 9], target);
        assert_eq!(f.len(), 14 + 40 + 32);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f[54], 136);
        // Summing again with the checksum in place gives zero (all ones, complemented).
        assert_eq!(checksum(&target, &ALL_NODES, &f[54..]), 0);
        assert_eq!(&f[78..80], &[2, 1]);
    }
}
