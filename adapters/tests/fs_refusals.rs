//! The Slave's disk fills up under real file sync (a small tmpfs as its synced directory, the
//! real rsync on both sides). Needs root (mount) and rsync; under CI=true their absence is a
//! failure.

use ridondato_adapters::fs_sync::rsync::PARTIAL_DIR;
use ridondato_adapters::fs_sync::{testkit, RsyncFsSync};
use ridondato_adapters::FsSync;
use ridondato_core::{FsReport, NodeId};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const B: NodeId = NodeId(2);
const MIB: u64 = 1 << 20;

/// A tmpfs of `size` on `dir`, unmounted (lazily: the daemon may still have it open) on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` (a skip) only outside CI: there a failure to mount fails the test.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let out = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir.to_path_buf())),
            other => {
                assert!(std::env::var("CI").map_or(true, |v| v != "true"), "mounting a tmpfs (needs root): {other:?}");
                eprintln!("SKIP: cannot mount a tmpfs (needs root): {other:?}");
                None
            }
        }
    }

    fn resize(&self, size: &str) {
        let out = std::process::Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.0).output().expect("mount");
        assert!(out.status.success(), "remount: {out:?}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("--lazy").arg(&self.0).status();
    }
}

struct Dirs(PathBuf);

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn report(s: &RsyncFsSync) -> FsReport {
    s.report().expect("a report")
}

async fn until(what: &str, secs: u64, mut cond: impl FnMut() -> bool, show: impl Fn() -> String) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(secs), "{what} within {secs} s: {}", show());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Bytes that are the same on every run and do not compress.
fn data(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The Slave's synced directory is full: the Slave says what it refused and why (rsync's own
/// words), the Master's backlog keeps counting the file, each retry sends almost nothing (what
/// landed of the file is kept aside on the Slave, not written again), and once there is room the
/// rest lands, the refusal clears and nothing is left aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_slave_disk_is_reported_on_both_sides_and_retries_resend_nothing_that_landed() {
    let rsync = std::process::Command::new("rsync").arg("--version").output().is_ok_and(|o| o.status.success());
    if !rsync {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "rsync is missing (scripts/deps-fs.sh installs it)");
        return;
    }
    let base = std::env::temp_dir().join(format!("ridondato-fs-full-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let _dirs = Dirs(base.clone());
    let (a_dir, b_dir) = (base.join("a"), base.join("b"));
    std::fs::create_dir_all(&a_dir).expect("a");
    std::fs::create_dir_all(&b_dir).expect("b");
    let Some(disk) = Tmpfs::mount(&b_dir, "4m") else { return };
    // Under a cap (as in production) a transfer that fails at once sends little; at loopback speed
    // the socket buffers alone would hold the rest of the file.
    let (a, b) = testkit::pair(&base, &a_dir, &b_dir, 2_000, |_| {});
    a.push_start(B).await.expect("push");
    let big = data(8 * MIB as usize);
    std::fs::write(a_dir.join("a-small"), b"fits").expect("write");
    std::fs::write(a_dir.join("z-big"), &big).expect("write");

    let show = || format!("master {:?}\nslave {:?}", report(&a), report(&b));
    until("a first failed transfer", 20, || a.failures() >= 1, show).await;
    let (f1, b1) = (a.failures(), a.bytes());
    until("two more failed transfers", 30, || a.failures() >= f1 + 2, show).await;
    let resent = a.bytes() - b1;
    eprintln!("2 retries against a full disk moved {resent} bytes (the file is {} bytes)", big.len());
    // rsync streams the rest of the file before the receiver's error reaches the sender; what
    // must not come again is the half that landed (resending it: 2 × 8 MiB and more).
    assert!(resent < 2 * big.len() as u64 * 3 / 4, "2 retries moved {resent} bytes: what landed was sent again\n{}", show());

    let (ra, rb) = (report(&a), report(&b));
    let refused = rb.refused.clone().unwrap_or_default();
    assert!(refused.contains("No space left on device") && refused.contains(&b_dir.display().to_string()), "the Slave says why: {rb:?}");
    assert!(ra.last_error.as_deref().unwrap_or_default().contains("No space left on device"), "the Master too: {ra:?}");
    assert!(ra.backlog >= 1, "the missing file is counted: {ra:?}");
    assert_eq!(std::fs::read(b_dir.join("a-small")).ok().as_deref(), Some(&b"fits"[..]), "what fits landed");
    assert!(!b_dir.join("z-big").exists(), "no partial file under its final name");

    let b2 = a.bytes();
    disk.resize("64m");
    until("the big file to land", 30, || std::fs::read(b_dir.join("z-big")).is_ok_and(|d| d == big), show).await;
    until("the refusal to clear and the backlog to drain", 10, || report(&b).refused.is_none() && report(&a).backlog == 0, show).await;
    let rest = a.bytes() - b2;
    eprintln!("once there was room, {rest} bytes finished the file");
    assert!(rest < big.len() as u64 * 3 / 4, "{rest} bytes: the part already on the Slave was sent again");
    assert!(!b_dir.join(PARTIAL_DIR).exists(), "nothing left aside once the file landed");
    assert!(report(&a).last_error.is_none(), "{}", show());
}
