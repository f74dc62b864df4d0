//! The receiving side: an rsync daemon each node's ridondato runs, bound to its management IP,
//! authenticated with the cluster secret. Two modules per synced directory: `p<i>` takes the
//! Master's pushes and refuses them while this node is itself pushing (a returning node's stale
//! files never land on the Master), `r<i>` is read-only, for a resync pulling from here.

use super::refusals::{self, Refused};
use crate::traits::{AdapterError, AdapterResult};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

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

/// Connections from the peer served at once: its push and a resync pull, with room to spare.
const MAX_CONNECTIONS: usize = 4;

/// This node's receiving end. We accept the connections ourselves and hand each one to an
/// `rsync --daemon` in inetd mode (its standard input is the socket): only the peer's address
/// gets a process, at most `MAX_CONNECTIONS` at once, so nobody else on the network can make
/// this host fork rsync processes or hold its connections. (A standalone rsync daemon forks for
/// every connection before it looks at `hosts allow`, and has no cap before a module is named.)
#[derive(Debug)]
pub struct RsyncDaemon {
    accept: tokio::task::JoinHandle<()>,
    dir: PathBuf,
}

impl RsyncDaemon {
    /// Listens on `bind` (inside a tokio runtime) for `allow` (the peers' addresses), serving
    /// `paths`; its files are kept in `dir`; pushes are refused while the file `refuse_if` exists.
    /// Why a push was refused, or could not be written, goes into `refused`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        bind: SocketAddr,
        allow: &[std::net::IpAddr],
        paths: &[PathBuf],
        excludes: &[String],
        secret: &str,
        dir: &Path,
        refuse_if: &Path,
        refused: Refused,
    ) -> AdapterResult<RsyncDaemon> {
        let e = |what: &str, err: std::io::Error| AdapterError::new(format!("rsync daemon {what}: {err}"));
        if allow.is_empty() {
            return Err(AdapterError::new("rsync daemon: no peer address to allow"));
        }
        std::fs::create_dir_all(dir).map_err(|x| e("directory", x))?;
        let conf_path = dir.join("rsyncd.conf");
        let secrets = dir.join("rsyncd.secrets");
        write_private(&secrets, &format!("{RSYNC_USER}:{secret}\n")).map_err(|x| e("secrets", x))?;
        let hosts: Vec<String> = allow.iter().map(ToString::to_string).collect();
        // `hosts allow` again inside rsync (defence in depth), and a stalled transfer ends. The
        // log file is where the receiver's errors can be read (`refusals`).
        let log = dir.join("rsyncd.log");
        let mut conf = format!(
            "use chroot = no\nreverse lookup = no\nuid = root\ngid = root\nauth users = {RSYNC_USER}\nsecrets file = {}\nstrict modes = yes\nmunge symlinks = no\nhosts allow = {}\nhosts deny = *\ntimeout = 300\nlog file = {}\n",
            secrets.display(),
            hosts.join(" "),
            log.display(),
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
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| AdapterError::new("rsync daemon: needs a tokio runtime"))?;
        let listener = std::net::TcpListener::bind(bind).map_err(|x| e(&format!("listening on {bind} (is the port in use?)"), x))?;
        listener.set_nonblocking(true).map_err(|x| e("listener", x))?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(|x| e("listener", x))?
        };
        let served = Served { allow: allow.to_vec(), conf: conf_path, log, refused, paths: paths.to_vec() };
        let accept = runtime.spawn(serve(listener, served));
        Ok(RsyncDaemon { accept, dir: dir.to_path_buf() })
    }
}

/// What the accept loop needs besides its listener.
struct Served {
    allow: Vec<std::net::IpAddr>,
    conf: PathBuf,
    log: PathBuf,
    refused: Refused,
    paths: Vec<PathBuf>,
}

async fn serve(listener: tokio::net::TcpListener, s: Served) {
    // Each child is awaited in its own task, which gives back its pid and exit status; dropping
    // the set (the daemon dropped) kills the transfers.
    let mut children = tokio::task::JoinSet::new();
    let mut errors = crate::accept::AcceptErrors::new("rsync daemon");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Some((stream, from)) = errors.check(accepted).await else { continue };
                if !s.allow.contains(&from.ip()) {
                    tracing::debug!("rsync daemon: refused {from}, not the peer");
                    continue;
                }
                if children.len() >= MAX_CONNECTIONS {
                    tracing::warn!("rsync daemon: {MAX_CONNECTIONS} transfers from the peer already run, refusing one more");
                    continue;
                }
                match inetd_child(stream, &s.conf) {
                    Ok(mut c) => {
                        let pid = c.id().unwrap_or_default();
                        children.spawn(async move { (pid, c.wait().await) });
                    }
                    Err(err) => tracing::warn!("rsync daemon: could not start rsync for {from}: {err}"),
                }
            }
            Some(done) = children.join_next() => {
                if let Ok((pid, Ok(status))) = done {
                    refusals::settle(pid, status, &s.log, &s.refused, &s.paths);
                }
                if children.is_empty() {
                    // No child writes to it now, and every one has been read: start afresh, so
                    // the log stays as small as one busy spell.
                    let _ = std::fs::File::create(&s.log);
                }
            }
        }
    }
}

/// `rsync --daemon` with the connection as its standard input and output (inetd mode).
fn inetd_child(stream: tokio::net::TcpStream, conf: &Path) -> std::io::Result<tokio::process::Child> {
    // rsync's protocol is a conversation of small messages: with Nagle's algorithm each of its
    // turns waits for the other side's delayed ACK (40 ms on Linux), 90-130 ms per transfer on
    // loopback against under 10 ms without (measured with plain rsync to a daemon).
    stream.set_nodelay(true)?;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    let out = stream.try_clone()?;
    tokio::process::Command::new("rsync")
        .args(["--daemon"])
        .arg(format!("--config={}", conf.display()))
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(stream)))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(out)))
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
}

impl Drop for RsyncDaemon {
    fn drop(&mut self) {
        // Ends the listener and kills the transfers it started (their handles drop with it).
        self.accept.abort();
        let _ = std::fs::remove_file(self.dir.join("rsyncd.secrets"));
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
