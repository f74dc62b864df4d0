//! The cloud adapter on the real SDK against moto's EC2 server (loopback), with a proxy that
//! fails chosen calls the way AWS does. Needs moto (scripts/deps-cloud.sh); under CI=true its
//! absence is a failure.

use ridondato_adapters::cloud::fault_proxy::{Fault, FaultProxy};
use ridondato_adapters::cloud::testkit::{self, Moto, Setup};
use ridondato_adapters::cloud::{CloudConfig, Ec2CloudIp};
use ridondato_adapters::CloudIp;
use ridondato_core::NodeId;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);

fn credentials() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for (k, v) in testkit::fake_credentials() {
            std::env::set_var(k, v);
        }
    });
}

async fn world() -> Option<(Moto, Setup)> {
    if !testkit::available() {
        return None;
    }
    credentials();
    let moto = Moto::start(IpAddr::V4(Ipv4Addr::LOCALHOST), None).expect("moto");
    let setup = testkit::setup(&moto.url()).await.expect("set-up");
    Some((moto, setup))
}

fn config(url: &str, s: &Setup) -> CloudConfig {
    let mut c = CloudConfig::new(testkit::REGION, [(A, s.instances[0].clone()), (B, s.instances[1].clone())].into_iter().collect());
    c.endpoint = Some(url.into());
    c.public_ip = s.public_ip.parse().ok();
    c
}

/// Found from the public IP alone; who holds it read back after each move; a stopped instance
/// is not running (the arbiter's answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_association_moves_and_is_read_back_and_a_stopped_instance_is_not_running() {
    let Some((moto, s)) = world().await else { return };
    let cloud = Ec2CloudIp::connect(config(&moto.url(), &s)).await.expect("connect");
    assert_eq!(cloud.holder().await.expect("holder"), Some(A));
    cloud.associate(B).await.expect("move to b");
    assert_eq!(cloud.holder().await.expect("holder"), Some(B));
    let raw = testkit::client(&moto.url()).await.describe_addresses().allocation_ids(&s.allocation_id).send().await.expect("describe");
    assert_eq!(raw.addresses()[0].instance_id(), Some(s.instances[1].as_str()), "what the API itself says");
    cloud.associate(A).await.expect("move back");
    assert_eq!(cloud.holder().await.expect("holder"), Some(A));
    assert!(cloud.instance_running(B).await.expect("status"));
    testkit::set_running(&moto.url(), &s.instances[1], false).await.expect("stop b");
    assert!(!cloud.instance_running(B).await.expect("status"), "a stopped instance is not running");
    assert!(cloud.instance_running(A).await.expect("status"));
    let r = cloud.report().expect("a report");
    assert_eq!((r.holder_instance.as_deref(), r.public_ip.as_deref()), (Some(s.instances[0].as_str()), Some(s.public_ip.as_str())), "{r:?}");
}

/// The domain operators use is checked against the public IP: a name leading elsewhere is a
/// warning in the status; one leading to the public IP is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_not_leading_to_the_public_ip_is_a_warning() {
    let Some((moto, s)) = world().await else { return };
    let cloud = Ec2CloudIp::connect(config(&moto.url(), &s)).await.expect("connect");
    let w = cloud.check_domain("localhost").await.expect("localhost is not the public IP");
    assert!(w.starts_with("localhost resolves to ") && w.ends_with(&format!("not to the public IP {}", s.public_ip)), "{w}");
    assert_eq!(cloud.report().expect("report").dns_warning.as_deref(), Some(w.as_str()));
    // (Not tried: a name that does not resolve, which would query the machine's DNS server.)
    assert_eq!(cloud.check_domain(&s.public_ip).await, None, "a name that leads to the public IP");
    assert_eq!(cloud.report().expect("report").dns_warning, None);
}

/// Throttling and 503s are retried by the SDK with back-off and the move still happens; a
/// refusal is reported with the API's own code and message, at once; an API that never answers
/// well ends within the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_a_refusal_is_named_and_a_dead_api_ends_within_the_deadline() {
    let Some((moto, s)) = world().await else { return };
    let proxy = FaultProxy::start("127.0.0.1:0".parse().expect("addr"), moto.addr).await.expect("proxy");
    let mut cfg = config(&proxy.url(), &s);
    cfg.deadline = Duration::from_secs(3);
    let cloud = Ec2CloudIp::connect(cfg).await.expect("connect");

    proxy.fail("AssociateAddress", Fault::Throttle, Some(2));
    proxy.fail("DescribeAddresses", Fault::Unavailable, Some(2));
    cloud.associate(B).await.expect("retried until it went through");
    assert!(proxy.seen("AssociateAddress") >= 3, "two throttled calls, then the one that went through");
    assert_eq!(cloud.holder().await.expect("holder"), Some(B));

    proxy.fail("AssociateAddress", Fault::Deny("You are not authorized to perform this operation.".into()), None);
    let before = proxy.seen("AssociateAddress");
    let err = cloud.associate(A).await.expect_err("refused").0;
    assert!(err.contains("UnauthorizedOperation") && err.contains("not authorized"), "{err}");
    assert_eq!(proxy.seen("AssociateAddress"), before + 1, "a refusal is not retried");
    assert_eq!(cloud.holder().await.expect("holder"), Some(B), "nothing moved");

    proxy.fail("DescribeAddresses", Fault::Unavailable, None);
    let t = Instant::now();
    let err = cloud.holder().await.expect_err("never answers well").0;
    assert!(t.elapsed() < Duration::from_secs(5), "ended after {:?}: {err}", t.elapsed());
    assert!(err.contains("DescribeAddresses"), "{err}");
    proxy.heal();
    assert_eq!(cloud.holder().await.expect("healed"), Some(B));
}

/// Wrong settings are named at connect time, not at the first failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_address_or_allocation_is_named_at_start() {
    let Some((moto, s)) = world().await else { return };
    let mut c = config(&moto.url(), &s);
    c.public_ip = Some(IpAddr::V4(Ipv4Addr::new(198, 18, 9, 9)));
    let err = Ec2CloudIp::connect(c).await.expect_err("not an EIP").0;
    assert!(err.starts_with("cloud.public_ip 198.18.9.9: ") && err.contains("InvalidAddress.NotFound"), "{err}");
    let mut c = config(&moto.url(), &s);
    c.allocation_id = Some("eipalloc-00000000000000000".into());
    let err = Ec2CloudIp::connect(c).await.expect_err("no such allocation").0;
    assert!(err.starts_with("cloud.allocation_id eipalloc-00000000000000000: ") && err.contains("DescribeAddresses"), "{err}");
    let mut c = config(&moto.url(), &s);
    c.instances.remove(&B);
    let cloud = Ec2CloudIp::connect(c).await.expect("connects");
    let err = cloud.associate(B).await.expect_err("no instance").0;
    assert!(err.contains("cloud.instance_ids: no instance id for node n2"), "{err}");
}
