//! Cloud mode for real: two `ridondato run` daemons in network namespaces, no VIP, the Elastic
//! IP moved through the real SDK against moto's EC2 server (in the client's namespace, behind a
//! proxy that fails chosen calls). Needs what the LAN lab needs and moto
//! (scripts/deps-cloud.sh); under CI=true a missing piece fails the test.

mod support;

use std::time::Duration;
use support::cloud::CloudLab;
use support::*;

fn a_master_b_slave(c: &mut CloudLab) {
    c.lab.start("a");
    assert!(c.lab.wait_role("a", "master", Duration::from_secs(10)), "a alone becomes Master: {:?}", c.lab.status("a"));
    c.lab.start("b");
    assert!(c.lab.wait_role("b", "slave", Duration::from_secs(10)), "b becomes Slave: {:?}", c.lab.status("b"));
    assert_eq!(c.holder().as_deref(), Some(c.setup.instances[0].as_str()), "the public IP is on a's instance");
}

/// The seed's four manual steps as one command: a plan on `--dry-run`; the API refusing the
/// move stops the run at step 2 with the API's own code, journaled; run again once the API
/// works (throttled twice, retried), it resumes at step 2 and ends with b Master on the public
/// IP and a Slave. Then the
/// manual switch-over stays manual: b's daemon killed, a waits for an operator.
#[test]
fn the_four_step_switchover_stops_on_an_api_refusal_and_resumes_to_a_consistent_end() {
    let Some(mut c) = CloudLab::up("cs", false) else { return };
    a_master_b_slave(&mut c);

    let (ok, plan) = c.switchover("a", &["--dry-run"]);
    assert!(ok && plan.contains("1/4 node 1: services off") && plan.contains("4/4 node 1: Slave"), "{plan}");
    assert_eq!(c.lab.role("a"), "master", "a dry run changes nothing");

    c.proxy.fail("AssociateAddress", ridondato_adapters::cloud::fault_proxy::Fault::Deny("You are not authorized to perform this operation.".into()), None);
    let (ok, out) = c.switchover("a", &[]);
    assert!(!ok, "the move is refused: {out}");
    assert!(out.contains("step 1/4") && out.contains("step 2/4 failed") && out.contains("UnauthorizedOperation"), "{out}");
    assert!(out.contains("run `ridondato cloud-switchover` again to resume"), "{out}");
    assert_eq!(c.holder().as_deref(), Some(c.setup.instances[0].as_str()), "nothing moved");
    assert_eq!((c.lab.role("a"), c.lab.role("b")), ("off".into(), "slave".into()), "never both Master");

    // Healed, but throttled twice: the SDK's retries carry the move through.
    c.proxy.heal();
    let before = c.proxy.seen("AssociateAddress");
    c.proxy.fail("AssociateAddress", ridondato_adapters::cloud::fault_proxy::Fault::Throttle, Some(2));
    let (ok, out) = c.switchover("a", &[]);
    assert!(ok, "resumed: {out}");
    assert_eq!(c.proxy.seen("AssociateAddress"), before + 3, "two throttled calls, then the one that went through");
    assert!(out.contains("resuming the switch-over from node 1 to node 2 after step 1/4") && !out.contains("step 1/4:"), "{out}");
    assert!(out.contains("step 2/4") && out.contains("step 4/4") && out.contains("switch-over done"), "{out}");
    assert_eq!(c.holder().as_deref(), Some(c.setup.instances[1].as_str()), "the public IP is on b's instance (DescribeAddresses)");
    assert_eq!((c.lab.role("a"), c.lab.role("b")), ("slave".into(), "master".into()));
    assert!(c.lab.work.join("b/services-running").exists() && !c.lab.work.join("a/services-running").exists(), "services follow");
    assert!(!c.lab.work.join("a/cloud-switchover.json").exists(), "the journal is gone once done");
    let (ok, out) = c.switchover("a", &["--abort"]);
    assert!(!ok && out.contains("no switch-over to abort"), "{out}");

    // The same four steps started from the HTTP API (on b, now Master): the plan, then the run.
    let api = |args: &[&str]| {
        let url = format!("http://{}:8008/cloud-switchover", c.lab.var("LAB_B"));
        let auth = format!("Authorization: Bearer {}", support::cloud::API_TOKEN);
        let mut v = vec!["curl", "-s", "--max-time", "60", "-w", "\n%{http_code}", "-X", "POST", "-H", &auth];
        v.extend_from_slice(args);
        v.push(&url);
        c.lab.exec("c", &v).1
    };
    let plan = api(&["-d", "{\"dry_run\": true}"]);
    assert!(plan.contains("1/4 node 2: services off") && plan.trim_end().ends_with("200"), "{plan}");
    let started = api(&[]);
    assert!(started.trim_end().ends_with("202"), "{started}");
    assert!(c.lab.wait_role("a", "master", Duration::from_secs(20)) && c.lab.wait_role("b", "slave", Duration::from_secs(20)), "switched back from the API");
    assert_eq!(c.holder().as_deref(), Some(c.setup.instances[0].as_str()));
    wait_for("the API's run to finish and remove its journal", Duration::from_secs(10), || !c.lab.work.join("b/cloud-switchover.json").exists());

    // Manual mode (the seed's default): the Master's death is an alarm, not a takeover.
    c.lab.kill9("a");
    wait_for("b to say the Master is silent", Duration::from_secs(5), || c.lab.alarms("b").contains("MasterUnreachable"));
    assert_eq!(c.lab.role("b"), "slave", "no automatic failover unless auto_failover = true");
    assert_eq!(c.holder().as_deref(), Some(c.setup.instances[0].as_str()));
}

/// With `auto_failover = true` the cloud API is the arbiter: heartbeats cut while a's instance
/// runs → b does not take the public IP; a's instance stopped → b moves it and becomes Master;
/// a returning finds the address moved and stays Slave (S12).
#[test]
fn automatic_failover_only_when_the_api_says_the_peer_instance_is_down() {
    let Some(mut c) = CloudLab::up("ca", true) else { return };
    a_master_b_slave(&mut c);
    let port = "7400";
    c.lab.lab(&["drop-udp", "b", port, "in"]);
    wait_for("b to find a's instance running", Duration::from_secs(10), || c.lab.alarms("b").contains("PeerInstanceRunning"));
    assert_eq!(c.lab.role("b"), "slave", "the API says a runs: no takeover");
    assert_eq!(c.holder().as_deref(), Some(c.setup.instances[0].as_str()));

    c.lab.kill9("a");
    c.set_running(0, false);
    assert!(c.lab.wait_role("b", "master", Duration::from_secs(15)), "b takes over once a's instance is stopped: {}", c.lab.alarms("b"));
    assert_eq!(c.holder().as_deref(), Some(c.setup.instances[1].as_str()), "b moved the public IP to itself");

    c.lab.lab(&["heal", "b"]);
    c.set_running(0, true);
    c.lab.start("a");
    assert!(c.lab.wait_role("a", "slave", Duration::from_secs(15)), "the returning Master stays Slave: {:?}", c.lab.status("a"));
    assert_eq!(c.lab.role("b"), "master");
    assert_eq!(c.holder().as_deref(), Some(c.setup.instances[1].as_str()));
}
