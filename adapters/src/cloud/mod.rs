//! Cloud mode on AWS (feature `cloud`, S13, S14, B5): the Elastic IP is the address clients
//! use, moved with `AssociateAddress`; `DescribeAddresses` is the truth of who holds it (a move
//! is proved by reading it back, not by the call's success); `DescribeInstanceStatus` tells
//! whether the peer's instance runs (the cloud arbiter). All on the official SDK: credentials
//! from its standard chain (environment, profile, instance role over IMDSv2), throttling and
//! 5xx retried by its standard retry mode with back-off, each operation under a deadline.

pub mod fault_proxy;
pub mod testkit;

use crate::traits::{AdapterError, AdapterResult, CloudIp};
use async_trait::async_trait;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{InstanceStateName, SummaryStatus};
use ridondato_core::{CloudReport, NodeId};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct CloudConfig {
    pub region: String,
    /// Another API endpoint than the region's (tests against moto, a VPC endpoint).
    pub endpoint: Option<String>,
    /// The Elastic IP's allocation id; found from `public_ip` when not given.
    pub allocation_id: Option<String>,
    pub public_ip: Option<IpAddr>,
    /// Each node's instance id.
    pub instances: BTreeMap<NodeId, String>,
    /// One API operation, retries included, ends within this.
    pub deadline: Duration,
    /// After a move, how long the association may take to read back as moved.
    pub settle: Duration,
}

impl CloudConfig {
    pub fn new(region: &str, instances: BTreeMap<NodeId, String>) -> CloudConfig {
        CloudConfig {
            region: region.into(),
            endpoint: None,
            allocation_id: None,
            public_ip: None,
            instances,
            deadline: Duration::from_secs(10),
            settle: Duration::from_secs(10),
        }
    }
}

/// Who holds the Elastic IP, as `DescribeAddresses` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Association {
    pub public_ip: Option<String>,
    /// The instance it is associated with, if any.
    pub instance: Option<String>,
}

#[derive(Debug)]
pub struct Ec2CloudIp {
    client: aws_sdk_ec2::Client,
    cfg: CloudConfig,
    /// Found at the first call that needs it (the API may be down when the daemon starts).
    allocation: tokio::sync::OnceCell<String>,
    report: std::sync::Mutex<CloudReport>,
}

/// An SDK error as the API said it: its code and message, or what failed before an answer.
fn api_error<E, R>(op: &str, e: aws_sdk_ec2::error::SdkError<E, R>) -> AdapterError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match (e.code(), e.message()) {
        (Some(code), Some(msg)) => AdapterError::new(format!("cloud API {op}: {code}: {msg}")),
        (Some(code), None) => AdapterError::new(format!("cloud API {op}: {code}")),
        _ => AdapterError::new(format!("cloud API {op}: {}", aws_sdk_ec2::error::DisplayErrorContext(&e))),
    }
}

impl Ec2CloudIp {
    /// Sets the client up (region, endpoint, retries, deadlines) without calling the API: a
    /// daemon starts even while the API is out of reach, and says so in its status.
    pub async fn new(cfg: CloudConfig) -> Ec2CloudIp {
        use aws_config::retry::RetryConfig;
        use aws_config::timeout::TimeoutConfig;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(cfg.region.clone()))
            // Standard mode retries throttling (RequestLimitExceeded) and 5xx with jittered
            // exponential back-off; the operation timeout bounds the whole, retries included.
            .retry_config(
                RetryConfig::standard().with_max_attempts(8).with_initial_backoff(Duration::from_millis(100)).with_max_backoff(Duration::from_secs(2)),
            )
            .timeout_config(TimeoutConfig::builder().operation_timeout(cfg.deadline).operation_attempt_timeout(cfg.deadline / 2).build());
        if let Some(url) = &cfg.endpoint {
            loader = loader.endpoint_url(url);
        }
        let client = aws_sdk_ec2::Client::new(&loader.load().await);
        let report = CloudReport { public_ip: cfg.public_ip.map(|ip| ip.to_string()), ..CloudReport::default() };
        Ec2CloudIp { client, cfg, allocation: tokio::sync::OnceCell::new(), report: std::sync::Mutex::new(report) }
    }

    /// `new`, then a first look at the association: wrong settings are named at once.
    pub async fn connect(cfg: CloudConfig) -> AdapterResult<Ec2CloudIp> {
        let me = Ec2CloudIp::new(cfg).await;
        me.association().await?;
        Ok(me)
    }

    /// The allocation id: configured, or found once from the public IP.
    async fn allocation(&self) -> AdapterResult<&str> {
        let found = self
            .allocation
            .get_or_try_init(|| async {
                match (&self.cfg.allocation_id, self.cfg.public_ip) {
                    (Some(a), _) => Ok(a.clone()),
                    (None, Some(ip)) => {
                        let field = |e: AdapterError| AdapterError::new(format!("cloud.public_ip {ip}: {}", e.0));
                        let out =
                            self.client.describe_addresses().public_ips(ip.to_string()).send().await.map_err(|e| field(api_error("DescribeAddresses", e)))?;
                        let a = out.addresses().first().and_then(|a| a.allocation_id());
                        Ok(a.ok_or_else(|| AdapterError::new(format!("cloud.public_ip {ip}: not an Elastic IP of this account in {}", self.cfg.region)))?
                            .to_string())
                    }
                    (None, None) => Err(AdapterError::new("cloud: give the Elastic IP or its allocation id")),
                }
            })
            .await;
        Ok(found.map_err(|e| self.failed(e))?.as_str())
    }

    /// Notes a failure for the status, and passes it on.
    fn failed(&self, e: AdapterError) -> AdapterError {
        self.lock().last_error = Some(e.0.clone());
        e
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CloudReport> {
        self.report.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves `domain` and says whether it leads to the public IP (S13: operators reach the
    /// Master through that name). Kept for the status; returns the warning, if any.
    pub async fn check_domain(&self, domain: &str) -> Option<String> {
        let resolved: Vec<String> = match tokio::net::lookup_host((domain, 0)).await {
            Ok(addrs) => {
                let mut v: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
                v.dedup();
                v
            }
            Err(_) => Vec::new(),
        };
        let public = self.lock().public_ip.clone();
        let warning = match (&public, resolved.is_empty()) {
            (_, true) => Some(format!("{domain} does not resolve")),
            (Some(ip), false) if !resolved.contains(ip) => Some(format!("{domain} resolves to {}, not to the public IP {ip}", resolved.join(", "))),
            _ => None,
        };
        let mut r = self.lock();
        r.domain = domain.to_string();
        r.resolved = resolved;
        if r.dns_warning != warning {
            match &warning {
                Some(w) => tracing::warn!("cloud: {w}: operators using that name do not reach the Master"),
                None => tracing::info!("cloud: {domain} resolves to the public IP"),
            }
        }
        r.dns_warning = warning.clone();
        warning
    }

    /// The Elastic IP's current association.
    pub async fn association(&self) -> AdapterResult<Association> {
        let allocation = self.allocation().await?;
        let field = |e: AdapterError| self.failed(AdapterError::new(format!("cloud.allocation_id {allocation}: {}", e.0)));
        let out = self.client.describe_addresses().allocation_ids(allocation).send().await.map_err(|e| field(api_error("DescribeAddresses", e)))?;
        let a = out.addresses().first().ok_or_else(|| field(AdapterError::new("no such Elastic IP")))?;
        let now = Association { public_ip: a.public_ip().map(str::to_string), instance: a.instance_id().map(str::to_string) };
        let mut r = self.lock();
        r.public_ip = now.public_ip.clone().or(r.public_ip.take());
        r.holder_instance = now.instance.clone();
        r.last_error = None;
        Ok(now)
    }

    fn instance(&self, node: NodeId) -> AdapterResult<&str> {
        self.cfg.instances.get(&node).map(String::as_str).ok_or_else(|| AdapterError::new(format!("cloud.instance_ids: no instance id for node {node}")))
    }

    fn node_of(&self, instance: &str) -> Option<NodeId> {
        self.cfg.instances.iter().find(|(_, i)| *i == instance).map(|(n, _)| *n)
    }
}

#[async_trait]
impl CloudIp for Ec2CloudIp {
    async fn associate(&self, to: NodeId) -> AdapterResult<()> {
        let instance = self.instance(to)?.to_string();
        let allocation = self.allocation().await?;
        // Reassociation allowed, explicitly: the address is, by design, taken from the other node.
        self.client
            .associate_address()
            .allocation_id(allocation)
            .instance_id(&instance)
            .allow_reassociation(true)
            .send()
            .await
            .map_err(|e| self.failed(api_error("AssociateAddress", e)))?;
        // The call's success is not the proof: read the association back until it says so.
        let until = tokio::time::Instant::now() + self.cfg.settle;
        loop {
            let now = self.association().await?;
            if now.instance.as_deref() == Some(instance.as_str()) {
                tracing::info!("cloud: {} is now associated with {instance} (node {to})", now.public_ip.unwrap_or_default());
                return Ok(());
            }
            if tokio::time::Instant::now() >= until {
                return Err(AdapterError::new(format!(
                    "cloud: AssociateAddress succeeded but the address still reads as held by {} after {} s",
                    now.instance.as_deref().unwrap_or("no instance"),
                    self.cfg.settle.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn holder(&self) -> AdapterResult<Option<NodeId>> {
        let a = self.association().await?;
        match a.instance.as_deref() {
            None => Ok(None),
            Some(i) => match self.node_of(i) {
                Some(n) => Ok(Some(n)),
                None => {
                    // Neither node holds it: for the pair, nobody does.
                    tracing::warn!("cloud: the public IP is associated with {i}, which is neither node's instance");
                    Ok(None)
                }
            },
        }
    }

    /// Running means: state `running` and neither status check `impaired`. A stopped, stopping,
    /// terminated or impaired instance is not serving, so taking the address from it is safe.
    async fn instance_running(&self, node: NodeId) -> AdapterResult<bool> {
        let instance = self.instance(node)?;
        let out = self
            .client
            .describe_instance_status()
            .instance_ids(instance)
            .include_all_instances(true)
            .send()
            .await
            .map_err(|e| self.failed(api_error("DescribeInstanceStatus", e)))?;
        let Some(s) = out.instance_statuses().first() else {
            // Terminated long ago instances drop out of the answer.
            return Ok(false);
        };
        let state = s.instance_state().and_then(|st| st.name()).cloned();
        let impaired = |x: Option<&aws_sdk_ec2::types::InstanceStatusSummary>| x.and_then(|x| x.status()) == Some(&SummaryStatus::Impaired);
        Ok(state == Some(InstanceStateName::Running) && !impaired(s.instance_status()) && !impaired(s.system_status()))
    }

    fn report(&self) -> Option<CloudReport> {
        Some(self.lock().clone())
    }
}
