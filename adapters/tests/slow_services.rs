//! The driver gives the application's services their own time: a unit that takes longer to
//! start than an ordinary operation's deadline (3 s) still starts on a lone Master when the
//! configured deadline allows it, and times out (and is retried) when it does not.

use async_trait::async_trait;
use ridondato_adapters::codec::JsonCodec;
use ridondato_adapters::udp::UdpTransport;
use ridondato_adapters::{AdapterResult, Backends, Driver, DriverConfig, Services};
use ridondato_core::{Components, Config, Node, NodeId};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Starts in 4 s, counting how many starts finished.
#[derive(Debug, Default)]
struct SlowUnit {
    started: AtomicU32,
}

#[async_trait]
impl Services for SlowUnit {
    async fn start(&self) -> AdapterResult<()> {
        tokio::time::sleep(Duration::from_secs(4)).await;
        self.started.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn stop(&self) -> AdapterResult<()> {
        Ok(())
    }
}

/// A lone node with services only; true once its status says the services run.
async fn services_run_within(app_deadline: Duration, within: Duration) -> (bool, u32) {
    let mut cfg = Config::lan(NodeId(1), NodeId(2));
    cfg.components = Components { vip: false, db: false, mongo: false, fs: false, services: true };
    cfg.arp_probe = false;
    let unit = Arc::new(SlowUnit::default());
    let mut backends = Backends::unconfigured();
    backends.services = unit.clone();
    let dir = std::env::temp_dir().join(format!("ridondato-slow-services-{}-{}", std::process::id(), app_deadline.as_secs()));
    let _ = std::fs::remove_dir_all(&dir);
    backends.store = Arc::new(ridondato_adapters::store_file::FileStateStore::new(&dir).expect("state dir"));
    // Nobody listens on the peer's port: the node stays alone and becomes Master.
    let transport = UdpTransport::bind("127.0.0.1:0".parse().expect("addr"), "127.0.0.1:9".parse().expect("addr")).await.expect("udp");
    let dcfg = DriverConfig { app_deadline, vip_watch: false, db_reports: false, ..DriverConfig::default() };
    let (driver, handle) = Driver::new(Node::new(cfg), backends, Arc::new(transport), Arc::new(JsonCodec), dcfg);
    let task = tokio::spawn(driver.run());
    let t = Instant::now();
    let mut ok = false;
    while t.elapsed() < within {
        if handle.status.borrow().as_ref().is_some_and(|s| s.services_running) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    let _ = std::fs::remove_dir_all(&dir);
    (ok, unit.started.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_slower_than_an_ordinary_operation_starts_within_its_own_deadline() {
    let (ok, _) = services_run_within(Duration::from_secs(6), Duration::from_secs(10)).await;
    assert!(ok, "the services never ran with a 6 s deadline for a 4 s start");
    let (ok, finished) = services_run_within(Duration::from_secs(0), Duration::from_secs(6)).await;
    assert!(!ok && finished == 0, "with only the ordinary 3 s deadline every start is cut: ran {ok}, finished {finished}");
}
