//! The shared IPs of LAN mode (S3, S4) on rtnetlink, with gratuitous ARP (unsolicited neighbour
//! advertisements for IPv6) and ARP probes sent natively (not through `arping`, whose Debian
//! build sends no GARP without `-S`).

use super::arp;
use crate::traits::{AdapterError, AdapterResult, Vip};
use async_trait::async_trait;
use futures::stream::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags, CacheInfo};
use netlink_packet_route::link::{LinkAttribute, LinkFlags};
use std::net::IpAddr;
use std::time::Duration;

/// One node IP: interface, address, prefix, label, primary flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedIpSpec {
    pub interface: String,
    pub address: IpAddr,
    pub prefix: u8,
    pub label: Option<String>,
    pub primary: bool,
}

#[derive(Clone, Debug)]
pub struct ArpTiming {
    /// Gratuitous ARP: rounds per burst, gap between rounds, delay of the second burst (B3).
    pub garp_count: u32,
    pub garp_gap: Duration,
    pub garp_repeat_after: Duration,
    /// Probe: how many, how far apart, how long to listen for an answer.
    pub probe_count: u32,
    pub probe_gap: Duration,
    pub probe_wait: Duration,
}

impl Default for ArpTiming {
    fn default() -> Self {
        ArpTiming {
            garp_count: 3,
            garp_gap: Duration::from_millis(20),
            // Linux ignores a new MAC for an entry confirmed in the last second (`locktime`): a
            // busy client that talked to the old Master a moment ago needs the later bursts.
            garp_repeat_after: Duration::from_millis(1100),
            probe_count: 2,
            probe_gap: Duration::from_millis(25),
            probe_wait: Duration::from_millis(80),
        }
    }
}

#[derive(Debug)]
pub struct NetlinkVip {
    handle: rtnetlink::Handle,
    ips: Vec<SharedIpSpec>,
    timing: ArpTiming,
    /// Bumped whenever the VIP is dropped: a pending repeat burst from before must not announce
    /// an address this host no longer holds (it would pull clients back to us).
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The kernel-enforced lease (`valid_lft`): the addresses vanish by themselves unless
    /// renewed, so a hung or dead daemon cannot keep the VIP. `None`: forever.
    lease: Option<Duration>,
    /// Carrier changes pushed by the kernel, until the driver takes them.
    link_rx: std::sync::Arc<std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<bool>>>>,
    /// Whether this node means to hold the addresses (set by raise, cleared by drop), and
    /// when they were last renewed. The lock keeps a renewal from re-adding an address that a
    /// drop is removing at the same moment.
    holding: std::sync::Arc<tokio::sync::Mutex<Lease>>,
}

#[derive(Debug, Default)]
struct Lease {
    wanted: bool,
    renewed: Option<std::time::Instant>,
}

fn err(what: &str, e: impl std::fmt::Display) -> AdapterError {
    AdapterError::new(format!("{what}: {e}"))
}

struct LinkInfo {
    index: u32,
    mac: arp::Mac,
    carrier: bool,
}

impl NetlinkVip {
    pub fn new(ips: Vec<SharedIpSpec>, timing: ArpTiming) -> AdapterResult<NetlinkVip> {
        if ips.is_empty() {
            return Err(AdapterError::new("no shared IP configured"));
        }
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| err("opening rtnetlink", e))?;
        tokio::spawn(conn);
        let link_rx = Some(Self::watch_links(ips.iter().map(|s| s.interface.clone()).collect())?);
        Ok(NetlinkVip {
            handle,
            ips,
            timing,
            generation: Default::default(),
            lease: None,
            holding: Default::default(),
            link_rx: std::sync::Arc::new(std::sync::Mutex::new(link_rx)),
        })
    }

    /// Subscribes to the kernel's link notifications (RTNLGRP_LINK) and passes on the carrier
    /// of our interfaces whenever one of them changes: a pulled cable is seen in about a
    /// millisecond rather than at the next 250-ms poll (which stays, as a fallback).
    fn watch_links(names: Vec<String>) -> AdapterResult<tokio::sync::mpsc::UnboundedReceiver<bool>> {
        use futures::StreamExt;
        use netlink_packet_route::RouteNetlinkMessage;
        use rtnetlink::packet_core::NetlinkPayload;
        use rtnetlink::sys::AsyncSocket;
        let (mut conn, _handle, mut messages) = rtnetlink::new_connection().map_err(|e| err("opening rtnetlink for link events", e))?;
        let groups = rtnetlink::sys::SocketAddr::new(0, rtnetlink::constants::RTMGRP_LINK);
        conn.socket_mut().socket_mut().bind(&groups).map_err(|e| err("subscribing to link events", e))?;
        tokio::spawn(conn);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut carrier: std::collections::BTreeMap<String, bool> = Default::default();
            while let Some((msg, _)) = messages.next().await {
                let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link) | RouteNetlinkMessage::DelLink(link)) = msg.payload else { continue };
                let Some(name) = link.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                }) else {
                    continue;
                };
                if !names.contains(&name) {
                    continue;
                }
                let up = link.header.flags.contains(LinkFlags::LowerUp) && link.header.flags.contains(LinkFlags::Up);
                carrier.insert(name, up);
                // All our interfaces must have carrier (as `link_up` says).
                let all = names.iter().all(|n| carrier.get(n).copied().unwrap_or(true));
                if tx.send(all).is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    /// Addresses added from now on live `lease` (whole seconds, at least 1) unless renewed.
    pub fn with_lease(mut self, lease: Duration) -> NetlinkVip {
        self.lease = Some(Duration::from_secs(lease.as_secs().max(1)));
        self
    }

    /// Adds IP (or, with `replace`, refreshes it), with the lease's lifetime if there is one.
    async fn put(&self, ip: &SharedIpSpec, index: u32, replace: bool) -> AdapterResult<()> {
        let mut req = self.handle.address().add(index, ip.address, ip.prefix);
        if replace {
            req = req.replace();
        }
        if let Some(label) = &ip.label {
            req.message_mut().attributes.push(AddressAttribute::Label(label.clone()));
        }
        if ip.address.is_ipv6() {
            // The VIP is ours by the arbiter's word: no duplicate address detection, which
            // would keep it unusable ("tentative") for a second.
            req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
            req.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        if let Some(lease) = self.lease {
            let secs = u32::try_from(lease.as_secs()).unwrap_or(u32::MAX);
            let mut info = CacheInfo::default();
            info.ifa_preferred = secs;
            info.ifa_valid = secs;
            req.message_mut().attributes.push(AddressAttribute::CacheInfo(info));
        }
        let what = if replace { "renewing" } else { "adding" };
        req.execute().await.map_err(|e| err(&format!("{what} {}/{} on {}", ip.address, ip.prefix, ip.interface), e))
    }

    async fn link(&self, name: &str) -> AdapterResult<LinkInfo> {
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        let link =
            links.try_next().await.map_err(|e| err(&format!("interface {name}"), e))?.ok_or_else(|| AdapterError::new(format!("no interface {name}")))?;
        let mac = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(m) if m.len() == 6 => m.as_slice().try_into().ok(),
                _ => None,
            })
            .unwrap_or([0; 6]);
        let carrier = link.header.flags.contains(LinkFlags::LowerUp) && link.header.flags.contains(LinkFlags::Up);
        Ok(LinkInfo { index: link.header.index, mac, carrier })
    }

    async fn present(&self, ip: &SharedIpSpec, index: u32) -> AdapterResult<Option<netlink_packet_route::address::AddressMessage>> {
        let mut addrs = self.handle.address().get().set_link_index_filter(index).set_address_filter(ip.address).execute();
        while let Some(m) = addrs.try_next().await.map_err(|e| err("listing addresses", e))? {
            let has = m.attributes.iter().any(|a| matches!(a, AddressAttribute::Address(x) | AddressAttribute::Local(x) if *x == ip.address));
            if has && m.header.prefix_len == ip.prefix {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    async fn announce(&self) -> AdapterResult<()> {
        for spec in &self.ips {
            let ip = spec.address;
            let l = self.link(&spec.interface).await?;
            // Only an address this host holds right now: announcing one whose lease ran out
            // while the daemon stalled would pull clients and the peer's probe to us.
            if self.present(spec, l.index).await?.is_none() {
                tracing::info!("not announcing {ip}: it is not configured here (lease ran out, or removed)");
                continue;
            }
            let (iface, t) = (spec.interface.clone(), self.timing.clone());
            tokio::task::spawn_blocking(move || arp::announce_blocking(&iface, l.mac, ip, t.garp_count, t.garp_gap))
                .await
                .map_err(|e| err("gratuitous ARP", e))?
                .map_err(|e| err(&format!("gratuitous ARP on {}", spec.interface), e))?;
            tracing::info!("announced {ip} on {} (gratuitous ARP / unsolicited NA)", spec.interface);
        }
        Ok(())
    }
}

#[async_trait]
impl Vip for NetlinkVip {
    async fn raise(&self) -> AdapterResult<()> {
        let mut lease = self.holding.lock().await;
        lease.wanted = true;
        for ip in &self.ips {
            let l = self.link(&ip.interface).await?;
            // Idempotent: an address already there only gets a fresh lease.
            let there = self.present(ip, l.index).await?.is_some();
            if !there || self.lease.is_some() {
                self.put(ip, l.index, there).await?;
            }
        }
        lease.renewed = Some(std::time::Instant::now());
        Ok(())
    }

    async fn renew(&self) -> AdapterResult<()> {
        let Some(every) = self.lease.map(|l| l / 4) else { return Ok(()) };
        let mut lease = self.holding.lock().await;
        if !lease.wanted || lease.renewed.is_some_and(|t| t.elapsed() < every) {
            return Ok(());
        }
        let lease_s = self.lease.map_or(0, |l| l.as_secs()) as u32;
        for ip in &self.ips {
            let l = self.link(&ip.interface).await?;
            // An address that is gone stays gone: its lease ran out (this daemon stalled for
            // longer than the lease) or someone removed it. Re-adding it here could make two
            // hosts answer; the core hears of it (`held`) and decides. One whose lease is
            // nearly out is let go too: the kernel may drop it between our look and our
            // renewal, and a renewal of a dropped IPv4 address adds it anew (the kernel
            // ignores a missing NLM_F_CREATE for IPv4). Healthy renewals find more than half.
            let Some(m) = self.present(ip, l.index).await? else { continue };
            let left = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::CacheInfo(c) => Some(c.ifa_valid),
                _ => None,
            });
            if left.is_some_and(|s| s * 2 < lease_s) {
                tracing::warn!("the lease of {} has {}s left: this daemon stalled; letting the address go", ip.address, left.unwrap_or(0));
                lease.wanted = false;
                return Ok(());
            }
            self.put(ip, l.index, true).await?;
        }
        lease.renewed = Some(std::time::Instant::now());
        Ok(())
    }

    async fn drop_vip(&self) -> AdapterResult<()> {
        let mut lease = self.holding.lock().await;
        lease.wanted = false;
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        for ip in &self.ips {
            let l = self.link(&ip.interface).await?;
            if let Some(m) = self.present(ip, l.index).await? {
                self.handle.address().del(m).execute().await.map_err(|e| err(&format!("removing {} from {}", ip.address, ip.interface), e))?;
            }
        }
        Ok(())
    }

    async fn garp(&self) -> AdapterResult<()> {
        self.announce().await?;
        // Two more bursts later (B3): a switch, phone or client that ignored the first one (busy,
        // or within its ARP `locktime`) learns now.
        let again = NetlinkVip {
            handle: self.handle.clone(),
            ips: self.ips.clone(),
            timing: self.timing.clone(),
            generation: self.generation.clone(),
            lease: self.lease,
            holding: self.holding.clone(),
            link_rx: self.link_rx.clone(),
        };
        let gen = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        tokio::spawn(async move {
            for _ in 0..2 {
                tokio::time::sleep(again.timing.garp_repeat_after).await;
                let wanted = again.holding.lock().await.wanted;
                let still_ours = wanted && again.generation.load(std::sync::atomic::Ordering::SeqCst) == gen && again.held().await.unwrap_or(false);
                if !still_ours {
                    return;
                }
                if let Err(e) = again.announce().await {
                    tracing::warn!("gratuitous ARP repeat: {e}");
                }
            }
        });
        Ok(())
    }

    async fn probe(&self) -> AdapterResult<bool> {
        // Every shared IP, IPv4 by ARP and IPv6 by DAD: an IPv6-only VIP is probed too.
        for spec in &self.ips {
            let l = self.link(&spec.interface).await?;
            if !l.carrier {
                return Err(AdapterError::new(format!("{} has no carrier: a probe would prove nothing", spec.interface)));
            }
            // Whether we mean to hold it (no second netlink dump here: the report's may be
            // running on the same socket).
            let defending = self.holding.lock().await.wanted;
            let (iface, t, ip) = (spec.interface.clone(), self.timing.clone(), spec.address);
            let claim = tokio::task::spawn_blocking(move || arp::probe_blocking(&iface, l.mac, ip, t.probe_count, t.probe_gap, t.probe_wait, defending))
                .await
                .map_err(|e| err("ARP/ND probe", e))?
                .map_err(|e| err(&format!("probe on {}", spec.interface), e))?;
            if let Some(c) = claim {
                // Which host, and whether it holds the address or only asks for it.
                tracing::info!("probe for {ip} on {}: {c}", spec.interface);
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn held(&self) -> AdapterResult<bool> {
        for ip in &self.ips {
            let l = self.link(&ip.interface).await?;
            if self.present(ip, l.index).await?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn link_events(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<bool>> {
        self.link_rx.lock().ok().and_then(|mut r| r.take())
    }

    async fn link_up(&self) -> AdapterResult<bool> {
        for ip in &self.ips {
            if !self.link(&ip.interface).await?.carrier {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
