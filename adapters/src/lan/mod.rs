//! LAN mode on a real host (feature `lan`).

pub mod arp;
pub mod ndp;
pub mod vip;

pub use vip::{ArpTiming, NetlinkVip, SharedIpSpec};

/// This host's interfaces and their addresses with prefixes (for configuration checks).
pub fn local_interfaces() -> Vec<(String, Vec<(std::net::IpAddr, u8)>)> {
    pnet_datalink::interfaces().into_iter().map(|i| (i.name, i.ips.iter().map(|n| (n.ip(), n.prefix())).collect())).collect()
}
