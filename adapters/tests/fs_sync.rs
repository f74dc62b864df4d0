//! Real file sync between two nodes on loopback, each with its own rsync daemon (the real rsync):
//! trees compared entry by entry (content, mode, owner, mtime, symlinks, deletions). Needs rsync
//! and, for the watch-limit test, `unshare`; under CI=true their absence is a failure.

use ridondato_adapters::fs_sync::rsync::PARTIAL_DIR;
use ridondato_adapters::fs_sync::testkit::{free_addr, SECRET};
use ridondato_adapters::fs_sync::{testkit, FsSyncConfig, RsyncFsSync};
use ridondato_adapters::FsSync;
use ridondato_core::{FsReport, NodeId, Progress};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);

/// The inotify queue size is host-wide: the test that lowers it runs alone (write), every other
/// test of this file holds a read guard, since an instance created meanwhile would inherit it.
static HOST_WIDE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// For the tests that are not async.
fn shared() -> tokio::sync::RwLockReadGuard<'static, ()> {
    HOST_WIDE.blocking_read()
}

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

/// Every entry under `root` but `*.tmp` (excluded): kind, content or link target, mode, owner, mtime.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).expect("prefix").display().to_string();
            if rel.ends_with(".tmp") {
                continue;
            }
            // An entry may vanish between listing and reading (rsync renaming into place).
            let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
            let owner = format!("{}:{}", m.uid(), m.gid());
            let v = if m.file_type().is_symlink() {
                format!("link {} {owner}", std::fs::read_link(&p).map(|l| l.display().to_string()).unwrap_or_default())
            } else if m.is_dir() {
                stack.push(p.clone());
                format!("dir {:o} {owner}", m.permissions().mode() & 0o7777)
            } else {
                let bytes = std::fs::read(&p).unwrap_or_default();
                let sum = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
                format!("file {:o} {owner} {} {} {sum:x}", m.permissions().mode() & 0o7777, m.mtime(), bytes.len())
            };
            out.insert(rel, v);
        }
    }
    out
}

/// Two nodes: A's tree, B's tree, each with an adapter and its rsync daemon.
struct Pair {
    _dirs: Dirs,
    a_dir: PathBuf,
    b_dir: PathBuf,
    a: Arc<RsyncFsSync>,
    b: Arc<RsyncFsSync>,
}

fn pair(tag: &str, tune: impl Fn(&mut FsSyncConfig)) -> Pair {
    let base = std::env::temp_dir().join(format!("ridondato-fs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (a_dir, b_dir) = (base.join("a"), base.join("b"));
    std::fs::create_dir_all(&a_dir).expect("a");
    std::fs::create_dir_all(&b_dir).expect("b");
    let (a, b) = testkit::pair(&base, &a_dir, &b_dir, 100_000, |c| {
        c.excludes = vec!["*.tmp".into()];
        tune(c);
    });
    let (a, b) = (Arc::new(a), Arc::new(b));
    Pair { _dirs: Dirs(base), a_dir, b_dir, a, b }
}

async fn wait_same(src: &Path, dst: &Path, pusher: &RsyncFsSync) {
    let t = Instant::now();
    loop {
        let (a, b) = (snapshot(src), snapshot(dst));
        if a == b {
            return;
        }
        if t.elapsed() > Duration::from_secs(15) {
            let differ: Vec<_> = a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).map(|k| (k, a.get(k), b.get(k))).collect();
            panic!("trees differ (path, source, replica): {differ:#?}\nreport: {:?}", pusher.report());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn report(s: &RsyncFsSync) -> FsReport {
    s.report().expect("a report")
}

/// Waits for `n` completed full passes: the trees can match before rsync has exited.
async fn wait_passes(s: &RsyncFsSync, n: u64) -> FsReport {
    let t = Instant::now();
    while report(s).rescans < n && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report(s)
}

/// xorshift: the same operations on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One random operation under `root`: writes, deletes, renames of files and directories,
/// removal of whole trees, modes, owners, mtimes, symlinks, hard links, excluded files.
fn random_op(root: &Path, r: &mut Rng, step: usize) {
    let dir = root.join(format!("d{}", r.below(4)));
    let name = dir.join(format!("f{}", r.below(8)));
    let _ = std::fs::create_dir_all(&dir);
    let _ = match r.below(12) {
        0..=2 => std::fs::write(&name, format!("step {step} {}", "x".repeat(r.below(3000) as usize))),
        3 => std::fs::remove_file(&name),
        4 => std::fs::rename(&name, root.join(format!("d{}/moved{}", r.below(4), r.below(4)))),
        5 => std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600 + (r.below(2) as u32) * 0o44)),
        6 => std::os::unix::fs::chown(&name, Some(1000 + r.below(3) as u32), Some(2000 + r.below(3) as u32)),
        7 => std::fs::File::options()
            .write(true)
            .open(&name)
            .and_then(|f| f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000 + r.below(1000)))),
        8 => {
            let link = root.join(format!("l{}", r.below(4)));
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(format!("d{}/f{}", r.below(4), r.below(8)), &link)
        }
        9 => {
            // A directory moved, another removed with all it holds, a new one filled at once.
            let (from, to) = (root.join(format!("d{}", r.below(4))), root.join(format!("d{}/sub{}", r.below(4), r.below(3))));
            if r.below(2) == 0 {
                std::fs::rename(from, to)
            } else {
                let _ = std::fs::remove_dir_all(&to);
                std::fs::create_dir_all(to.join("deep")).and_then(|()| std::fs::write(to.join("deep/new"), format!("{step}")))
            }
        }
        10 => std::fs::hard_link(&name, dir.join(format!("h{}", r.below(3)))),
        _ => std::fs::write(dir.join("scratch.tmp"), b"excluded"),
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_operations_leave_identical_trees_and_a_stopped_node_sends_nothing() {
    let _host = HOST_WIDE.read().await;
    if !available() {
        return;
    }
    let p = pair("ops", |_| {});
    std::fs::write(p.a_dir.join("before-start"), b"there before the Master started pushing").expect("write");
    // Excluded on the replica: never deleted by the Master's passes.
    std::fs::write(p.b_dir.join("local.tmp"), b"the Slave's own").expect("write");
    p.a.push_start(B).await.expect("push");
    let mut r = Rng(0x5eed);
    for step in 0..300 {
        random_op(&p.a_dir, &mut r, step);
        if step % 25 == 0 {
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }
    wait_same(&p.a_dir, &p.b_dir, &p.a).await;
    let seen = snapshot(&p.b_dir);
    assert!(seen.len() > 20, "the operations left a real tree: {seen:#?}");
    assert!(seen.values().any(|v| v.starts_with("file ") && !v.contains(" 0:0 ")), "owners other than root were carried");
    assert!(seen.values().any(|v| v.starts_with("link ")), "symlinks were carried");
    assert!(!p.b_dir.join("d0/scratch.tmp").exists() && p.b_dir.join("local.tmp").exists(), "exclusions hold both ways");
    // The trees can match while the last transfer is still being accounted: the backlog
    // (which counts a batch until its rsync returned) drains right after.
    let t = Instant::now();
    while report(&p.a).backlog != 0 && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rep = report(&p.a);
    assert_eq!(rep.backlog, 0, "{rep:?}");
    assert!(rep.bytes > 0 && rep.last_error.is_none(), "{rep:?}");
    p.a.push_stop().await.expect("stop");
    std::fs::write(p.a_dir.join("after-stop"), b"not pushed").expect("write");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!p.b_dir.join("after-stop").exists(), "a node told to stop pushing pushes nothing");
}

/// A transfer cut off half-way (the Master stops pushing: a failover) leaves nothing under the
/// file's final name on the receiver; what landed is kept aside (`PARTIAL_DIR`, for a retry to
/// resume) and removed once that node pushes itself (it is the Master now: nothing resumes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_transfer_leaves_no_partial_file() {
    let _host = HOST_WIDE.read().await;
    if !available() {
        return;
    }
    let p = pair("partial", |c| c.bandwidth_kib_s = 200);
    p.a.push_start(B).await.expect("push");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(p.a_dir.join("big"), &data).expect("write");
    let t = Instant::now();
    while p.a.bytes() < 300_000 {
        assert!(t.elapsed() < Duration::from_secs(10), "the transfer never started: {:?}", p.a.report());
        assert!(!p.b_dir.join("big").exists(), "a partial file under its final name");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!p.b_dir.join("big").exists(), "at 200 KiB/s a 1 MB file is not complete yet");
    p.a.push_stop().await.expect("stop");
    let aside = p.b_dir.join(PARTIAL_DIR);
    let t = Instant::now();
    while snapshot(&p.b_dir).keys().any(|k| !k.starts_with(PARTIAL_DIR)) {
        assert!(t.elapsed() < Duration::from_secs(5), "left behind on the receiver: {:#?}", snapshot(&p.b_dir));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kept = std::fs::metadata(aside.join("big")).map(|m| m.len()).unwrap_or(0);
    assert!(kept > 0, "what landed is kept aside for a retry: {:#?}", snapshot(&p.b_dir));
    p.b.push_start(A).await.expect("the receiver becomes the pusher");
    assert!(!aside.exists(), "a pusher keeps nothing of failed pushes: {:#?}", snapshot(&p.b_dir));
    assert!(snapshot(&p.b_dir).is_empty(), "{:#?}", snapshot(&p.b_dir));
    // Mid-transfer temporary names were there, then removed: the check above is not vacuous.
    assert!(p.a.bytes() >= 300_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_reversed_the_new_master_wins_and_a_returning_node_is_refused() {
    let _host = HOST_WIDE.read().await;
    if !available() {
        return;
    }
    let p = pair("roles", |c| {
        c.batch = Duration::from_millis(20);
        c.verify_every = Duration::from_secs(1);
    });
    std::fs::write(p.a_dir.join("shared"), b"v1 from A").expect("write");
    p.a.push_start(B).await.expect("A pushes");
    wait_same(&p.a_dir, &p.b_dir, &p.a).await;

    // Failover: A is gone (stops pushing), B is Master and keeps writing.
    p.a.push_stop().await.expect("A stops");
    p.b.push_start(A).await.expect("B pushes");
    std::fs::write(p.b_dir.join("shared"), b"v2 from B, the new Master").expect("write");
    std::fs::write(p.b_dir.join("new-on-b"), b"after the failover").expect("write");
    wait_same(&p.b_dir, &p.a_dir, &p.b).await;

    // A comes back believing it is Master, with a stale change of its own: its push is refused
    // by B's daemon (B pushes, so B takes no pushes) and B's tree is untouched.
    std::fs::write(p.a_dir.join("shared"), b"stale v1' from the returning A").expect("write");
    let b_before = snapshot(&p.b_dir);
    p.a.push_start(B).await.expect("A pushes again");
    let t = Instant::now();
    while report(&p.a).last_error.is_none() {
        assert!(t.elapsed() < Duration::from_secs(10), "A's push should fail: {:?}", report(&p.a));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(snapshot(&p.b_dir), b_before, "the Master's files were not overwritten");
    assert!(report(&p.a).last_error.unwrap_or_default().contains("pre-xfer"), "{:?}", report(&p.a));

    // A learns it is Slave: B's next verifying full pass puts B's version back on A.
    p.a.push_stop().await.expect("A stops");
    wait_same(&p.b_dir, &p.a_dir, &p.b).await;
    assert_eq!(std::fs::read(p.a_dir.join("shared")).expect("read"), b"v2 from B, the new Master");
}

/// Overflows the kernel's inotify queue for real: the queue size is read when an instance is
/// created, so it is lowered only around `push_start` (and put back even if that fails).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inotify_overflow_leads_to_a_full_pass_and_identical_trees() {
    let _alone = HOST_WIDE.write().await;
    if !available() {
        return;
    }
    const KNOB: &str = "/proc/sys/fs/inotify/max_queued_events";
    let p = pair("overflow", |_| {});
    let old = std::fs::read_to_string(KNOB).expect("read the queue size");
    struct Restore(String);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = std::fs::write(KNOB, &self.0);
        }
    }
    let restore = Restore(old);
    std::fs::write(KNOB, "16").expect("lower the queue size (needs root)");
    let started = p.a.push_start(B).await;
    drop(restore);
    started.expect("push");
    wait_same(&p.a_dir, &p.b_dir, &p.a).await;
    for i in 0..3000 {
        std::fs::write(p.a_dir.join(format!("burst-{i}")), format!("{i}")).expect("write");
    }
    wait_same(&p.a_dir, &p.b_dir, &p.a).await;
    let rep = wait_passes(&p.a, 2).await;
    assert!(rep.overflows >= 1, "3000 creations overflow a 16-event queue: {rep:?}");
    assert!(rep.rescans >= 2, "the start and the overflow each made a full pass: {rep:?}");
    assert_eq!(snapshot(&p.b_dir).len(), 3000);
}

/// Out of inotify watches: run in a user namespace whose watch limit is 6 (only that namespace
/// is affected), by this test binary re-running itself there. The namespace maps every id to
/// itself, written by us from outside (rather than `unshare -r`, which maps root alone and denies
/// `setgroups`, which the rsync daemon needs); its shell waits for the map, then execs so that
/// root inside has its capabilities.
#[test]
fn out_of_watches_falls_back_to_full_passes() {
    let _host = shared();
    use std::io::Write;
    if !available() {
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let inner = "echo 6 > /proc/sys/user/max_inotify_watches && exec \"$0\" --exact watch_limit_child --nocapture --test-threads=1";
    let mut child = std::process::Command::new("unshare")
        .args(["-U", "sh", "-c", &format!("read go && exec sh -c '{inner}' \"$0\"")])
        .arg(exe)
        .env("RIDONDATO_WATCH_LIMIT_CHILD", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("unshare (util-linux)");
    let ns = |pid: String| std::fs::read_link(format!("/proc/{pid}/ns/user")).ok();
    let t = Instant::now();
    while ns(child.id().to_string()) == ns("self".into()) {
        assert!(t.elapsed() < Duration::from_secs(5), "unshare made no user namespace");
        std::thread::sleep(Duration::from_millis(10));
    }
    for map in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{}/{map}", child.id()), "0 0 4294967295\n").expect("map the ids (needs root)");
    }
    child.stdin.take().expect("stdin").write_all(b"go\n").expect("release the child");
    let out = child.wait_with_output().expect("the child");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "the child failed:\n{text}");
}

/// The body of the test above, run only inside its namespace.
#[test]
fn watch_limit_child() {
    let _host = shared();
    if std::env::var("RIDONDATO_WATCH_LIMIT_CHILD").is_err() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let p = pair("watches", |c| c.rescan_every = Duration::from_millis(300));
        for i in 0..20 {
            std::fs::create_dir_all(p.a_dir.join(format!("dir{i}/inner"))).expect("mkdir");
        }
        p.a.push_start(B).await.expect("push");
        wait_same(&p.a_dir, &p.b_dir, &p.a).await;
        let rep = report(&p.a);
        assert!(rep.watch_limited, "41 directories cannot fit in 6 watches: {rep:?}");
        // Changes where no watch reaches still arrive, by the periodic full pass.
        for i in 0..20 {
            std::fs::write(p.a_dir.join(format!("dir{i}/inner/late")), b"unwatched").expect("write");
        }
        wait_same(&p.a_dir, &p.b_dir, &p.a).await;
        let rep = wait_passes(&p.a, 2).await;
        assert!(rep.rescans >= 2, "{rep:?}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_pulls_everything_with_monotone_progress_in_bytes_and_files() {
    let _host = HOST_WIDE.read().await;
    if !available() {
        return;
    }
    let p = pair("resync", |_| {});
    // B is the Master; A, the Slave, is forced to resync from it.
    for i in 0..60 {
        std::fs::create_dir_all(p.b_dir.join(format!("r{}", i % 6))).expect("mkdir");
        std::fs::write(p.b_dir.join(format!("r{}/f{i}", i % 6)), vec![b'x'; 20_000 + i]).expect("write");
    }
    std::fs::write(p.a_dir.join("stale"), b"only on the Slave").expect("write");
    let seen = Arc::new(std::sync::Mutex::new(Vec::<Progress>::new()));
    let s2 = seen.clone();
    p.a.resync_from(B, Arc::new(move |pr| s2.lock().expect("lock").push(pr))).await.expect("resync");
    assert_eq!(snapshot(&p.a_dir), snapshot(&p.b_dir), "the pulled tree equals the Master's (stale file deleted)");
    let seen = seen.lock().expect("lock").clone();
    let bytes: u64 = (0..60).map(|i| 20_000 + i).sum();
    assert_eq!(seen.first().map(|s| s.total), Some(bytes), "the byte total is known from the start");
    assert!(seen.windows(2).all(|w| w[1].done >= w[0].done && w[1].files >= w[0].files), "monotone: {seen:?}");
    let last = seen.last().copied().expect("some progress");
    assert_eq!(last.done, last.total, "ends at 100 %: {seen:?}");
    let (files_done, files_total) = last.files.expect("files counted");
    assert!(files_done == files_total && files_total >= 66, "60 files and 6 directories: {last:?}");
}

/// A resync cancelled half-way (its future dropped, as the driver does) stops the transfer and
/// leaves neither the file under its final name nor rsync's temporary copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_resync_stops_and_leaves_no_temporary_file() {
    let _host = HOST_WIDE.read().await;
    if !available() {
        return;
    }
    let p = pair("cancel", |c| c.bandwidth_kib_s = 200);
    std::fs::write(p.b_dir.join("big"), vec![7u8; 1_000_000]).expect("write");
    let mut pull = Box::pin(p.a.resync_from(B, Arc::new(|_| {})));
    let t = Instant::now();
    loop {
        tokio::select! {
            r = &mut pull => panic!("at 200 KiB/s a 1 MB pull cannot have ended: {r:?}"),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        if p.a.bytes() > 300_000 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "the pull never started");
    }
    let during = std::fs::read_dir(&p.a_dir).expect("list").count();
    assert_eq!(during, 1, "rsync's temporary file is there while it receives");
    drop(pull);
    let t = Instant::now();
    while !snapshot(&p.a_dir).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(5), "left behind: {:#?}", snapshot(&p.a_dir));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bytes = p.a.bytes();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(p.a.bytes() <= bytes + 16_384, "the transfer stopped: {} more bytes", p.a.bytes() - bytes);
}

/// The synced directory itself replaced (moved away, made again): its watch is gone, which is
/// reported, and periodic full passes carry on from the new directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_synced_directory_is_reported_and_still_synced() {
    let _host = HOST_WIDE.read().await;
    if !available() {
        return;
    }
    let p = pair("replaced", |c| c.rescan_every = Duration::from_millis(300));
    std::fs::write(p.a_dir.join("old"), b"in the first directory").expect("write");
    p.a.push_start(B).await.expect("push");
    wait_same(&p.a_dir, &p.b_dir, &p.a).await;
    std::fs::rename(&p.a_dir, p.a_dir.with_extension("old")).expect("move away");
    std::fs::create_dir(&p.a_dir).expect("make again");
    std::fs::write(p.a_dir.join("new"), b"in the second directory").expect("write");
    wait_same(&p.a_dir, &p.b_dir, &p.a).await;
    let rep = report(&p.a);
    assert!(rep.watch_limited, "the lost watch is in the status: {rep:?}");
    let _ = std::fs::remove_dir_all(p.a_dir.with_extension("old"));
}

/// A peer whose rsync daemon does not answer: the status says that, not rsync's "connection
/// reset" from the relay, and the changes wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_is_named_and_the_changes_wait() {
    let _host = HOST_WIDE.read().await;
    if !available() {
        return;
    }
    let base = std::env::temp_dir().join(format!("ridondato-fs-down-{}", std::process::id()));
    let _dirs = Dirs(base.clone());
    std::fs::create_dir_all(base.join("a")).expect("mkdir");
    let nobody = free_addr();
    let a =
        RsyncFsSync::new(FsSyncConfig::new(vec![base.join("a")], [(B, nobody)].into_iter().collect(), 1000, SECRET.into(), base.join("w"))).expect("adapter");
    a.push_start(B).await.expect("push");
    std::fs::write(base.join("a/waiting"), b"x").expect("write");
    let t = Instant::now();
    while report(&a).last_error.is_none() && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rep = report(&a);
    let e = rep.last_error.clone().unwrap_or_default();
    assert!(e.contains(&format!("the peer's rsync daemon at {nobody} is unreachable")), "{rep:?}");
    assert!(rep.backlog >= 1 && rep.rescans == 0, "the pass is owed still: {rep:?}");
    // While retries go on, what is not on the Slave stays counted, the batch under way too.
    for _ in 0..100 {
        let rep = report(&a);
        assert!(rep.backlog >= 1, "the backlog never reads 0 while nothing landed: {rep:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Our matching of exclusion patterns agrees with rsync's own, path by path: for each pattern,
/// what `rsync --list-only` leaves out is exactly what `excluded` says (ours decides what goes in
/// a `--files-from` list; the daemon refuses a whole transfer naming an excluded path).
#[test]
fn exclusions_match_as_rsync_matches_them() {
    let _host = shared();
    if !available() {
        return;
    }
    use ridondato_adapters::fs_sync::exclude::excluded;
    let base = std::env::temp_dir().join(format!("ridondato-fs-excl-{}", std::process::id()));
    let _dirs = Dirs(base.clone());
    let files = [
        "a.tmp",
        "d/e/a.tmp",
        "d/a.tmpx",
        "cache/x/y",
        "d/cache",
        "spool/x",
        "d/spool/y",
        "a/b/c",
        "a/bc",
        "q/a/b/x",
        "a/x",
        "run/pid",
        "d/run",
        "f1.log",
        "d/f12.log",
        "fa.log",
        "d/f7.log",
        "b/c/deep/z",
        "tmp.d/k",
    ];
    for f in files {
        let p = base.join(f);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, b"x").expect("write");
    }
    let all = rsync_listing(&base, None);
    assert!(all.len() > files.len(), "files and their directories: {all:?}");
    for pat in [
        "*.tmp",
        "cache",
        "/spool",
        "b/c",
        "a/*",
        "a/**/x",
        "run/",
        "f[0-9].log",
        "f?.log",
        "*/x",
        "tmp.*",
        "[!a-c]*",
        "/a/b",
        "d/",
        "**.tmp",
        "?/x",
        "**/x",
        "x/y",
    ] {
        let kept = rsync_listing(&base, Some(pat));
        for (path, is_dir) in &all {
            let ours = excluded(Path::new(path), *is_dir, &[pat.to_string()]);
            assert_eq!(ours, !kept.contains_key(path), "pattern {pat:?} on {path:?} (dir: {is_dir})");
        }
    }
}

/// Every path rsync would send from `root` (relative, whether a directory), with one exclusion.
fn rsync_listing(root: &Path, exclude: Option<&str>) -> BTreeMap<String, bool> {
    let mut c = std::process::Command::new("rsync");
    c.args(["-r", "--list-only", "--no-human-readable"]);
    if let Some(x) = exclude {
        c.arg(format!("--exclude={x}"));
    }
    let out = c.arg(format!("{}/", root.display())).output().expect("rsync");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| Some((l.split_whitespace().nth(4)?.to_string(), l.starts_with('d'))))
        .filter(|(p, _)| p != ".")
        .collect()
}

#[test]
fn bad_configuration_is_refused_with_the_field_named() {
    let _host = shared();
    let base = std::env::temp_dir().join(format!("ridondato-fs-bad-{}", std::process::id()));
    let _dirs = Dirs(base.clone());
    let cfg = |paths: Vec<PathBuf>, kib_s: u64, secret: &str| FsSyncConfig::new(paths, BTreeMap::new(), kib_s, secret.into(), base.clone());
    let e = RsyncFsSync::new(cfg(vec![PathBuf::from("/nonexistent/ridondato")], 1000, "s")).expect_err("a missing directory");
    assert!(e.0.contains("fs.paths[0]"), "{e}");
    let e = RsyncFsSync::new(cfg(vec![std::env::temp_dir()], 0, "s")).expect_err("no bandwidth");
    assert!(e.0.contains("bandwidth"), "{e}");
    let e = RsyncFsSync::new(cfg(vec![std::env::temp_dir()], 10, "a:b")).expect_err("a secret rsync cannot hold");
    assert!(e.0.contains("secret"), "{e}");
}
