//! MongoDB in the promotion policy, the start-up tie-break and the hand-over: the member's
//! health and optime decide as the database's position does.

use crate::tests::peer_heartbeat;
use crate::tests_policy::H;
use crate::*;

fn mongo_cfg() -> Config {
    let mut c = Config::lan(NodeId(2), NodeId(1));
    c.components = Components { vip: false, db: false, mongo: true, fs: false, services: false };
    c
}

fn member(state: &str, optime: Optime) -> MongoReport {
    MongoReport { state: state.into(), optime, lag_ms: Some(0), rollbacks: 0, error: None }
}

fn beat(optime: Optime) -> Option<MongoBeat> {
    Some(MongoBeat { optime, healthy: true })
}

impl H {
    fn mongo_master_hb(&mut self, optime: Optime) {
        self.seq += 1;
        let hb =
            Heartbeat { seq: self.seq, sent_at: Millis(self.t), epoch: 1, was_master: true, mongo: beat(optime), ..peer_heartbeat(NodeId(1), Role::Master) };
        self.feed(Input::Peer(Message::Heartbeat(hb)));
        self.settle();
    }

    /// A Slave of a live Master whose member is at `master`, its own at `mine`.
    fn mongo_slave(mine: MongoReport, master: Optime) -> H {
        let mut h = H::new(mongo_cfg(), Some(PersistedState { epoch: 1, last_role: Some(Role::Slave), boots: 1, ..PersistedState::default() }));
        h.feed(Input::MongoReport(mine));
        h.mongo_master_hb(master);
        assert_eq!(h.n.role(), Role::Slave);
        h
    }

    fn blocker(&self) -> String {
        self.n.status().promotion_blocker.unwrap_or_default()
    }
}

#[test]
fn a_caught_up_secondary_takes_over_and_its_heartbeat_carries_the_optime() {
    let mut h = H::mongo_slave(member("SECONDARY", (3, 500, 7)), (3, 500, 7));
    assert_eq!(h.n.heartbeat().mongo, Some(MongoBeat { optime: (3, 500, 7), healthy: true }));
    h.at(2000);
    assert_eq!(h.n.role(), Role::Master);
    assert!(h.ran.contains(&Op::PromoteMongo), "{:?}", h.ran);
}

#[test]
fn a_secondary_known_to_miss_the_masters_optime_waits_until_it_has_caught_up() {
    let mut h = H::mongo_slave(member("SECONDARY", (3, 498, 2)), (3, 500, 7));
    assert!(h.n.heartbeat().mongo.is_some_and(|m| m.healthy));
    h.at(2000);
    assert_eq!(h.n.role(), Role::Slave, "writes known missing: no automatic takeover");
    let why = h.blocker();
    assert!(why.contains("MongoDB writes known missing") && why.contains("(3, 500, 7)") && why.contains("(3, 498, 2)") && why.contains("2 s"), "{why}");
    assert!(h.said(|e| matches!(e, Event::TakeoverRefused { why } if why.contains("--accept-data-loss"))));
    // Its member applies what it had fetched: the next report holds the Master's last optime.
    h.feed(Input::MongoReport(member("SECONDARY", (3, 500, 7))));
    h.at(2100);
    assert_eq!(h.n.role(), Role::Master, "caught up: the takeover goes on");
}

#[test]
fn the_allowance_lets_a_small_known_gap_through() {
    let mut cfg = mongo_cfg();
    cfg.mongo_max_lag_on_failover_s = 5;
    let mut h = H::new(cfg, Some(PersistedState { epoch: 1, last_role: Some(Role::Slave), boots: 1, ..PersistedState::default() }));
    h.feed(Input::MongoReport(member("SECONDARY", (3, 498, 2))));
    h.mongo_master_hb((3, 500, 7));
    h.at(2000);
    assert_eq!(h.n.role(), Role::Master, "2 s known missing, 5 allowed");
}

#[test]
fn a_member_that_is_not_a_healthy_secondary_never_takes_over_by_itself() {
    for (report, words) in [
        (member("STARTUP2", (3, 500, 7)), "is STARTUP2, not a healthy secondary"),
        (member("ROLLBACK", (3, 500, 7)), "is ROLLBACK"),
        (
            MongoReport { error: Some("connection refused".into()), state: "UNREACHABLE".into(), ..member("SECONDARY", (0, 0, 0)) },
            "does not answer (connection refused)",
        ),
    ] {
        let mut h = H::mongo_slave(member("SECONDARY", (3, 500, 7)), (3, 500, 7));
        h.feed(Input::MongoReport(report));
        assert_eq!(h.n.heartbeat().mongo.map(|m| m.healthy), Some(false));
        h.at(2000);
        assert_eq!(h.n.role(), Role::Slave, "{words}");
        assert!(h.blocker().contains(words), "{}", h.blocker());
        assert!(h.n.status().alarms.iter().any(|a| matches!(a, Alarm::NotPromotable { .. })));
    }
    // An unanswered report keeps the last known optime (the status still says how far it got).
    let mut h = H::mongo_slave(member("SECONDARY", (3, 500, 7)), (3, 500, 7));
    h.feed(Input::MongoReport(MongoReport { error: Some("timed out".into()), state: "UNREACHABLE".into(), ..MongoReport::default() }));
    assert_eq!(h.n.status().mongo.map(|m| m.optime), Some((3, 500, 7)));
}

#[test]
fn a_member_that_never_reported_is_not_promoted() {
    let mut h = H::new(mongo_cfg(), Some(PersistedState { epoch: 1, last_role: Some(Role::Slave), boots: 1, ..PersistedState::default() }));
    h.mongo_master_hb((3, 500, 7));
    h.at(2000);
    assert_eq!(h.n.role(), Role::Slave);
    assert!(h.blocker().contains("has not reported yet"), "{}", h.blocker());
}

#[test]
fn at_start_up_the_member_with_the_newer_optime_wins_the_tie_break() {
    for (mine, theirs, wins) in [((3, 500, 7), (3, 500, 6), true), ((3, 500, 7), (4, 10, 1), false), ((2, 900, 1), (3, 1, 1), false)] {
        let mut h = H::new(mongo_cfg(), Some(PersistedState { epoch: 1, last_role: Some(Role::Slave), boots: 1, ..PersistedState::default() }));
        let hb = Heartbeat { epoch: 1, mongo: beat(theirs), ..peer_heartbeat(NodeId(1), Role::Booting) };
        h.feed(Input::Peer(Message::Heartbeat(hb)));
        h.at(100);
        assert_eq!(h.n.role(), Role::Booting, "no report of its own yet: the tie-break waits for it");
        h.feed(Input::MongoReport(member("SECONDARY", mine)));
        h.at(200);
        // Node 2 loses the id tie-break: only a newer optime makes it win.
        assert_eq!(h.n.role() == Role::Master, wins, "mine {mine:?} theirs {theirs:?}");
    }
}

#[test]
fn a_switchover_to_a_peer_without_a_healthy_member_is_refused_and_a_master_alarms() {
    let mut h = H::new(mongo_cfg(), Some(PersistedState { epoch: 1, last_role: Some(Role::Master), boots: 1, ..PersistedState::default() }));
    h.feed(Input::MongoReport(member("PRIMARY", (3, 500, 7))));
    h.at(1600);
    assert_eq!(h.n.role(), Role::Master);
    let slave = |seq, healthy| Heartbeat { seq, epoch: 1, mongo: Some(MongoBeat { optime: (3, 400, 1), healthy }), ..peer_heartbeat(NodeId(1), Role::Slave) };
    h.t = 1700;
    h.feed(Input::Peer(Message::Heartbeat(slave(1, false))));
    let out = h.feed(Input::Command { req: 1, cmd: Command::Switchover });
    assert!(out.iter().any(|a| matches!(a, Action::Reply { req: 1, result: Err(e) } if e.contains("MongoDB member is not a healthy secondary"))), "{out:?}");
    assert_eq!(h.n.role(), Role::Master);
    for t in (1800..=4000).step_by(100) {
        h.t = t;
        h.feed(Input::Peer(Message::Heartbeat(slave(t, false))));
    }
    assert!(h.n.status().alarms.contains(&Alarm::MongoRedundancyLost), "{:?}", h.n.status().alarms);
    h.t = 4100;
    h.feed(Input::Peer(Message::Heartbeat(slave(5000, true))));
    assert!(!h.n.status().alarms.contains(&Alarm::MongoRedundancyLost));
    let out = h.feed(Input::Command { req: 2, cmd: Command::Switchover });
    assert!(out.iter().any(|a| matches!(a, Action::Reply { req: 2, result: Ok(_) })) || h.n.role() == Role::Slave, "{out:?}");
}

#[test]
fn a_slaves_member_found_primary_is_stepped_down() {
    let mut h = H::mongo_slave(member("SECONDARY", (3, 500, 7)), (3, 500, 7));
    h.ran.clear();
    // mongod restarted while cut off: its stale configuration made it the sole voter again.
    h.t = 5000;
    h.mongo_master_hb((3, 500, 7));
    for _ in 0..2 {
        h.feed(Input::MongoReport(member("PRIMARY", (3, 500, 7))));
    }
    h.feed(Input::Tick);
    assert!(h.ran.contains(&Op::DemoteMongo), "{:?}", h.ran);
    assert!(h.said(|e| matches!(e, Event::DbHealth { what } if what.contains("primary: stepping it down"))));
    // Once done, a report taken before the demotion finished is not believed.
    h.settle();
    h.ran.clear();
    h.feed(Input::MongoReport(member("PRIMARY", (3, 500, 7))));
    h.t = 20_000;
    h.mongo_master_hb((3, 500, 7));
    assert!(!h.ran.contains(&Op::DemoteMongo), "a stale report: {:?}", h.ran);
}
