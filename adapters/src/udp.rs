//! The peer transport on the management network: UDP, one socket, datagrams from the peer only.

use crate::traits::{AdapterError, AdapterResult, Transport};
use async_trait::async_trait;
use std::net::SocketAddr;

#[derive(Debug)]
pub struct UdpTransport {
    sock: tokio::net::UdpSocket,
    peer: SocketAddr,
}

impl UdpTransport {
    /// Binds `local` (the management IP and port) and talks to `peer`.
    pub async fn bind(local: SocketAddr, peer: SocketAddr) -> AdapterResult<UdpTransport> {
        let sock = tokio::net::UdpSocket::bind(local).await.map_err(|e| AdapterError::new(format!("binding {local}: {e}")))?;
        Ok(UdpTransport { sock, peer })
    }

    pub fn local_addr(&self) -> AdapterResult<SocketAddr> {
        self.sock.local_addr().map_err(|e| AdapterError::new(e.to_string()))
    }
}

#[async_trait]
impl Transport for UdpTransport {
    async fn send(&self, datagram: &[u8]) -> AdapterResult<()> {
        self.sock.send_to(datagram, self.peer).await.map(|_| ()).map_err(|e| AdapterError::new(format!("sending to {}: {e}", self.peer)))
    }

    fn peer(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }

    /// Cancel-safe (the driver selects on it): `recv_from` is.
    async fn recv(&self) -> AdapterResult<Vec<u8>> {
        let mut buf = vec![0u8; 8192];
        loop {
            let (n, from) = self.sock.recv_from(&mut buf).await.map_err(|e| AdapterError::new(e.to_string()))?;
            // Anyone else on the LAN is ignored before any parsing.
            if from.ip() == self.peer.ip() {
                return Ok(buf[..n].to_vec());
            }
        }
    }
}
