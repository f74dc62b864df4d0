//! The arbiters behind one interface (B11): each answers "may I take the role now?" and "may I
//! keep it?" with the facts it knows ([`Verdict`]); the core judges them. The ARP probe and the
//! cloud API are also the VIP's and the public IP's adapters, so they are wrapped here; the
//! witnesses ([`crate::witness_tcp`]) and the etcd lease ([`crate::arbiter_etcd`]) are arbiters
//! and nothing else, and implement [`Arbiter`] themselves.

use crate::traits::{AdapterError, AdapterResult, Arbiter, CloudIp, Vip};
use async_trait::async_trait;
use ridondato_core::{ArbiterKind, NodeId, Verdict};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The arbiters a node has, by kind. The core asks only those its configuration names.
#[derive(Clone, Default)]
pub struct Arbiters(BTreeMap<ArbiterKind, Arc<dyn Arbiter>>);

impl Arbiters {
    pub fn set(&mut self, kind: ArbiterKind, arbiter: Arc<dyn Arbiter>) {
        self.0.insert(kind, arbiter);
    }

    pub fn get(&self, kind: ArbiterKind) -> AdapterResult<&Arc<dyn Arbiter>> {
        self.0.get(&kind).ok_or_else(|| AdapterError::new(format!("the {kind:?} arbiter is not configured on this node")))
    }
}

impl std::fmt::Debug for Arbiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// LAN: another host answering ARP for the VIP means the Master lives behind a cut.
pub struct ArpProbe(pub Arc<dyn Vip>);

impl std::fmt::Debug for ArpProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ArpProbe")
    }
}

#[async_trait]
impl Arbiter for ArpProbe {
    async fn may_take(&self, _: NodeId, _: u64) -> AdapterResult<Verdict> {
        self.0.probe().await.map(|answered| Verdict::Arp { answered })
    }
    async fn may_keep(&self, _: NodeId, _: u64) -> AdapterResult<Verdict> {
        self.0.probe().await.map(|answered| Verdict::Arp { answered })
    }
}

/// Cloud: who holds the public IP (re-read, never assumed) and, before a takeover, whether the
/// peer's instance runs. Both instances usually reach the API even when they cannot reach each
/// other, so the API is the arbiter.
pub struct CloudApi {
    pub cloud: Arc<dyn CloudIp>,
    pub peer: NodeId,
}

impl std::fmt::Debug for CloudApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudApi").field("peer", &self.peer).finish()
    }
}

#[async_trait]
impl Arbiter for CloudApi {
    async fn may_take(&self, me: NodeId, _: u64) -> AdapterResult<Verdict> {
        let holder = self.cloud.holder().await?;
        // Holding the IP already takes nothing from the peer: its instance need not be asked.
        let peer_running = if holder == Some(me) { None } else { Some(self.cloud.instance_running(self.peer).await?) };
        Ok(Verdict::Cloud { holder, peer_running })
    }
    async fn may_keep(&self, _: NodeId, _: u64) -> AdapterResult<Verdict> {
        Ok(Verdict::Cloud { holder: self.cloud.holder().await?, peer_running: None })
    }
}
