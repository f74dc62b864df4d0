//! For tests and benchmarks: moto's EC2 server on a local address, and a two-instance set-up
//! made through the real SDK (a VPC, a subnet, two instances, an Elastic IP on node 1's).
//! moto is installed by `scripts/deps-cloud.sh`; under CI its absence is a failure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const REGION: &str = "eu-south-1";

/// Where `scripts/deps-cloud.sh` puts moto's server (`RIDONDATO_MOTO_SERVER` overrides).
pub fn moto_server() -> PathBuf {
    std::env::var_os("RIDONDATO_MOTO_SERVER").map_or_else(|| PathBuf::from("/opt/ridondato-moto/bin/moto_server"), PathBuf::from)
}

/// Whether moto can be run here; outside CI a missing one is a skip, under CI a failure.
pub fn available() -> bool {
    let ok = moto_server().exists();
    if !ok {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "moto's server is missing (scripts/deps-cloud.sh installs it)");
        eprintln!("SKIP: moto's server is not installed (scripts/deps-cloud.sh)");
    }
    ok
}

/// Credentials moto accepts, for the environment of a daemon or test, where the SDK's standard
/// chain finds them first (so nothing looks for an instance role).
pub fn fake_credentials() -> [(&'static str, &'static str); 2] {
    [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")]
}

/// A running moto server, ended (by its PID) when dropped.
#[derive(Debug)]
pub struct Moto {
    child: std::process::Child,
    pub addr: SocketAddr,
}

impl Moto {
    /// Starts moto on `ip` (a free port) and waits until it answers. `netns`: inside that
    /// network namespace (the lab).
    pub fn start(ip: std::net::IpAddr, netns: Option<&str>) -> std::io::Result<Moto> {
        let port = free_port(ip, netns);
        let addr = SocketAddr::new(ip, port);
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = std::process::Command::new("ip");
                c.args(["netns", "exec", ns]).arg(moto_server());
                c
            }
            None => std::process::Command::new(moto_server()),
        };
        let child =
            cmd.args(["-H", &ip.to_string(), "-p", &port.to_string()]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn()?;
        let moto = Moto { child, addr };
        let t = Instant::now();
        while !moto.answers(netns) {
            if t.elapsed() > Duration::from_secs(30) {
                return Err(std::io::Error::other(format!("moto did not answer on {addr} within 30 s")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(moto)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn answers(&self, netns: Option<&str>) -> bool {
        match netns {
            None => std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok(),
            Some(ns) => std::process::Command::new("ip")
                .args(["netns", "exec", ns, "bash", "-c", &format!("exec 3<>/dev/tcp/{}/{}", self.addr.ip(), self.addr.port())])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on at `ip` (in `netns` if given: asked of the kernel there).
fn free_port(ip: std::net::IpAddr, netns: Option<&str>) -> u16 {
    if netns.is_none() {
        if let Ok(l) = std::net::TcpListener::bind((ip, 0)).and_then(|l| l.local_addr()) {
            return l.port();
        }
    }
    // In a namespace: a port from a range no test uses otherwise, varied by process id.
    20_000 + (std::process::id() % 20_000) as u16
}

/// The set-up a pair needs, made through the real SDK.
#[derive(Clone, Debug)]
pub struct Setup {
    pub instances: [String; 2],
    pub allocation_id: String,
    pub public_ip: String,
}

/// A client for the test's own calls (set-up, stopping instances), with moto's credentials.
pub async fn client(url: &str) -> aws_sdk_ec2::Client {
    let creds = aws_sdk_ec2::config::Credentials::new("testing", "testing", None, None, "ridondato-tests");
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(url)
        .credentials_provider(creds)
        .load()
        .await;
    aws_sdk_ec2::Client::new(&conf)
}

/// A VPC, a subnet, two running instances and an Elastic IP associated with the first.
pub async fn setup(url: &str) -> Result<Setup, String> {
    let c = client(url).await;
    let e = |what: &str, err: String| format!("moto set-up, {what}: {err}");
    let vpc = c.create_vpc().cidr_block("10.10.0.0/16").send().await.map_err(|x| e("CreateVpc", x.to_string()))?;
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).unwrap_or_default().to_string();
    let subnet = c.create_subnet().vpc_id(&vpc_id).cidr_block("10.10.1.0/24").send().await.map_err(|x| e("CreateSubnet", x.to_string()))?;
    let subnet_id = subnet.subnet().and_then(|s| s.subnet_id()).unwrap_or_default().to_string();
    let run = c
        .run_instances()
        .image_id("ami-12c6146b")
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .subnet_id(&subnet_id)
        .min_count(2)
        .max_count(2)
        .send()
        .await
        .map_err(|x| e("RunInstances", x.to_string()))?;
    let ids: Vec<String> = run.instances().iter().filter_map(|i| i.instance_id().map(str::to_string)).collect();
    let [a, b] = <[String; 2]>::try_from(ids).map_err(|ids| e("RunInstances", format!("{} instances", ids.len())))?;
    let eip = c.allocate_address().domain(aws_sdk_ec2::types::DomainType::Vpc).send().await.map_err(|x| e("AllocateAddress", x.to_string()))?;
    let allocation_id = eip.allocation_id().unwrap_or_default().to_string();
    let public_ip = eip.public_ip().unwrap_or_default().to_string();
    c.associate_address().allocation_id(&allocation_id).instance_id(&a).send().await.map_err(|x| e("AssociateAddress", x.to_string()))?;
    Ok(Setup { instances: [a, b], allocation_id, public_ip })
}

/// Stops (or starts again) an instance, as an outage or its repair would.
pub async fn set_running(url: &str, instance: &str, running: bool) -> Result<(), String> {
    let c = client(url).await;
    let r = if running {
        c.start_instances().instance_ids(instance).send().await.map(|_| ()).map_err(|x| x.to_string())
    } else {
        c.stop_instances().instance_ids(instance).send().await.map(|_| ()).map_err(|x| x.to_string())
    };
    r.map_err(|x| format!("moto: {x}"))
}
