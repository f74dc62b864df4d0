//! LAN mode on a real host (feature `lan`).

pub mod arp;
pub mod ndp;
pub mod vip;

pub use vip::{ArpTiming, NetlinkVip, SharedIpSpec};
