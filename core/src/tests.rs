//! Unit tests: one input at a fixed `now`, the exact action list asserted.

use crate::*;

fn cfg() -> Config {
    let mut c = Config::lan(NodeId(1), NodeId(2));
    c.components = Components { vip: true, db: false, mongo: false, fs: false, services: false };
    c
}

/// A heartbeat from the peer with everything at its plain default; tests change what matters.
pub(crate) fn peer_heartbeat(from: NodeId, role: Role) -> Heartbeat {
    Heartbeat {
        from,
        boot: 1,
        seq: 1,
        run: 1,
        sent_at: Millis(0),
        epoch: 0,
        role,
        position: Position(0),
        needs_resync: false,
        maintenance: Maintenance::default(),
        was_master: false,
        handing_over: false,
        busy: false,
        replicating: false,
        received: Position(0),
        db_ok: true,
        semi_sync: false,
        promotable: true,
        mongo: None,
    }
}

pub(crate) fn run_ops(out: &Output) -> Vec<(OpId, Op)> {
    out.actions.iter().filter_map(|a| if let Action::Run { id, op } = a { Some((*id, op.clone())) } else { None }).collect()
}

/// A node started fresh, its boot persisted, quiesced, and past its discovery window alone.
fn started() -> (Node, Millis) {
    let mut n = Node::new(cfg());
    let out = n.handle(Millis(0), Input::Start { persisted: None, run: 1 });
    for (id, _) in run_ops(&out) {
        let _ = n.handle(Millis(1), Input::Done { id, result: Ok(Done::Ok) });
    }
    (n, Millis(1))
}

#[test]
fn a_fresh_start_quiesces_and_persists_its_boot_before_any_heartbeat() {
    let mut n = Node::new(cfg());
    let out = n.handle(Millis(0), Input::Start { persisted: None, run: 1 });
    let boot = PersistedState { boots: 1, ..PersistedState::default() };
    assert_eq!(out.actions, vec![Action::Run { id: OpId(1), op: Op::DropVip }, Action::Run { id: OpId(2), op: Op::Persist(boot) }]);
    // No heartbeat before the boot number is durable: the next wake-up is the discovery window.
    assert_eq!(out.next_wakeup, Some(Millis(1500)));
}

#[test]
fn a_lone_fresh_node_probes_the_vip_then_persists_epoch_one_before_raising_it() {
    let (mut n, _) = started();
    let out = n.handle(Millis(1500), Input::Tick);
    let ops = run_ops(&out);
    assert_eq!(ops.last().map(|(_, o)| o.clone()), Some(Op::MayTake { arbiter: ArbiterKind::ArpProbe, epoch: 1 }));
    let (probe, _) = ops.last().cloned().expect("probe");
    let out = n.handle(Millis(1580), Input::Done { id: probe, result: Ok(Done::Verdict(Verdict::Arp { answered: false })) });
    let want = PersistedState { epoch: 1, last_role: Some(Role::Master), boots: 1, ..PersistedState::default() };
    assert_eq!(run_ops(&out).into_iter().map(|(_, o)| o).collect::<Vec<_>>(), vec![Op::Persist(want)]);
    assert_eq!(n.role(), Role::Booting, "not Master before the epoch is durable");
    let (persist, _) = run_ops(&out)[0].clone();
    let out = n.handle(Millis(1583), Input::Done { id: persist, result: Ok(Done::Ok) });
    assert_eq!(n.role(), Role::Master);
    assert_eq!(n.epoch(), 1);
    assert!(matches!(out.actions[0], Action::Event(Event::RoleChanged { from: Role::Booting, to: Role::Master, epoch: 1, .. })));
    assert_eq!(run_ops(&out).into_iter().map(|(_, o)| o).collect::<Vec<_>>(), vec![Op::RaiseVip]);
}

/// A daemon stopped (SIGSTOP, starved) between its checks and its claim: when it runs again,
/// the epoch write it was waiting for has long completed, but the peer may have taken over
/// meanwhile. The claim is not completed on stale checks: it probes again.
#[test]
fn a_promotion_interrupted_by_a_stall_is_decided_again_with_a_fresh_probe() {
    let (mut n, _) = started();
    let out = n.handle(Millis(1500), Input::Tick);
    let (probe, _) = run_ops(&out).last().cloned().expect("probe");
    let out = n.handle(Millis(1580), Input::Done { id: probe, result: Ok(Done::Verdict(Verdict::Arp { answered: false })) });
    let (persist, _) = run_ops(&out)[0].clone();
    // Nothing for six seconds, then the write's completion.
    let out = n.handle(Millis(7580), Input::Done { id: persist, result: Ok(Done::Ok) });
    assert_ne!(n.role(), Role::Master, "no claim on checks six seconds old");
    assert!(out.actions.iter().any(|a| matches!(a, Action::Event(Event::TakeoverRefused { why }) if why.contains("stalled 6000 ms"))), "{:?}", out.actions);
    assert!(run_ops(&out).iter().any(|(_, o)| matches!(o, Op::MayTake { arbiter: ArbiterKind::ArpProbe, .. })), "probes afresh: {:?}", out.actions);
    // A stall while nothing is being decided changes nothing.
    let (mut quiet, _) = started();
    let out = quiet.handle(Millis(9000), Input::Tick);
    assert!(!out.actions.iter().any(|a| matches!(a, Action::Event(Event::TakeoverRefused { why }) if why.contains("stalled"))));
}

#[test]
fn an_answered_probe_refuses_the_takeover_and_raises_an_alarm() {
    let (mut n, _) = started();
    let out = n.handle(Millis(1500), Input::Tick);
    let (probe, _) = run_ops(&out).last().cloned().expect("probe");
    let out = n.handle(Millis(1580), Input::Done { id: probe, result: Ok(Done::Verdict(Verdict::Arp { answered: true })) });
    // (A heartbeat may fall due at the same instant.)
    let acted: Vec<Action> = out.actions.into_iter().filter(|a| !matches!(a, Action::Send(_))).collect();
    assert_eq!(
        acted,
        vec![
            Action::Event(Event::AlarmRaised(Alarm::VipAnsweredElsewhere)),
            Action::Event(Event::TakeoverRefused { why: "another host answers ARP for the VIP".into() }),
        ]
    );
    assert_eq!(n.role(), Role::Booting);
    assert_eq!(n.status().alarms, vec![Alarm::VipAnsweredElsewhere]);
}

#[test]
fn a_master_hearing_a_higher_epoch_master_fences_itself_at_once() {
    let (mut n, _) = started();
    let out = n.handle(Millis(1500), Input::Tick);
    let (probe, _) = run_ops(&out).last().cloned().expect("probe");
    let out = n.handle(Millis(1580), Input::Done { id: probe, result: Ok(Done::Verdict(Verdict::Arp { answered: false })) });
    let (persist, _) = run_ops(&out)[0].clone();
    let out = n.handle(Millis(1583), Input::Done { id: persist, result: Ok(Done::Ok) });
    let (raise, _) = run_ops(&out)[0].clone();
    let hb = Heartbeat { epoch: 5, was_master: true, ..peer_heartbeat(NodeId(2), Role::Master) };
    let out = n.handle(Millis(1600), Input::Peer(Message::Heartbeat(hb)));
    assert_eq!(n.role(), Role::Slave);
    assert!(n.status().needs_resync);
    let ops: Vec<Op> = run_ops(&out).into_iter().map(|(_, o)| o).collect();
    let flagged = PersistedState { epoch: 1, last_role: Some(Role::Slave), needs_resync: true, boots: 1, ..PersistedState::default() };
    // The resync flag is made durable at once; the VIP is dropped as soon as the `RaiseVip` still
    // in flight has finished, so that it cannot land after the drop.
    assert_eq!(ops, vec![Op::Persist(flagged)]);
    let out = n.handle(Millis(1602), Input::Done { id: raise, result: Ok(Done::Ok) });
    let ops: Vec<Op> = run_ops(&out).into_iter().map(|(_, o)| o).collect();
    assert_eq!(ops, vec![Op::DropVip], "the VIP goes first");
}

#[test]
fn a_replayed_heartbeat_is_ignored() {
    let (mut n, _) = started();
    let hb = Heartbeat { boot: 3, seq: 10, maintenance: Maintenance { on: true, version: 4 }, ..peer_heartbeat(NodeId(2), Role::Booting) };
    let _ = n.handle(Millis(10), Input::Peer(Message::Heartbeat(hb.clone())));
    assert!(n.status().maintenance.on);
    let older = Heartbeat { seq: 9, maintenance: Maintenance { on: false, version: 9 }, ..hb };
    let _ = n.handle(Millis(20), Input::Peer(Message::Heartbeat(older)));
    assert!(n.status().maintenance.on, "an older sequence number must not be applied");
}

#[test]
fn commands_before_start_and_impossible_commands_get_clear_errors() {
    let mut n = Node::new(cfg());
    let out = n.handle(Millis(0), Input::Command { req: 7, cmd: Command::Switchover });
    assert_eq!(out.actions, vec![Action::Reply { req: 7, result: Err("the node has not started yet".into()) }]);
    let (mut n, _) = started();
    let out = n.handle(Millis(5), Input::Command { req: 8, cmd: Command::Resync(ResyncKind::All) });
    assert!(matches!(&out.actions[..], [Action::Reply { req: 8, result: Err(e) }] if e.contains("settled Slave")));
}

#[test]
fn config_errors_name_the_field() {
    let mut c = cfg();
    c.timing.isolation_timeout = c.timing.failover_timeout;
    assert_eq!(c.validate().map_err(|e| e.field), Err("timing.isolation_timeout_ms"));
    let mut c = cfg();
    c.peer = c.node;
    assert_eq!(c.validate().map_err(|e| e.field), Err("node.id"));
    assert_eq!(cfg().validate(), Ok(()));
}

#[test]
fn same_inputs_same_outputs() {
    let run = || {
        let (mut n, _) = started();
        let mut all = Vec::new();
        for t in (1500..3000).step_by(50) {
            all.push(n.handle(Millis(t), Input::Tick));
        }
        all
    };
    assert_eq!(run(), run());
}

/// A lone Master whose VIP lived and ended by its lease (the daemon stalled) or was removed by
/// hand: it never raises it again blindly; a probe decides (free: raise it; answered: the
/// address is someone else's now, step down).
#[test]
fn a_master_that_lost_its_vip_probes_before_raising_it_again() {
    let master = |answered: bool| {
        let (mut n, _) = started();
        let out = n.handle(Millis(1500), Input::Tick);
        let (probe, _) = run_ops(&out).last().cloned().expect("probe");
        let out = n.handle(Millis(1580), Input::Done { id: probe, result: Ok(Done::Verdict(Verdict::Arp { answered: false })) });
        let (persist, _) = run_ops(&out)[0].clone();
        let mut pending = run_ops(&n.handle(Millis(1583), Input::Done { id: persist, result: Ok(Done::Ok) }));
        while let Some((id, _)) = pending.pop() {
            pending.extend(run_ops(&n.handle(Millis(1590), Input::Done { id, result: Ok(Done::Ok) })));
        }
        assert!(n.status().vip_held && n.status().transition.is_none(), "{:?}", n.status());
        let _ = n.handle(Millis(2000), Input::VipObserved { held: false });
        let out = n.handle(Millis(2250), Input::VipObserved { held: false });
        let mut ops: Vec<(OpId, Op)> = run_ops(&out);
        if ops.is_empty() {
            ops = run_ops(&n.handle(Millis(2260), Input::Tick));
        }
        assert_eq!(
            ops.iter().map(|(_, o)| o.clone()).collect::<Vec<_>>(),
            vec![Op::MayTake { arbiter: ArbiterKind::ArpProbe, epoch: 1 }],
            "a probe first, no RaiseVip"
        );
        let out = n.handle(Millis(2350), Input::Done { id: ops[0].0, result: Ok(Done::Verdict(Verdict::Arp { answered })) });
        (n, run_ops(&out).into_iter().map(|(_, o)| o).collect::<Vec<_>>())
    };
    let (n, ops) = master(false);
    assert_eq!(ops, vec![Op::RaiseVip], "nobody answers: it is still ours");
    assert_eq!(n.role(), Role::Master);
    let (n, _) = master(true);
    assert_ne!(n.role(), Role::Master, "someone else answers: it is theirs");
}

/// A peer that lost its state file starts over at boot 1 (here even the same boot number as
/// before would do): a new run, heard at its first heartbeat, not ignored for ever.
#[test]
fn a_peer_restarted_with_a_lower_boot_number_is_heard_at_once() {
    let (mut n, _) = started();
    let hb = Heartbeat { boot: 5, seq: 900, ..peer_heartbeat(NodeId(2), Role::Slave) };
    let _ = n.handle(Millis(100), Input::Peer(Message::Heartbeat(hb)));
    assert_eq!(n.status().peer.role, Some(Role::Slave));
    let fresh = Heartbeat { boot: 1, seq: 1, run: 2, ..peer_heartbeat(NodeId(2), Role::Booting) };
    let _ = n.handle(Millis(150), Input::Peer(Message::Heartbeat(fresh)));
    assert_eq!(n.status().peer.role, Some(Role::Booting), "the new run is heard 50 ms later");
    let stale = Heartbeat { boot: 1, seq: 1, run: 2, ..peer_heartbeat(NodeId(2), Role::Master) };
    let _ = n.handle(Millis(160), Input::Peer(Message::Heartbeat(stale)));
    assert_eq!(n.status().peer.role, Some(Role::Booting), "within a run, no repeated sequence number");
}

/// The peer's clock plays no part in hearing it: a heartbeat whose send time jumped back an
/// hour is heard like any other (order comes from the run and its sequence numbers).
#[test]
fn a_peer_whose_clock_jumps_back_an_hour_is_still_heard() {
    let (mut n, _) = started();
    let hb = Heartbeat { seq: 10, sent_at: Millis(4_000_000), ..peer_heartbeat(NodeId(2), Role::Slave) };
    let _ = n.handle(Millis(100), Input::Peer(Message::Heartbeat(hb)));
    let back = Heartbeat { seq: 11, sent_at: Millis(400_000), ..peer_heartbeat(NodeId(2), Role::Booting) };
    let _ = n.handle(Millis(200), Input::Peer(Message::Heartbeat(back)));
    assert_eq!(n.status().peer.role, Some(Role::Booting));
    assert_eq!(n.status().peer.silent_for_ms, Some(0));
}

/// A former Slave alone says that it waits, how long, and how to end it; a Master whose peer
/// falls silent says that it has no redundancy.
#[test]
fn waiting_alone_and_a_silent_peer_are_alarms_with_a_reason() {
    let mut n = Node::new(cfg());
    let persisted = PersistedState { epoch: 3, last_role: Some(Role::Slave), boots: 1, ..PersistedState::default() };
    let out = n.handle(Millis(0), Input::Start { persisted: Some(persisted), run: 1 });
    for (id, _) in run_ops(&out) {
        let _ = n.handle(Millis(1), Input::Done { id, result: Ok(Done::Ok) });
    }
    let out = n.handle(Millis(1600), Input::Tick);
    assert!(n.status().alarms.contains(&Alarm::WaitingForPeer), "{:?}", n.status().alarms);
    assert!(
        out.actions.iter().any(|a| matches!(a, Action::Event(Event::TakeoverRefused { why }) if why.contains("59 s more") && why.contains("set-state master"))),
        "{:?}",
        out.actions
    );
    // The peer shows up as Master: the wait is over, and it is not silent.
    let hb = Heartbeat { epoch: 3, was_master: true, ..peer_heartbeat(NodeId(2), Role::Master) };
    let _ = n.handle(Millis(1700), Input::Peer(Message::Heartbeat(hb)));
    assert!(!n.status().alarms.contains(&Alarm::WaitingForPeer));
    assert!(!n.status().alarms.contains(&Alarm::PeerSilent));
    // Then it falls silent: the Slave says so (and goes on with its takeover rules).
    let _ = n.handle(Millis(1700 + 700), Input::Tick);
    assert!(n.status().alarms.contains(&Alarm::PeerSilent), "{:?}", n.status().alarms);
}

/// A Master whose file sync cannot deliver says so with the adapter's reason, until it can.
#[test]
fn a_master_whose_file_sync_fails_raises_an_alarm_until_it_delivers() {
    let mut c = cfg();
    c.components.fs = true;
    let mut n = Node::new(c);
    let mut pending = run_ops(&n.handle(Millis(0), Input::Start { persisted: None, run: 1 }));
    let mut t = 1;
    let drain = |n: &mut Node, pending: &mut Vec<(OpId, Op)>, t: &mut u64| {
        while let Some((id, op)) = pending.pop() {
            *t += 1;
            let done =
                if matches!(op, Op::MayTake { arbiter: ArbiterKind::ArpProbe, .. }) { Done::Verdict(Verdict::Arp { answered: false }) } else { Done::Ok };
            pending.extend(run_ops(&n.handle(Millis(*t), Input::Done { id, result: Ok(done) })));
        }
    };
    drain(&mut n, &mut pending, &mut t);
    pending.extend(run_ops(&n.handle(Millis(1500), Input::Tick)));
    t = 1500;
    drain(&mut n, &mut pending, &mut t);
    assert_eq!(n.role(), Role::Master);
    assert!(n.status().fs_pushing);
    let bad = FsReport { backlog: 31, last_error: Some("the Slave's disk is full".into()), ..FsReport::default() };
    let _ = n.handle(Millis(2000), Input::FsReport(bad));
    assert!(n.status().alarms.contains(&Alarm::FsSyncFailing { error: "the Slave's disk is full".into() }), "{:?}", n.status().alarms);
    let _ = n.handle(Millis(2250), Input::FsReport(FsReport::default()));
    assert!(!n.status().alarms.iter().any(|a| matches!(a, Alarm::FsSyncFailing { .. }))); // What the Master's own daemon refused (a stale push of the old Master) is not an alarm.
    let refused = FsReport { refused: Some("pre-xfer exec returned failure".into()), ..FsReport::default() };
    let _ = n.handle(Millis(2500), Input::FsReport(refused));
    assert!(!n.status().alarms.iter().any(|a| matches!(a, Alarm::FsReceiveFailing { .. })), "{:?}", n.status().alarms);
}

/// The Slave's side of a failing file sync: its daemon's refusal, in rsync's words, is an alarm
/// until a push lands.
#[test]
fn a_slave_whose_daemon_refuses_pushes_raises_an_alarm_until_one_lands() {
    let mut c = cfg();
    c.components.fs = true;
    let mut n = Node::new(c);
    let _ = n.handle(Millis(0), Input::Start { persisted: None, run: 1 });
    assert_ne!(n.role(), Role::Master);
    let full = "receiving into /srv/files: write failed on \"big\": No space left on device (28)";
    let _ = n.handle(Millis(10), Input::FsReport(FsReport { refused: Some(full.into()), ..FsReport::default() }));
    assert!(n.status().alarms.contains(&Alarm::FsReceiveFailing { error: full.into() }), "{:?}", n.status().alarms);
    let _ = n.handle(Millis(20), Input::FsReport(FsReport::default()));
    assert!(!n.status().alarms.iter().any(|a| matches!(a, Alarm::FsReceiveFailing { .. })), "{:?}", n.status().alarms);
}
