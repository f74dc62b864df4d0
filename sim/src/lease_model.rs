//! The modelled etcd (B11): one leader key on a lease whose TTL runs on etcd's own clock (the
//! world's), reachable or not from each node (`etcd-cut`), or down altogether (`etcd-down`).
//! A refresh or acquisition from a node that cannot reach it fails after the client's timeout.

use crate::fault::Ix;
use crate::world::{id_of, World};
use ridondato_core::NodeId;

/// The leases' TTL in the simulator (a daemon's default is 5 s; 2 s keeps schedules short).
pub const LEASE_TTL_MS: u64 = 2000;
/// The client's operation timeout against etcd.
pub const LEASE_OP_MS: u64 = 500;

#[derive(Clone, Debug, Default)]
pub struct LeaseModel {
    /// Who holds the key (node, epoch) and when its lease expires (world time).
    pub holder: Option<(Ix, u64, u64)>,
    pub down: bool,
    pub cut: [bool; 2],
}

impl World {
    pub fn lease_reachable(&self, ix: Ix) -> bool {
        self.hosts[ix].powered && self.hosts[ix].link && !self.lease.down && !self.lease.cut[ix]
    }

    fn live_holder(&self) -> Option<(Ix, u64)> {
        self.lease.holder.filter(|(_, _, exp)| *exp > self.now).map(|(i, e, _)| (i, e))
    }

    /// Create-if-absent (or keep ours alive): who holds the key afterwards.
    pub fn lease_take(&mut self, ix: Ix, epoch: u64) -> Result<Option<(NodeId, u64)>, String> {
        if !self.lease_reachable(ix) {
            return Err("modelled: etcd unreachable".into());
        }
        match self.live_holder() {
            Some((h, e)) if h != ix => Ok(Some((id_of(h), e))),
            _ => {
                self.lease.holder = Some((ix, epoch, self.now + LEASE_TTL_MS));
                Ok(Some((id_of(ix), epoch)))
            }
        }
    }

    pub fn lease_release(&mut self, ix: Ix) -> Result<(), String> {
        if !self.lease_reachable(ix) {
            return Err("modelled: etcd unreachable".into());
        }
        if self.live_holder().is_some_and(|(h, _)| h == ix) {
            self.lease.holder = None;
        }
        Ok(())
    }

    /// I10: a node that claimed the role through the lease holds it at that moment.
    pub fn lease_holder_now(&self) -> Option<Ix> {
        self.live_holder().map(|(h, _)| h)
    }
}
