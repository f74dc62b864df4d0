//! The cloud lab: the LAN lab's two nodes in cloud mode (no VIP) against moto's EC2 server,
//! which listens in the client's namespace behind the fault-injecting proxy. The test reaches
//! both from a thread moved into that namespace (`setns`), running its own runtime.

use super::{Lab, BIN};
use ridondato_adapters::cloud::fault_proxy::FaultProxy;
use ridondato_adapters::cloud::testkit::{self, Moto, Setup};
use std::net::IpAddr;

/// A job for the namespace's runtime.
type Job = Box<dyn FnOnce(&tokio::runtime::Runtime) + Send>;

/// A runtime on a thread inside a network namespace: what it connects to and listens on is
/// that namespace's.
pub struct NsRuntime {
    tx: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsRuntime {
    pub fn new(ns: &str) -> NsRuntime {
        let path = format!("/var/run/netns/{ns}");
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let thread = std::thread::spawn(move || {
            let f = std::fs::File::open(&path).expect("the namespace");
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            // Between jobs the runtime still drives what they spawned (the proxy).
            loop {
                let job = rt.block_on(async {
                    loop {
                        match rx.try_recv() {
                            Ok(job) => return Some(job),
                            Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
                            Err(std::sync::mpsc::TryRecvError::Empty) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                        }
                    }
                });
                match job {
                    Some(job) => job(&rt),
                    None => return,
                }
            }
        });
        NsRuntime { tx: Some(tx), thread: Some(thread) }
    }

    /// Runs `f` to completion on the namespace's runtime.
    pub fn run<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(&self, f: impl FnOnce() -> F + Send + 'static) -> T {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let job = Box::new(move |rt: &tokio::runtime::Runtime| {
            let _ = done_tx.send(rt.block_on(f()));
        });
        self.tx.as_ref().expect("running").send(job).expect("the namespace thread");
        done_rx.recv().expect("the job's result")
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The API token of the cloud lab's nodes.
pub const API_TOKEN: &str = "cloud-lab-api-token-0123456789";

/// Moto and the proxy in the client namespace, the two instances and the Elastic IP made, and
/// both nodes' configurations turned to cloud mode (no `[[shared_ip]]`).
pub struct CloudLab {
    pub lab: Lab,
    pub setup: Setup,
    pub proxy: FaultProxy,
    pub ns: NsRuntime,
    pub moto_url: String,
    _moto: Moto,
}

impl CloudLab {
    pub fn up(tag: &str, auto_failover: bool) -> Option<CloudLab> {
        if !super::lab_available() || !testkit::available() {
            return None;
        }
        let mut lab = Lab::up(tag);
        let client: IpAddr = lab.var("LAB_CLIENT").parse().expect("client address");
        let moto = Moto::start(client, Some(&lab.ns("c"))).expect("moto in the client namespace");
        let ns = NsRuntime::new(&lab.ns("c"));
        let moto_url = moto.url();
        let url = moto_url.clone();
        let setup = ns.run(move || async move { testkit::setup(&url).await }).expect("set-up");
        let upstream = moto.addr;
        let proxy = ns.run(move || async move { FaultProxy::start((client, 0).into(), upstream).await }).expect("proxy");
        for (k, v) in testkit::fake_credentials() {
            lab.daemon_env.push((k.into(), v.into()));
        }
        for (n, id) in [("a", 1), ("b", 2)] {
            let path = lab.work.join(format!("{n}.toml"));
            let cfg = std::fs::read_to_string(&path).expect("config");
            // The LAN lab's VIP block goes; the node's section says cloud.
            let start = cfg.find("[[shared_ip]]").expect("shared_ip block");
            let end = cfg.find("[services]").expect("services block");
            let mut cfg = format!("{}{}", &cfg[..start], &cfg[end..]);
            cfg = cfg.replacen(&format!("id = {id}\n"), &format!("id = {id}\nmode = \"cloud\"\n"), 1);
            cfg.push_str(&format!(
                "\n[cloud]\ndomain = \"{ip}\"\npublic_ip = \"{ip}\"\nregion = \"{region}\"\nendpoint = \"{url}\"\nauto_failover = {auto_failover}\napi_deadline_ms = 5000\n[cloud.instance_ids]\n1 = \"{a}\"\n2 = \"{b}\"\n",
                ip = setup.public_ip,
                region = testkit::REGION,
                url = proxy.url(),
                a = setup.instances[0],
                b = setup.instances[1],
            ));
            std::fs::write(&path, cfg).expect("config");
        }
        super::with_api(&lab, API_TOKEN);
        Some(CloudLab { lab, setup, proxy, ns, moto_url, _moto: moto })
    }

    /// The instance the Elastic IP is associated with, as the API says.
    pub fn holder(&self) -> Option<String> {
        let (url, alloc) = (self.moto_url.clone(), self.setup.allocation_id.clone());
        self.ns.run(move || async move {
            let out = testkit::client(&url).await.describe_addresses().allocation_ids(alloc).send().await.ok()?;
            out.addresses().first().and_then(|a| a.instance_id()).map(str::to_string)
        })
    }

    pub fn set_running(&self, node: usize, running: bool) {
        let (url, id) = (self.moto_url.clone(), self.setup.instances[node].clone());
        self.ns.run(move || async move { testkit::set_running(&url, &id, running).await }).expect("instance state");
    }

    /// `ridondato cloud-switchover ARGS` on NODE, with its journal in NODE's state dir.
    pub fn switchover(&self, node: &str, args: &[&str]) -> (bool, String) {
        let cfg = self.lab.work.join(format!("{node}.toml"));
        let mut v = vec![BIN, "cloud-switchover", "--config", cfg.to_str().unwrap_or_default()];
        v.extend_from_slice(args);
        super::sh(&v)
    }
}
