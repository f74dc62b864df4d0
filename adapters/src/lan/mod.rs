//! LAN mode on a real host (feature `lan`).

pub mod arp;
pub mod vip;

pub use vip::{ArpTiming, NetlinkVip, SharedIpSpec};
