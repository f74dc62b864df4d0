//! Witness hosts reached by TCP connect: a host that accepts (or actively refuses) a connection
//! is up and on our side of any split; one that times out is not.

use crate::traits::{AdapterResult, Witness};
use async_trait::async_trait;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct TcpWitness {
    pub hosts: Vec<SocketAddr>,
    pub timeout: Duration,
}

#[async_trait]
impl Witness for TcpWitness {
    async fn reachable(&self) -> AdapterResult<u32> {
        let checks = self.hosts.iter().map(|h| async move {
            match tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(h)).await {
                Ok(Ok(_)) => true,
                // Connection refused: the host answered, it is reachable.
                Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionRefused,
                Err(_) => false,
            }
        });
        let mut n = 0;
        for c in checks {
            n += u32::from(c.await);
        }
        Ok(n)
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
        assert_eq!(w.reachable().await.expect("check"), 2);
    }
}
