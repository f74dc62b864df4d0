//! What every listener of ours does when `accept` fails (out of file descriptors, say): log
//! (the first failure, then at powers of two, so a storm does not flood the log), pause
//! 100 ms and go on. A listener never ends on an accept error.

use std::time::Duration;

#[derive(Debug)]
pub struct AcceptErrors {
    what: &'static str,
    failures: u32,
}

impl AcceptErrors {
    /// `what` names the listener in the log ("control socket", "file sync relay", ...).
    pub fn new(what: &'static str) -> AcceptErrors {
        AcceptErrors { what, failures: 0 }
    }

    /// Unwraps an accept result; on an error, logs, pauses and returns `None` (try again).
    pub async fn check<T>(&mut self, r: std::io::Result<T>) -> Option<T> {
        match r {
            Ok(v) => {
                self.failures = 0;
                Some(v)
            }
            Err(e) => {
                self.failures += 1;
                if self.failures == 1 || self.failures.is_power_of_two() {
                    tracing::warn!("{}: accept failed ({} in a row): {e}; retrying", self.what, self.failures);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                None
            }
        }
    }
}
