//! What a node knows of its peer: the last heartbeat and when it arrived.

use crate::message::Heartbeat;
use crate::time::Millis;
use crate::types::{NodeId, Optime, Position, Role};

#[derive(Clone, Debug, Default)]
pub(crate) struct PeerView {
    pub last_heard: Option<Millis>,
    pub hb: Option<Heartbeat>,
    /// Set when the peer went silent; the next message means a partition healed (GARP again, B3).
    pub lost: bool,
    /// `receive time - send time` of recent heartbeats (our clock minus theirs, plus transit).
    /// Its minimum is the freshest estimate of the clock offset; a message far above it was
    /// held up on the way.
    skews: std::collections::VecDeque<i64>,
}

/// How many recent heartbeats the offset estimate looks at (clocks drift; old samples age out).
const SKEW_WINDOW: usize = 32;

impl PeerView {
    /// Accepts `hb` unless it is older than what we have (replayed or reordered).
    pub fn accept(&mut self, now: Millis, hb: &Heartbeat) -> bool {
        if let Some(prev) = &self.hb {
            // Another run of the peer is a restart, even with a lower or equal boot number (a
            // peer that lost its state file starts over at 1): heard at once. The transport
            // takes no frame of a run once a newer one spoke, so this is no replay. Within one
            // run, (boot, seq) only grows; older or repeated messages are ignored.
            let new_run = hb.run != prev.run;
            if !new_run && (hb.boot, hb.seq) <= (prev.boot, prev.seq) {
                return false;
            }
            if new_run {
                self.skews.clear();
            }
            if hb.boot != prev.boot {
                self.skews.clear();
            }
        }
        if self.skews.len() == SKEW_WINDOW {
            self.skews.pop_front();
        }
        self.skews.push_back(now.0 as i64 - hb.sent_at.0 as i64);
        self.last_heard = Some(now);
        self.hb = Some(hb.clone());
        true
    }

    /// How much longer than the fastest recent heartbeat a message sent at `sent_at` (peer
    /// clock) took to arrive; `None` without any heartbeat to compare with.
    pub fn delay_of(&self, now: Millis, sent_at: Millis) -> Option<u64> {
        let best = *self.skews.iter().min()?;
        let skew = now.0 as i64 - sent_at.0 as i64;
        Some((skew - best).max(0) as u64)
    }

    pub fn silent_for(&self, now: Millis) -> Option<u64> {
        self.last_heard.map(|t| now.since(t))
    }

    /// Heard within `timeout`.
    pub fn alive(&self, now: Millis, timeout: u64) -> bool {
        self.silent_for(now).is_some_and(|s| s < timeout)
    }

    /// The peer's role if it is alive.
    pub fn role(&self, now: Millis, timeout: u64) -> Option<Role> {
        if self.alive(now, timeout) {
            self.hb.as_ref().map(|h| h.role)
        } else {
            None
        }
    }

    pub fn is_master(&self, now: Millis, timeout: u64) -> bool {
        self.role(now, timeout) == Some(Role::Master) && !self.hb.as_ref().is_some_and(|h| h.handing_over)
    }

    pub fn epoch(&self) -> u64 {
        self.hb.as_ref().map_or(0, |h| h.epoch)
    }

    pub fn position(&self) -> Position {
        self.hb.as_ref().map_or(Position(0), |h| h.position)
    }
}

/// What a node claims in the start-up and no-master tie-break.
pub(crate) struct Claim {
    pub promotable: bool,
    pub needs_resync: bool,
    /// Database transactions held.
    pub position: Position,
    /// The MongoDB member's optime ((0, 0, 0) without one).
    pub optime: Optime,
    pub epoch: u64,
    pub id: NodeId,
}

impl Claim {
    /// The tie-break (S10): a node the promotion policy accepts first, then cleaner data, then
    /// more recent data (the database's, then MongoDB's), then the higher epoch, then the lower
    /// node id. Both nodes compute the same winner.
    pub(crate) fn key(&self) -> (bool, bool, Position, Optime, u64, std::cmp::Reverse<NodeId>) {
        (self.promotable, !self.needs_resync, self.position, self.optime, self.epoch, std::cmp::Reverse(self.id))
    }
}

/// Two Masters met (B1): the higher epoch keeps the role; on a tie, the lower node id.
pub(crate) fn master_wins(epoch: u64, id: NodeId, other_epoch: u64, other_id: NodeId) -> bool {
    (epoch, std::cmp::Reverse(id)) > (other_epoch, std::cmp::Reverse(other_id))
}
