//! A harness for tests and benchmarks: two nodes' adapters on loopback, each with its own rsync
//! daemon, node 1 syncing one directory with node 2's.

use super::{FsSyncConfig, RsyncFsSync};
use ridondato_core::NodeId;
use std::net::SocketAddr;
use std::path::Path;

pub const SECRET: &str = "cluster-secret-0123456789";

pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port")
}

/// Node 1 on `a_dir`, node 2 on `b_dir`, their own files under `work/wa` and `work/wb`, capped
/// at `kib_s`; `tune` adjusts both configurations before the adapters start.
pub fn pair(work: &Path, a_dir: &Path, b_dir: &Path, kib_s: u64, tune: impl Fn(&mut FsSyncConfig)) -> (RsyncFsSync, RsyncFsSync) {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let node = |dir: &Path, me: &str, listen, peer: NodeId, peer_addr| {
        let mut c = FsSyncConfig::new(vec![dir.to_path_buf()], [(peer, peer_addr)].into_iter().collect(), kib_s, SECRET.into(), work.join(me));
        c.listen = Some(listen);
        tune(&mut c);
        RsyncFsSync::new(c).expect("adapter")
    };
    (node(a_dir, "wa", a_addr, NodeId(2), b_addr), node(b_dir, "wb", b_addr, NodeId(1), a_addr))
}
