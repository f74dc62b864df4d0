//! Application services (B10): systemd units, or start/stop hook commands, each under a timeout
//! with its exit status checked and its stderr in the error.

use crate::traits::{AdapterError, AdapterResult, Services};
use async_trait::async_trait;
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum ServiceControl {
    /// `systemctl start|stop UNIT...`
    Systemd(Vec<String>),
    /// Shell commands run with `sh -c`.
    Hooks { start: String, stop: String },
}

#[derive(Clone, Debug)]
pub struct CommandServices {
    pub control: ServiceControl,
    pub timeout: Duration,
}

async fn run(program: &str, args: &[&str], timeout: Duration) -> AdapterResult<()> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).kill_on_drop(true).stdin(std::process::Stdio::null());
    let what = format!("{program} {}", args.join(" "));
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .map_err(|_| AdapterError::new(format!("`{what}` did not finish within {} ms", timeout.as_millis())))?
        .map_err(|e| AdapterError::new(format!("`{what}`: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(AdapterError::new(format!("`{what}` failed ({}): {}", out.status, err.trim())))
}

impl CommandServices {
    async fn act(&self, start: bool) -> AdapterResult<()> {
        match &self.control {
            ServiceControl::Systemd(units) => {
                let verb = if start { "start" } else { "stop" };
                let mut args = vec![verb];
                args.extend(units.iter().map(String::as_str));
                run("systemctl", &args, self.timeout).await
            }
            ServiceControl::Hooks { start: up, stop: down } => run("sh", &["-c", if start { up } else { down }], self.timeout).await,
        }
    }
}

#[async_trait]
impl Services for CommandServices {
    async fn start(&self) -> AdapterResult<()> {
        self.act(true).await
    }
    async fn stop(&self) -> AdapterResult<()> {
        self.act(false).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(start: &str, stop: &str, ms: u64) -> CommandServices {
        CommandServices { control: ServiceControl::Hooks { start: start.into(), stop: stop.into() }, timeout: Duration::from_millis(ms) }
    }

    #[tokio::test]
    async fn hooks_run_and_their_failures_say_why() {
        let dir = std::env::temp_dir().join(format!("ridondato-hooks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let flag = dir.join("up");
        let s = hooks(&format!("touch {}", flag.display()), &format!("rm {}", flag.display()), 2000);
        s.start().await.expect("start");
        assert!(flag.exists());
        s.stop().await.expect("stop");
        assert!(!flag.exists());
        let e = s.stop().await.expect_err("rm of a missing file fails");
        assert!(e.0.contains("failed") && e.0.contains("No such file"), "{e}");
        let slow = hooks("sleep 5", "true", 100);
        assert!(slow.start().await.expect_err("timeout").0.contains("did not finish within 100 ms"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
