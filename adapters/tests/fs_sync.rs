//! Real file sync: an rsync daemon on loopback, the adapter pushing on inotify events, trees
//! compared file by file (content, mode, mtime, symlinks, deletions). Needs rsync; under CI=true
//! its absence is a failure.

use ridondato_adapters::fs_sync::daemon::RsyncDaemon;
use ridondato_adapters::fs_sync::{FsSyncConfig, RsyncFsSync};
use ridondato_adapters::FsSync;
use ridondato_core::NodeId;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn available() -> bool {
    let ok = std::process::Command::new("rsync").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "rsync is missing (scripts/deps-fs.sh installs it)");
        eprintln!("SKIP: rsync is not installed");
    }
    ok
}

struct Dirs(PathBuf);

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port")
}

/// Every entry under `root`: kind, content or link target, mode, mtime.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).expect("prefix").display().to_string();
            let m = std::fs::symlink_metadata(&p).expect("meta");
            let v = if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).expect("link").display())
            } else if m.is_dir() {
                stack.push(p.clone());
                format!("dir {:o}", m.permissions().mode() & 0o7777)
            } else {
                let bytes = std::fs::read(&p).expect("read");
                let sum = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
                format!("file {:o} {} {} {sum:x}", m.permissions().mode() & 0o7777, m.mtime(), bytes.len())
            };
            out.insert(rel, v);
        }
    }
    out
}

fn setup(tag: &str) -> (Dirs, PathBuf, PathBuf, RsyncDaemon, Arc<RsyncFsSync>) {
    let base = std::env::temp_dir().join(format!("ridondato-fs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (src, dst) = (base.join("master"), base.join("slave"));
    std::fs::create_dir_all(&src).expect("src");
    std::fs::create_dir_all(&dst).expect("dst");
    let addr = free_addr();
    let daemon = RsyncDaemon::start(addr, &[dst.clone()], "cluster-secret-0123456789", &base.join("d")).expect("daemon");
    let sync = Arc::new(
        RsyncFsSync::new(FsSyncConfig {
            paths: vec![src.clone()],
            excludes: vec![],
            peers: [(NodeId(2), addr)].into_iter().collect(),
            bandwidth_kbps: 100_000,
            secret: "cluster-secret-0123456789".into(),
            batch: Duration::from_millis(50),
            work_dir: base.join("w"),
        })
        .expect("adapter"),
    );
    (Dirs(base), src, dst, daemon, sync)
}

async fn wait_same(src: &Path, dst: &Path) {
    let t = Instant::now();
    loop {
        if snapshot(src) == snapshot(dst) {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "trees differ:\n{:?}\n{:?}", snapshot(src), snapshot(dst));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_operations_leave_identical_trees() {
    if !available() {
        return;
    }
    let (_d, src, dst, _daemon, sync) = setup("ops");
    sync.push_start(NodeId(2)).await.expect("push");
    // A seeded sequence of creates, writes, renames, deletes, mkdirs, chmods and symlinks.
    let mut x: u64 = 0x5eed;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for step in 0..120 {
        let name = src.join(format!("d{}/f{}", next(3), next(8)));
        std::fs::create_dir_all(name.parent().expect("parent")).expect("mkdir");
        match next(6) {
            0 | 1 => std::fs::write(&name, format!("step {step} {}", "x".repeat(next(2000) as usize))).expect("write"),
            2 => {
                let _ = std::fs::remove_file(&name);
            }
            3 => {
                let _ = std::fs::rename(&name, src.join(format!("d{}/moved{}", next(3), next(4))));
            }
            4 => {
                let _ = std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600 + (next(2) as u32) * 0o40));
            }
            _ => {
                let link = src.join(format!("l{}", next(4)));
                let _ = std::fs::remove_file(&link);
                let _ = std::os::unix::fs::symlink(format!("d{}/f{}", next(3), next(8)), &link);
            }
        }
        if step % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    wait_same(&src, &dst).await;
    // Nothing half-written under a final name, and no rsync temporaries left behind.
    assert!(snapshot(&dst).keys().all(|k| !k.contains("~tmp~")));
    sync.push_stop().await.expect("stop");
    std::fs::write(src.join("after-stop"), b"not pushed").expect("write");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!dst.join("after-stop").exists(), "a node told to stop pushing pushes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_pulls_everything_with_monotone_progress_and_bad_config_is_refused() {
    if !available() {
        return;
    }
    let (_d, src, dst, _daemon, sync) = setup("resync");
    // Here the roles are reversed: the daemon's tree is the Master's, and we pull from it.
    for i in 0..50 {
        std::fs::write(dst.join(format!("r{i}")), vec![b'x'; 20_000]).expect("write");
    }
    std::fs::write(src.join("stale"), b"only here").expect("write");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let progress: ridondato_adapters::ProgressFn = Arc::new(move |d, t| s2.lock().expect("lock").push((d, t)));
    sync.resync_from(NodeId(2), progress).await.expect("resync");
    assert_eq!(snapshot(&src), snapshot(&dst), "the pulled tree equals the Master's (stale file deleted)");
    let seen = seen.lock().expect("lock").clone();
    assert!(seen.windows(2).all(|w| w[1].0 >= w[0].0), "monotone: {seen:?}");
    assert_eq!(seen.last().map(|(d, t)| d == t), Some(true), "ends at 100 %: {seen:?}");

    let bad = RsyncFsSync::new(FsSyncConfig {
        paths: vec![PathBuf::from("/nonexistent/ridondato")],
        excludes: vec![],
        peers: BTreeMap::new(),
        bandwidth_kbps: 1000,
        secret: "s".into(),
        batch: Duration::from_millis(50),
        work_dir: std::env::temp_dir(),
    })
    .expect_err("a missing directory");
    assert!(bad.0.contains("fs.paths[0]"), "{bad}");
}
