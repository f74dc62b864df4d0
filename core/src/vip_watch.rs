//! The Slave's look-ahead ARP probe. The probe a takeover needs (does any other host answer
//! for the VIP?) used to start at the failover deadline, so a failover paid for the whole
//! listening window after the Master was already given up. Here a Slave whose Master has gone
//! silent starts that probe early, timed to end at the deadline; when it heard nobody, the
//! promotion claims at once on its answer instead of probing again.
//!
//! What is given up: the listening window moves forward by its own length, `[deadline - d,
//! deadline]` instead of `[deadline, deadline + d]`; its length, and so the chance of hearing
//! a live Master, is the same. The window starts no earlier than a Master cut off from us has
//! let go of the VIP (its isolation timeout plus its check), the answer is used only if it is
//! at most one heartbeat interval old when the claim is written (the rule every arbiter's
//! answer already follows), and only if the Master stayed silent through the whole window.
//! Anything else (an answer, an error, a heartbeat, an old result) leaves the takeover as it
//! was: a fresh probe in the plan.

use crate::action::{Op, OpId};
use crate::arbiter::{ArbiterKind, Verdict};
use crate::node::Node;
use crate::time::Millis;
use crate::types::{Mode, Role};

/// A probe takes this much longer than it listens: a netlink query, a thread and a packet
/// socket (7 to 11 ms measured in the lab with `ridondato replay --ops`). The look-ahead probe
/// starts this much earlier, so that it has heard its answer by the deadline.
const PROBE_SETUP_MS: u64 = 10;
use crate::{Done, OpError};

/// The look-ahead probe of the current silence of the Master.
#[derive(Clone, Debug, Default)]
pub(crate) struct VipWatch {
    /// The probe in flight and when it started.
    pub inflight: Option<(OpId, Millis)>,
    /// The window `[start, end]` of the last probe that heard nobody.
    pub clear: Option<(Millis, Millis)>,
    /// When the last look-ahead probe started: one per silence of the Master.
    pub last: Option<Millis>,
}

impl Node {
    fn watch_applies(&self) -> bool {
        let c = &self.cfg;
        // With witnesses, their check comes first and the probe must follow it: nothing to gain.
        c.mode == Mode::Lan && c.components.vip && c.arp_probe && c.witnesses == 0 && self.role == Role::Slave && !self.maintenance.on
    }

    /// When the look-ahead probe of the Master's current silence starts, if one applies: so
    /// that it ends at the failover deadline, and not before a Master cut off from us has had
    /// the time to let go (isolation timeout plus its check).
    pub(crate) fn watch_start(&self) -> Option<Millis> {
        if !self.watch_applies() || self.peer.hb.as_ref().is_none_or(|h| h.role != Role::Master) {
            return None;
        }
        let t = self.cfg.timing;
        let lead = t.failover_timeout.saturating_sub(self.cfg.arp_probe_ms + PROBE_SETUP_MS).max(t.isolation_timeout + self.isolation_check_budget());
        let at = self.peer.last_heard?.after(lead);
        let probed = self.vip_watch.last.is_some_and(|s| s >= at);
        (!probed && self.vip_watch.inflight.is_none()).then_some(at)
    }

    /// Starts the look-ahead probe when its time has come (before the deadline only: after it,
    /// the promotion probes for itself).
    pub(crate) fn watch_vip(&mut self) {
        let Some(at) = self.watch_start() else { return };
        let deadline = self.peer.last_heard.map(|h| h.after(self.cfg.timing.failover_timeout));
        if self.now < at || deadline.is_some_and(|d| self.now >= d) || self.plan.is_some() {
            return;
        }
        let id = self.new_op();
        self.vip_watch.inflight = Some((id, self.now));
        self.vip_watch.last = Some(self.now);
        self.out.push(crate::action::Action::Run { id, op: Op::MayTake { arbiter: ArbiterKind::ArpProbe, epoch: self.epoch } });
    }

    /// Is this the look-ahead probe's answer? Then it is kept (or dropped) here.
    pub(crate) fn watch_done(&mut self, id: OpId, result: &Result<Done, OpError>) -> bool {
        let Some((w, started)) = self.vip_watch.inflight else { return false };
        if w != id {
            return false;
        }
        self.vip_watch.inflight = None;
        let heard_nobody = matches!(result, Ok(Done::Verdict(Verdict::Arp { answered: false })));
        self.vip_watch.clear = heard_nobody.then_some((started, self.now));
        true
    }

    /// Until when the takeover waits for the look-ahead probe still listening rather than start
    /// a second one: one probe and a heartbeat interval after it started (a probe that hangs
    /// past that is left to its deadline, and the promotion probes for itself).
    pub(crate) fn watch_wait_until(&self) -> Option<Millis> {
        let (_, started) = self.vip_watch.inflight?;
        let until = started.after(self.cfg.arp_probe_ms + self.cfg.timing.heartbeat_interval);
        (self.now < until).then_some(until)
    }

    /// When the look-ahead probe heard nobody for the whole of the Master's silence, and its
    /// answer is at most one heartbeat interval old: the instant it ended.
    pub(crate) fn watch_clear(&self) -> Option<Millis> {
        let (start, end) = self.vip_watch.clear?;
        let silent_throughout = self.peer.last_heard.is_none_or(|h| start >= h);
        let fresh = self.now.since(end) <= self.cfg.timing.heartbeat_interval;
        (silent_throughout && fresh && self.watch_applies()).then_some(end)
    }
}
