//! The promotion policy and the database watch, input by input.

use crate::tests::peer_heartbeat;
use crate::*;

/// A node with a database only (no VIP: no ARP probe in the way), driven by hand: every
/// operation it asks for is answered by `settle`.
pub(crate) struct H {
    pub(crate) n: Node,
    pub(crate) t: u64,
    pub(crate) pending: Vec<(OpId, Op)>,
    pub(crate) events: Vec<Event>,
    /// Every operation asked for, answered or not.
    pub(crate) ran: Vec<Op>,
    pub(crate) seq: u64,
}

fn db_cfg() -> Config {
    let mut c = Config::lan(NodeId(2), NodeId(1));
    c.components = Components { vip: false, db: true, mongo: false, fs: false, services: false };
    c
}

fn facts(pos: u64, replication: Replication) -> DbFacts {
    DbFacts { position: Position(pos), received: Position(pos), writable: false, replication, ..DbFacts::default() }
}

impl H {
    pub(crate) fn new(cfg: Config, persisted: Option<PersistedState>) -> H {
        let mut h = H { n: Node::new(cfg), t: 0, pending: Vec::new(), events: Vec::new(), ran: Vec::new(), seq: 0 };
        h.feed(Input::Start { persisted, run: 1 });
        h.settle();
        h
    }

    pub(crate) fn feed(&mut self, input: Input) -> Vec<Action> {
        let out = self.n.handle(Millis(self.t), input);
        for a in &out.actions {
            match a {
                Action::Run { id, op } => {
                    self.pending.push((*id, op.clone()));
                    self.ran.push(op.clone());
                }
                Action::Event(e) => self.events.push(e.clone()),
                _ => {}
            }
        }
        out.actions
    }

    /// Answers every pending operation with success (a fence at the node's position).
    pub(crate) fn settle(&mut self) {
        for _ in 0..20 {
            let ops = std::mem::take(&mut self.pending);
            if ops.is_empty() {
                return;
            }
            for (id, op) in ops {
                let done = match op {
                    Op::FenceDb => Done::Fenced { position: Position(0) },
                    _ => Done::Ok,
                };
                self.feed(Input::Done { id, result: Ok(done) });
            }
        }
    }

    pub(crate) fn at(&mut self, t: u64) {
        self.t = t;
        self.feed(Input::Tick);
        self.settle();
    }

    fn master_hb(&mut self, position: u64, semi_sync: bool) {
        self.seq += 1;
        let hb = Heartbeat {
            seq: self.seq,
            sent_at: Millis(self.t),
            epoch: 1,
            position: Position(position),
            was_master: true,
            received: Position(position),
            semi_sync,
            ..peer_heartbeat(NodeId(1), Role::Master)
        };
        self.feed(Input::Peer(Message::Heartbeat(hb)));
        self.settle();
    }

    /// A Slave of a live Master at `position`, its own database at `mine`.
    fn slave(mine: u64, master: u64, semi_sync: bool) -> H {
        let mut h = H::new(db_cfg(), Some(PersistedState { epoch: 1, last_role: Some(Role::Slave), boots: 1, ..PersistedState::default() }));
        h.feed(Input::DbReport(facts(mine, Replication::Running)));
        h.master_hb(master, semi_sync);
        h.settle();
        assert_eq!(h.n.role(), Role::Slave);
        h
    }

    pub(crate) fn said(&self, f: impl Fn(&Event) -> bool) -> bool {
        self.events.iter().any(f)
    }
}

#[test]
fn a_slave_known_to_miss_transactions_refuses_the_takeover_and_the_operator_can_force_it() {
    let mut h = H::slave(900, 1000, false);
    h.at(2000); // the Master is silent past the failover timeout
    assert_eq!(h.n.role(), Role::Slave, "100 transactions known missing: no automatic takeover");
    let st = h.n.status();
    let why = st.promotion_blocker.expect("a blocker");
    assert!(why.contains("100 transactions known missing") && why.contains("1000") && why.contains("900"), "{why}");
    assert!(st.alarms.iter().any(|a| matches!(a, Alarm::NotPromotable { .. })), "{:?}", st.alarms);
    assert!(h.said(|e| matches!(e, Event::TakeoverRefused { why } if why.contains("--accept-data-loss"))), "the refusal says how to override");
    // A plain set-state master is refused with the reason; the forced one goes through.
    let out = h.feed(Input::Command { req: 1, cmd: Command::SetState(Target::Master) });
    assert!(out.iter().any(|a| matches!(a, Action::Reply { req: 1, result: Err(e) } if e.contains("promotion policy"))), "{out:?}");
    h.feed(Input::Command { req: 2, cmd: Command::ForceMaster });
    h.settle();
    assert_eq!(h.n.role(), Role::Master);
    assert!(h.said(|e| matches!(e, Event::PromotionForced { .. })));
    assert!(h.said(|e| matches!(e, Event::Promoted { missing: 100, lossless: false, .. })));
    assert!(h.n.status().alarms.contains(&Alarm::PossibleLoss { count: 100 }), "the possible loss is counted and shown");
}

#[test]
fn with_semi_sync_active_on_the_master_the_gap_is_unacknowledged_and_the_takeover_goes_on() {
    let mut h = H::slave(998, 1000, true);
    h.at(2000);
    assert_eq!(h.n.role(), Role::Master);
    assert!(h.said(|e| matches!(e, Event::Promoted { missing: 2, lossless: true, .. })));
    assert!(!h.n.status().alarms.iter().any(|a| matches!(a, Alarm::PossibleLoss { .. })));
}

#[test]
fn a_flagged_slave_or_one_whose_database_is_down_never_takes_over_by_itself() {
    let mut h = H::slave(1000, 1000, false);
    h.feed(Input::DbErrant { count: 3, gtids: "0-2-5..7".into() });
    h.at(2000);
    assert_eq!(h.n.role(), Role::Slave);
    assert!(h.said(|e| matches!(e, Event::ErrantFound { count: 3, gtids } if gtids == "0-2-5..7")));

    let mut h = H::slave(1000, 1000, false);
    h.feed(Input::DbUnreachable { error: "connection refused".into() });
    h.at(2000);
    assert_eq!(h.n.role(), Role::Slave);
    let st = h.n.status();
    assert!(st.promotion_blocker.is_some_and(|b| b.contains("does not answer")) && st.alarms.contains(&Alarm::DbUnreachable));
    assert_eq!(st.db_error.as_deref(), Some("connection refused"), "the status says the values are stale");
    // It answers again, caught up: now it takes over.
    h.feed(Input::DbReport(facts(1000, Replication::Connecting)));
    h.at(4000);
    assert_eq!(h.n.role(), Role::Master);
}

#[test]
fn a_database_resync_flags_the_node_durably_before_copying_and_a_failure_leaves_it_flagged() {
    let mut h = H::slave(1000, 1000, false);
    h.master_hb(1000, false);
    let out = h.feed(Input::Command { req: 1, cmd: Command::Resync(ResyncKind::Db) });
    assert!(out.iter().any(|a| matches!(a, Action::Reply { result: Ok(_), .. })), "{out:?}");
    // The first thing asked is the durable flag; the copy waits for it.
    let ops: Vec<Op> = h.pending.iter().map(|(_, o)| o.clone()).collect();
    assert!(matches!(ops.as_slice(), [Op::Persist(s)] if s.needs_resync), "{ops:?}");
    let (persist, _) = h.pending.remove(0);
    h.feed(Input::Done { id: persist, result: Ok(Done::Ok) });
    let (copy, op) = h.pending.pop().expect("the copy starts once the flag is durable");
    assert!(matches!(op, Op::Resync { phase: ResyncPhase::DbCopy, .. }), "{op:?}");
    h.feed(Input::Done { id: copy, result: Err(OpError::Failed("Access denied".into())) });
    let st = h.n.status();
    assert!(st.needs_resync && st.alarms.contains(&Alarm::NeedsResync) && st.alarms.contains(&Alarm::ResyncFailed), "{st:?}");
    assert!(h.n.durable().needs_resync);
    h.at(5000);
    assert_eq!(h.n.role(), Role::Slave, "a half-copied node is never promoted automatically");
}

#[test]
fn a_node_without_a_state_file_whose_database_holds_data_waits_like_a_former_slave() {
    let mut h = H::new(db_cfg(), None);
    h.feed(Input::DbReport(facts(500, Replication::NotReplica)));
    h.at(2000);
    assert_eq!(h.n.role(), Role::Booting, "not a fresh install: the absent peer may hold newer data");
    assert!(h.said(|e| matches!(e, Event::TakeoverRefused { why } if why.contains("no state file"))));
    h.at(61_000);
    assert_eq!(h.n.role(), Role::Master, "alone past lone_slave_wait, as a former Slave");
}

#[test]
fn a_stopped_replica_is_alarmed_and_started_again() {
    let mut h = H::slave(1000, 1000, false);
    h.at(200);
    h.master_hb(1000, false);
    h.feed(Input::DbReport(facts(1000, Replication::Stopped)));
    h.ran.clear();
    h.t = 2500;
    h.master_hb(1000, false);
    h.feed(Input::DbReport(facts(1000, Replication::Stopped)));
    assert!(h.n.status().alarms.contains(&Alarm::ReplicationStopped));
    assert!(h.ran.iter().any(|o| matches!(o, Op::ReplicateDb { .. })), "replication asked again: {:?}", h.ran);
    h.settle();
    h.feed(Input::DbReport(facts(1000, Replication::Running)));
    assert!(!h.n.status().alarms.contains(&Alarm::ReplicationStopped));
    assert!(h.n.heartbeat().replicating, "the heartbeat carries what the database says");
}

#[test]
fn a_master_whose_database_stays_down_hands_over_to_a_caught_up_slave() {
    // Semi-sync active at the last report: every acknowledged write is on the Slave.
    let mut h = db_down_master(true);
    assert!(h.n.status().transition.as_deref() == Some("handing-over"), "{:?}", h.n.status());
    assert!(!h.pending.iter().any(|(_, o)| matches!(o, Op::FenceDb)), "a dead database is not fenced: {:?}", h.pending);
    h.settle();
    // Without it, writes acknowledged after the last report may exist only on the dead database.
    let h = db_down_master(false);
    assert_eq!(h.n.role(), Role::Master, "nothing moves");
    assert!(h.said(|e| matches!(e, Event::TakeoverRefused { why } if why.contains("semi-sync was not active"))), "{:?}", h.events);
}

/// A Master at 700 whose database stops answering, its Slave caught up, for 10 s.
fn db_down_master(semi_sync: bool) -> H {
    let mut c = db_cfg();
    c.node = NodeId(1);
    c.peer = NodeId(2);
    let mut h = H::new(c, Some(PersistedState { epoch: 1, last_role: Some(Role::Master), boots: 1, ..PersistedState::default() }));
    h.feed(Input::DbReport(DbFacts { semi_sync, replicas: 1, ..facts(700, Replication::NotReplica) }));
    h.at(1600);
    assert_eq!(h.n.role(), Role::Master);
    let slave_hb = |seq: u64, t: u64| Heartbeat {
        seq,
        sent_at: Millis(t),
        epoch: 1,
        position: Position(700),
        received: Position(700),
        ..peer_heartbeat(NodeId(2), Role::Slave)
    };
    h.feed(Input::DbUnreachable { error: "connection refused".into() });
    assert!(h.n.status().alarms.contains(&Alarm::DbUnreachable), "alarmed at once");
    let mut seq = 0;
    for t in (1700..=11_700).step_by(100) {
        seq += 1;
        h.t = t;
        h.feed(Input::Peer(Message::Heartbeat(slave_hb(seq, t))));
        h.feed(Input::DbUnreachable { error: "connection refused".into() });
        if t < 11_600 {
            assert_eq!(h.n.role(), Role::Master, "not before down_handover ({t} ms)");
            h.settle();
        }
    }
    h
}

#[test]
fn a_misconfigured_database_is_an_alarm_until_fixed() {
    let mut h = H::slave(10, 10, false);
    let bad = DbFacts { misconfigured: vec!["gtid_strict_mode is 0, wanted ON".into()], ..facts(10, Replication::Running) };
    h.feed(Input::DbReport(bad));
    let alarms = h.n.status().alarms;
    assert!(alarms.iter().any(|a| matches!(a, Alarm::DbMisconfigured { what } if what.contains("gtid_strict_mode"))), "{alarms:?}");
    h.feed(Input::DbReport(facts(10, Replication::Running)));
    assert!(!h.n.status().alarms.iter().any(|a| matches!(a, Alarm::DbMisconfigured { .. })), "cleared once fixed");
}

#[test]
fn an_exhausted_epoch_refuses_the_claim_instead_of_wrapping() {
    let persisted = PersistedState { epoch: u64::MAX, last_role: Some(Role::Slave), boots: 1, ..PersistedState::default() };
    let mut h = H::new(db_cfg(), Some(persisted));
    h.feed(Input::DbReport(facts(10, Replication::Running)));
    h.master_hb(10, true);
    // The Master falls silent: a takeover would need epoch u64::MAX + 1.
    for t in (100..10_000).step_by(100) {
        h.at(t);
    }
    assert_ne!(h.n.role(), Role::Master);
    assert!(h.said(|e| matches!(e, Event::TakeoverRefused { why } if why.contains("epoch is at its maximum"))), "{:?}", h.events);
    assert!(h.n.durable().epoch == u64::MAX, "nothing wrapped");
}

#[test]
fn a_mongo_resync_copies_the_member_alone_and_all_includes_it() {
    let mut c = db_cfg();
    c.components.mongo = true;
    let n = Node::new(c);
    assert_eq!(n.phases_for(ResyncKind::Mongo), vec![ResyncPhase::MongoCopy]);
    assert_eq!(n.phases_for(ResyncKind::All), vec![ResyncPhase::DbCopy, ResyncPhase::DbReplicate, ResyncPhase::MongoCopy]);
    assert!(Node::new(db_cfg()).phases_for(ResyncKind::Mongo).is_empty(), "no [mongo]: nothing to resync");
}

#[test]
fn a_mongo_rollback_is_alarmed_and_shown_never_hidden() {
    let mut h = H::new(db_cfg(), None);
    let r = MongoReport { state: "SECONDARY".into(), optime: (2, 100, 1), lag_ms: Some(0), rollbacks: 0, error: None };
    h.feed(Input::MongoReport(r.clone()));
    assert_eq!(h.n.status().mongo.as_ref(), Some(&r));
    assert!(!h.n.status().alarms.iter().any(|a| matches!(a, Alarm::MongoRolledBack { .. })));
    h.feed(Input::MongoReport(MongoReport { rollbacks: 1, ..r.clone() }));
    assert!(h.n.status().alarms.contains(&Alarm::MongoRolledBack { count: 1 }), "{:?}", h.n.status().alarms);
    assert_eq!(Alarm::MongoRolledBack { count: 1 }.to_string(), "mongo-rolled-back(1)");
    // The member restarted (its count starts again): the alarm goes.
    h.feed(Input::MongoReport(r));
    assert!(!h.n.status().alarms.iter().any(|a| matches!(a, Alarm::MongoRolledBack { .. })));
}

/// A hand-over offered on a heartbeat older than the resync begun here: the half-copied node
/// refuses it (the old Master takes its role back when the hand-over times out).
#[test]
fn a_node_copying_its_database_refuses_a_hand_over() {
    let mut h = H::slave(1000, 1000, false);
    h.feed(Input::Command { req: 1, cmd: Command::Resync(ResyncKind::Db) });
    let (persist, _) = h.pending.remove(0);
    h.feed(Input::Done { id: persist, result: Ok(Done::Ok) });
    assert!(h.pending.iter().any(|(_, o)| matches!(o, Op::Resync { phase: ResyncPhase::DbCopy, .. })), "copying");
    h.seq += 1;
    let hb = Heartbeat { seq: h.seq, sent_at: Millis(h.t), epoch: 1, handing_over: true, position: Position(1000), ..peer_heartbeat(NodeId(1), Role::Slave) };
    h.feed(Input::Peer(Message::Heartbeat(hb)));
    h.feed(Input::Peer(Message::Handover { from: NodeId(1), epoch: 1, position: Position(1000), sent_at: Millis(h.t) }));
    assert_eq!(h.n.role(), Role::Slave);
    assert!(h.said(|e| matches!(e, Event::TakeoverRefused { why } if why.starts_with("hand-over refused: a database resync is running"))));
    assert!(h.n.status().job.is_some_and(|j| j.state == JobState::Running), "the copy goes on");
}

/// A switch-over asked while the Master's own database is down would wait on a fence that
/// cannot succeed, holding the VIP: refused, with the reason.
#[test]
fn a_switchover_is_refused_while_the_masters_database_is_down() {
    let mut c = db_cfg();
    c.node = NodeId(1);
    c.peer = NodeId(2);
    let mut h2 = H::new(c, Some(PersistedState { epoch: 1, last_role: Some(Role::Master), boots: 1, ..PersistedState::default() }));
    h2.feed(Input::DbReport(facts(700, Replication::NotReplica)));
    h2.at(1600);
    h2.t = 1700;
    let hb = Heartbeat { seq: 1, sent_at: Millis(1700), epoch: 1, replicating: true, ..peer_heartbeat(NodeId(2), Role::Slave) };
    h2.feed(Input::Peer(Message::Heartbeat(hb)));
    h2.feed(Input::DbUnreachable { error: "connection refused".into() });
    let out = h2.feed(Input::Command { req: 1, cmd: Command::Switchover });
    assert!(out.iter().any(|a| matches!(a, Action::Reply { req: 1, result: Err(e) } if e.contains("database does not answer"))), "{out:?}");
    assert_eq!(h2.n.role(), Role::Master);
    assert!(h2.n.status().transition.is_none());
}
