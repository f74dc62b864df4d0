//! The second tier: the real async driver over turmoil's simulated UDP, against the same
//! modelled world and invariant checkers as the fast tier.

use ridondato_core::Role;
use ridondato_sim::fault::Fault;
use ridondato_sim::sweep::random_schedule;
use ridondato_sim::turmoil_tier::{roles, run};
use ridondato_sim::SimConfig;

#[test]
fn the_real_driver_fails_over_when_the_master_loses_power() {
    let cfg = SimConfig { seed: 7, ..SimConfig::default() };
    let ops = vec![(0, Fault::Start(0)), (2000, Fault::Start(1)), (3000, Fault::Writer(true)), (6000, Fault::PowerOff(0))];
    let before = run(&cfg, &ops[..3], 5000).expect("turmoil run");
    assert_eq!(roles(&before), [Some(Role::Master), Some(Role::Slave)], "before the fault");
    assert!(before.world.answers_arp(0) && !before.world.answers_arp(1));
    assert_eq!(before.world.hosts[1].db.source, Some(0), "b replicates from a");
    let after = run(&cfg, &ops, 8000).expect("turmoil run");
    assert!(after.violations.is_empty(), "{:?}", after.violations);
    assert_eq!(roles(&after)[1], Some(Role::Master));
    assert!(after.world.answers_arp(1) && after.world.hosts[1].db.writable);
    assert!(after.world.acked.len() > 40, "the client wrote through the VIP: {}", after.world.acked.len());
}

#[test]
fn the_real_driver_keeps_the_invariants_over_random_fault_schedules() {
    for seed in [11u64, 12, 13] {
        let s = random_schedule(seed);
        // Operator commands go through the control channel, which this tier does not drive yet.
        let ops: Vec<(u64, Fault)> = s.ops.into_iter().filter(|(_, f)| !matches!(f, Fault::Cmd(..))).collect();
        let r = run(&s.cfg, &ops, s.heal_at.min(25_000)).expect("turmoil run");
        assert!(r.violations.is_empty(), "seed {seed}: {:?}", r.violations);
        assert!(r.steps > 1000);
    }
}
