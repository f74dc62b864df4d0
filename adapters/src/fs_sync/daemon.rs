//! The receiving side: an rsync daemon each node's ridondato runs, bound to its management IP,
//! authenticated with the cluster secret. Two modules per synced directory: `p<i>` takes the
//! Master's pushes and refuses them while this node is itself pushing (a returning node's stale
//! files never land on the Master), `r<i>` is read-only, for a resync pulling from here.

use crate::traits::{AdapterError, AdapterResult};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The rsync user both nodes use; the password is the cluster secret.
pub const RSYNC_USER: &str = "ridondato";

/// Module receiving pushes into the n-th synced directory (both nodes list them in order).
pub fn push_module(i: usize) -> String {
    format!("p{i}")
}

/// Read-only module serving the n-th synced directory to a resync.
pub fn pull_module(i: usize) -> String {
    format!("r{i}")
}

#[derive(Debug)]
pub struct RsyncDaemon {
    child: Child,
    dir: PathBuf,
}

impl RsyncDaemon {
    /// Starts `rsync --daemon` on `bind` serving `paths`, its files kept in `dir`; pushes are
    /// refused while the file `refuse_if` exists.
    pub fn start(bind: SocketAddr, paths: &[PathBuf], excludes: &[String], secret: &str, dir: &Path, refuse_if: &Path) -> AdapterResult<RsyncDaemon> {
        let e = |what: &str, err: std::io::Error| AdapterError::new(format!("rsync daemon {what}: {err}"));
        std::fs::create_dir_all(dir).map_err(|x| e("directory", x))?;
        let pid_file = dir.join("rsyncd.pid");
        let conf_path = dir.join("rsyncd.conf");
        stop_leftover(&pid_file, &conf_path);
        let secrets = dir.join("rsyncd.secrets");
        write_private(&secrets, &format!("{RSYNC_USER}:{secret}\n")).map_err(|x| e("secrets", x))?;
        let mut conf = format!(
            "address = {}\nport = {}\nuse chroot = no\nreverse lookup = no\npid file = {}\nuid = root\ngid = root\nauth users = {RSYNC_USER}\nsecrets file = {}\nstrict modes = yes\nmunge symlinks = no\n",
            bind.ip(),
            bind.port(),
            pid_file.display(),
            secrets.display()
        );
        // Excluded paths are neither written nor deleted here, whatever a sender asks.
        let exclude_file = dir.join("rsyncd.exclude");
        std::fs::write(&exclude_file, excludes.iter().map(|x| format!("{x}\n")).collect::<String>()).map_err(|x| e("exclusions", x))?;
        let exclude = format!("exclude from = {}\n", exclude_file.display());
        for (i, p) in paths.iter().enumerate() {
            conf += &format!(
                "[{}]\npath = {}\nread only = no\nwrite only = yes\npre-xfer exec = test ! -e '{}'\n{exclude}",
                push_module(i),
                p.display(),
                refuse_if.display()
            );
            conf += &format!("[{}]\npath = {}\nread only = yes\n{exclude}", pull_module(i), p.display());
        }
        std::fs::write(&conf_path, conf).map_err(|x| e("configuration", x))?;
        let mut child = Command::new("rsync")
            .args(["--daemon", "--no-detach"])
            .arg(format!("--config={}", conf_path.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|x| e("start", x))?;
        // Ready once it accepts connections; a daemon that exits (port taken) says so at once.
        let t = std::time::Instant::now();
        while std::net::TcpStream::connect(bind).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(AdapterError::new(format!("rsync daemon on {bind} exited ({status}): is the port in use?")));
            }
            if t.elapsed() > std::time::Duration::from_secs(5) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(AdapterError::new(format!("rsync daemon did not listen on {bind}")));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(RsyncDaemon { child, dir: dir.to_path_buf() })
    }
}

/// A daemon an earlier run of ours left behind (ridondato killed with SIGKILL): its pid file
/// names it and its command line names our configuration file. Nothing else is touched.
fn stop_leftover(pid_file: &Path, conf: &Path) {
    let Some(pid) = std::fs::read_to_string(pid_file).ok().and_then(|s| s.trim().parse::<u32>().ok()) else { return };
    let ours = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&format!("--config={}", conf.display())));
    if ours {
        tracing::warn!("stopping a leftover rsync daemon (pid {pid}) from an earlier run");
        let _ = Command::new("kill").arg(pid.to_string()).status();
        for _ in 0..50 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let _ = std::fs::remove_file(pid_file);
}

impl Drop for RsyncDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.dir.join("rsyncd.secrets"));
        let _ = std::fs::remove_file(self.dir.join("rsyncd.pid"));
    }
}

pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // Created 0600, never readable by others even for an instant.
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())
}
