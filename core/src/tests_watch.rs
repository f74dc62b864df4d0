//! The Slave's look-ahead ARP probe ([`crate::vip_watch`]), input by input.

use crate::tests::{peer_heartbeat, run_ops as ops};
use crate::*;

/// Node 2, a Slave of node 1 (VIP only, a 100 ms heartbeat, failover after 600 ms), which was
/// last heard at 100 ms: the failover deadline is at 700 ms, the look-ahead probe (80 ms, and
/// 10 ms to set up) starts at 610 ms.
fn slave() -> Node {
    let mut c = Config::lan(NodeId(2), NodeId(1));
    c.components = Components { vip: true, db: false, mongo: false, fs: false, services: false };
    (c.timing.heartbeat_interval, c.timing.failover_timeout, c.timing.isolation_timeout) = (100, 600, 300);
    let mut n = Node::new(c);
    let persisted = PersistedState { epoch: 1, last_role: Some(Role::Slave), boots: 1, ..PersistedState::default() };
    let start = n.handle(Millis(0), Input::Start { persisted: Some(persisted), run: 1 });
    settle(&mut n, ops(&start), 0);
    let hb = Heartbeat { epoch: 1, sent_at: Millis(100), was_master: true, ..peer_heartbeat(NodeId(1), Role::Master) };
    let heard = n.handle(Millis(100), Input::Peer(Message::Heartbeat(hb)));
    settle(&mut n, ops(&heard), 100);
    assert_eq!(n.role(), Role::Slave);
    n
}

/// Answers every operation with success, and those they lead to.
fn settle(n: &mut Node, mut pending: Vec<(OpId, Op)>, t: u64) {
    while let Some((id, _)) = pending.pop() {
        pending.extend(ops(&n.handle(Millis(t), Input::Done { id, result: Ok(Done::Ok) })));
    }
}

fn is_probe(op: &Op) -> bool {
    matches!(op, Op::MayTake { arbiter: ArbiterKind::ArpProbe, .. })
}

/// Runs the Slave to the look-ahead probe and returns its id.
fn watch_started(n: &mut Node) -> OpId {
    assert!(ops(&n.handle(Millis(609), Input::Tick)).is_empty(), "nothing before the probe's time");
    let out = n.handle(Millis(610), Input::Tick);
    let started = ops(&out);
    assert_eq!(started.len(), 1, "{started:?}");
    assert!(is_probe(&started[0].1));
    started[0].0
}

#[test]
fn a_probe_that_heard_nobody_up_to_the_deadline_lets_the_claim_go_first() {
    let mut n = slave();
    let probe = watch_started(&mut n);
    // The deadline comes while it listens: the takeover waits for it instead of probing twice.
    assert!(ops(&n.handle(Millis(700), Input::Tick)).is_empty());
    let out = n.handle(Millis(701), Input::Done { id: probe, result: Ok(Done::Verdict(Verdict::Arp { answered: false })) });
    let claim = ops(&out);
    assert!(matches!(claim.as_slice(), [(_, Op::Persist(s))] if s.epoch == 2 && s.last_role == Some(Role::Master)), "the claim at once: {claim:?}");
    let _ = n.handle(Millis(703), Input::Done { id: claim[0].0, result: Ok(Done::Ok) });
    assert_eq!(n.role(), Role::Master);
}

#[test]
fn an_answer_heard_ahead_leaves_the_takeover_to_a_fresh_probe() {
    let mut n = slave();
    let probe = watch_started(&mut n);
    assert!(ops(&n.handle(Millis(700), Input::Done { id: probe, result: Ok(Done::Verdict(Verdict::Arp { answered: true })) }))
        .iter()
        .all(|(_, o)| is_probe(o)));
    // Whatever the look-ahead heard, the plan starts with a probe of its own, as before.
    let mut m = slave();
    let probe = watch_started(&mut m);
    let _ = m.handle(Millis(650), Input::Done { id: probe, result: Err(OpError::Failed("no carrier".into())) });
    let plan = ops(&m.handle(Millis(700), Input::Tick));
    assert!(matches!(plan.as_slice(), [(_, op)] if is_probe(op)), "{plan:?}");
}

#[test]
fn an_old_answer_or_one_from_before_a_heartbeat_is_not_used() {
    // Heard nobody, but the takeover comes later than one heartbeat interval after that.
    let mut n = slave();
    let probe = watch_started(&mut n);
    let _ = n.handle(Millis(640), Input::Done { id: probe, result: Ok(Done::Verdict(Verdict::Arp { answered: false })) });
    let plan = ops(&n.handle(Millis(741), Input::Tick));
    assert!(matches!(plan.as_slice(), [(_, op)] if is_probe(op)), "a fresh probe: {plan:?}");

    // The Master spoke while the probe listened: its answer is dropped, and no takeover.
    let mut m = slave();
    let probe = watch_started(&mut m);
    let hb = Heartbeat { epoch: 1, seq: 2, sent_at: Millis(660), was_master: true, ..peer_heartbeat(NodeId(1), Role::Master) };
    let _ = m.handle(Millis(660), Input::Peer(Message::Heartbeat(hb)));
    assert!(ops(&m.handle(Millis(700), Input::Done { id: probe, result: Ok(Done::Verdict(Verdict::Arp { answered: false })) })).is_empty());
    assert_eq!(m.role(), Role::Slave);
    // The next silence gets its own look-ahead probe, and the old answer is not used for it.
    let out = m.handle(Millis(1180), Input::Tick);
    assert!(matches!(ops(&out).as_slice(), [(_, op)] if is_probe(op)), "{:?}", out.actions);
}
