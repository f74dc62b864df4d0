//! Witness hosts reached by TCP connect: a host that accepts (or actively refuses) a connection
//! is up and on our side of any split; one that times out is not.

use crate::traits::{AdapterResult, Arbiter};
use async_trait::async_trait;
use ridondato_core::{NodeId, Verdict};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct TcpWitness {
    pub hosts: Vec<SocketAddr>,
    pub timeout: Duration,
}

impl TcpWitness {
    /// How many hosts answer, all asked at once: the check takes one timeout, not one per host.
    pub async fn reachable(&self) -> u32 {
        let mut checks = tokio::task::JoinSet::new();
        for &h in &self.hosts {
            let timeout = self.timeout;
            checks.spawn(async move {
                match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(h)).await {
                    Ok(Ok(_)) => true,
                    // Connection refused: the host answered, it is reachable.
                    Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionRefused,
                    Err(_) => false,
                }
            });
        }
        checks.join_all().await.into_iter().map(u32::from).sum()
    }
}

/// A witness that answers while the peer does not: this node is not the one cut off.
#[async_trait]
impl Arbiter for TcpWitness {
    async fn may_take(&self, _: NodeId, _: u64) -> AdapterResult<Verdict> {
        Ok(Verdict::Witnesses { reachable: self.reachable().await })
    }
    async fn may_keep(&self, _: NodeId, _: u64) -> AdapterResult<Verdict> {
        Ok(Verdict::Witnesses { reachable: self.reachable().await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listening_and_a_refusing_host_count_a_silent_one_does_not() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let up = l.local_addr().expect("addr");
        let refused = {
            let t = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            t.local_addr().expect("addr")
        };
        let w = TcpWitness { hosts: vec![up, refused], timeout: Duration::from_millis(200) };
        assert_eq!(w.reachable().await, 2);
    }
}
