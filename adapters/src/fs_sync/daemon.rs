//! The receiving side: an rsync daemon the Slave's ridondato runs, bound to its management IP,
//! one module per synced directory, authenticated with the cluster secret.

use crate::traits::{AdapterError, AdapterResult};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The rsync user both nodes use; the password is the cluster secret.
pub const RSYNC_USER: &str = "ridondato";

/// Module name of the n-th synced directory (both nodes list the same directories in order).
pub fn module(i: usize) -> String {
    format!("p{i}")
}

#[derive(Debug)]
pub struct RsyncDaemon {
    child: Child,
    dir: PathBuf,
}

impl RsyncDaemon {
    /// Starts `rsync --daemon` on `bind` serving `paths`, its files kept in `dir`.
    pub fn start(bind: SocketAddr, paths: &[PathBuf], secret: &str, dir: &Path) -> AdapterResult<RsyncDaemon> {
        let e = |what: &str, err: std::io::Error| AdapterError::new(format!("rsync daemon {what}: {err}"));
        std::fs::create_dir_all(dir).map_err(|x| e("directory", x))?;
        let secrets = dir.join("rsyncd.secrets");
        write_private(&secrets, &format!("{RSYNC_USER}:{secret}\n")).map_err(|x| e("secrets", x))?;
        let mut conf =
            format!("address = {}\nport = {}\nuse chroot = no\nreverse lookup = no\npid file = {}\n", bind.ip(), bind.port(), dir.join("rsyncd.pid").display());
        for (i, p) in paths.iter().enumerate() {
            conf += &format!(
                "[{}]\npath = {}\nread only = no\nuid = root\ngid = root\nauth users = {RSYNC_USER}\nsecrets file = {}\nstrict modes = yes\nmunge symlinks = no\n",
                module(i),
                p.display(),
                secrets.display()
            );
        }
        let conf_path = dir.join("rsyncd.conf");
        std::fs::write(&conf_path, conf).map_err(|x| e("configuration", x))?;
        let _ = std::fs::remove_file(dir.join("rsyncd.pid"));
        let child = Command::new("rsync")
            .args(["--daemon", "--no-detach"])
            .arg(format!("--config={}", conf_path.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|x| e("start", x))?;
        // Ready once it accepts connections.
        let t = std::time::Instant::now();
        while std::net::TcpStream::connect(bind).is_err() {
            if t.elapsed() > std::time::Duration::from_secs(5) {
                return Err(AdapterError::new(format!("rsync daemon did not listen on {bind}")));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(RsyncDaemon { child, dir: dir.to_path_buf() })
    }
}

impl Drop for RsyncDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.dir.join("rsyncd.secrets"));
    }
}

pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}
