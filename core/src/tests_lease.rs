//! The etcd lease arbiter in the core: acquired before the claim, refreshed by the Master, and
//! what a Master does when it cannot refresh it.

use crate::tests::peer_heartbeat;
use crate::tests_policy::H;
use crate::*;

fn lease_cfg() -> Config {
    let mut c = Config::lan(NodeId(1), NodeId(2));
    c.components = Components { vip: false, db: false, mongo: false, fs: false, services: false };
    c.lease = Some(LeaseTiming { refresh_every: 1000, keep_for: 3900 });
    c
}

impl H {
    /// Answers the pending lease operation with `holder`; the rest with success.
    fn answer_lease(&mut self, holder: Option<(NodeId, u64)>) -> Vec<Op> {
        let ops = std::mem::take(&mut self.pending);
        let mut seen = Vec::new();
        for (id, op) in ops {
            seen.push(op.clone());
            let done = match op {
                Op::MayTake { arbiter: ArbiterKind::EtcdLease, .. } | Op::MayKeep { arbiter: ArbiterKind::EtcdLease, .. } => {
                    Done::Verdict(Verdict::Lease { holder })
                }
                _ => Done::Ok,
            };
            self.feed(Input::Done { id, result: Ok(done) });
        }
        seen
    }

    /// A lone node past its discovery window that won the lease: Master at epoch 1.
    fn lease_master() -> H {
        let mut h = H::new(lease_cfg(), None);
        h.t = 1500;
        h.feed(Input::Tick);
        let ops = h.answer_lease(Some((NodeId(1), 1)));
        assert_eq!(ops, vec![Op::MayTake { arbiter: ArbiterKind::EtcdLease, epoch: 1 }], "the lease comes right before the claim");
        h.settle();
        assert_eq!(h.n.role(), Role::Master);
        h
    }
}

#[test]
fn a_key_held_by_the_peer_refuses_the_takeover() {
    let mut h = H::new(lease_cfg(), None);
    h.t = 1500;
    h.feed(Input::Tick);
    h.answer_lease(Some((NodeId(2), 4)));
    assert_ne!(h.n.role(), Role::Master);
    assert!(h.n.status().alarms.contains(&Alarm::LeaseHeldElsewhere));
    assert!(h.said(|e| matches!(e, Event::TakeoverRefused { why } if why.contains("held by n2 (epoch 4)"))), "{:?}", h.events);
}

#[test]
fn a_master_refreshes_its_lease_and_keeps_the_role_while_it_hears_its_peer() {
    let mut h = H::lease_master();
    h.t = 2600;
    h.feed(Input::Tick);
    let ops = h.answer_lease(Some((NodeId(1), 1)));
    assert!(ops.contains(&Op::MayKeep { arbiter: ArbiterKind::EtcdLease, epoch: 1 }), "{ops:?}");
    // etcd goes away: refreshes fail; the peer, a Slave, is heard all along.
    for t in (2700..=9000).step_by(100) {
        h.t = t;
        h.seq += 1;
        let hb = Heartbeat { seq: h.seq, sent_at: Millis(t), epoch: 1, ..peer_heartbeat(NodeId(2), Role::Slave) };
        h.feed(Input::Peer(Message::Heartbeat(hb)));
        for (id, _) in std::mem::take(&mut h.pending) {
            h.feed(Input::Done { id, result: Err(OpError::Failed("etcd unreachable".into())) });
        }
    }
    assert_eq!(h.n.role(), Role::Master, "a healthy pair is not stopped by an etcd outage: {:?}", h.events);
    assert!(h.n.status().alarms.contains(&Alarm::LeaseStale));
    // Now the peer falls silent too: the Master steps down before its lease can expire for it.
    h.t = 9400;
    h.feed(Input::Tick);
    assert_ne!(h.n.role(), Role::Master);
    assert!(h.said(|e| matches!(e, Event::RoleChanged { why, .. } if why.contains("etcd lease could not be refreshed"))));
}

#[test]
fn a_master_without_a_refresh_for_keep_for_and_no_peer_steps_down_in_time() {
    let mut h = H::lease_master();
    // Refreshes fail from the start; nobody is heard.
    let mut stepped = None;
    for t in (1600..=6000).step_by(100) {
        h.t = t;
        h.feed(Input::Tick);
        for (id, _) in std::mem::take(&mut h.pending) {
            h.feed(Input::Done { id, result: Err(OpError::TimedOut) });
        }
        if stepped.is_none() && h.n.role() != Role::Master {
            stepped = Some(t);
        }
    }
    // Acquired at 1500; keep_for 3900: gone by 5400, before etcd's TTL (5 s after the grant).
    assert!(stepped.is_some_and(|t| t <= 1500 + 3900 + 100), "stepped down at {stepped:?}");
}

#[test]
fn a_key_taken_by_the_peer_makes_the_master_step_down_at_once() {
    let mut h = H::lease_master();
    h.t = 2600;
    h.feed(Input::Tick);
    h.answer_lease(Some((NodeId(2), 2)));
    assert_ne!(h.n.role(), Role::Master);
    assert!(h.said(|e| matches!(e, Event::TakeoverRefused { why } if why.contains("held by n2"))));
}
