//! For tests and benchmarks: an HTTP proxy in front of the moto server that fails chosen EC2
//! calls the way AWS does (throttling, 503, a refusal with its code), so retries and error
//! reports are exercised against the real SDK. One request per connection, as moto's own
//! server answers (`Connection: close`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How a matching call is answered instead of being passed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 400 `RequestLimitExceeded`: AWS's throttling, to be retried.
    Throttle,
    /// HTTP 503 `Unavailable`: a server error, to be retried.
    Unavailable,
    /// HTTP 403 `UnauthorizedOperation` with this message: not to be retried.
    Deny(String),
}

#[derive(Debug, Default)]
struct Rules {
    /// Per EC2 action (`AssociateAddress`…): the faults still to give, in order; a rule with
    /// `None` as count gives its fault for ever.
    faults: BTreeMap<String, (Fault, Option<u32>)>,
    /// Calls seen per action, failed or passed on.
    seen: BTreeMap<String, u32>,
}

#[derive(Clone, Debug)]
pub struct FaultProxy {
    pub addr: SocketAddr,
    rules: Arc<Mutex<Rules>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

impl FaultProxy {
    /// Listens on `bind` (port 0: any) and passes calls on to `upstream`.
    pub async fn start(bind: SocketAddr, upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let rules = Arc::new(Mutex::new(Rules::default()));
        let r = rules.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let r = r.clone();
                tokio::spawn(async move {
                    let _ = serve(conn, upstream, r).await;
                });
            }
        });
        Ok(FaultProxy { addr, rules, task: Arc::new(task) })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next `count` calls of `action` (`None`: all of them) get `fault`.
    pub fn fail(&self, action: &str, fault: Fault, count: Option<u32>) {
        self.lock().faults.insert(action.into(), (fault, count));
    }

    pub fn heal(&self) {
        self.lock().faults.clear();
    }

    /// Calls of `action` seen so far.
    pub fn seen(&self, action: &str) -> u32 {
        self.lock().seen.get(action).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rules> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn serve(mut conn: TcpStream, upstream: SocketAddr, rules: Arc<Mutex<Rules>>) -> std::io::Result<()> {
    let request = read_request(&mut conn).await?;
    let body = String::from_utf8_lossy(&request[header_end(&request).unwrap_or(0)..]).into_owned();
    let action = body.split('&').find_map(|kv| kv.strip_prefix("Action=")).unwrap_or("").to_string();
    let fault = {
        let mut r = rules.lock().unwrap_or_else(|p| p.into_inner());
        *r.seen.entry(action.clone()).or_default() += 1;
        match r.faults.get_mut(&action) {
            Some((f, None)) => Some(f.clone()),
            Some((f, Some(n))) if *n > 0 => {
                *n -= 1;
                Some(f.clone())
            }
            _ => None,
        }
    };
    let response = match fault {
        Some(f) => answer(&f),
        None => {
            let mut up = TcpStream::connect(upstream).await?;
            up.write_all(&request).await?;
            let mut out = Vec::new();
            up.read_to_end(&mut out).await?;
            out
        }
    };
    conn.write_all(&response).await?;
    conn.shutdown().await
}

fn answer(f: &Fault) -> Vec<u8> {
    let (status, code, msg) = match f {
        Fault::Throttle => ("400 Bad Request", "RequestLimitExceeded", "Request limit exceeded.".to_string()),
        Fault::Unavailable => ("503 Service Unavailable", "Unavailable", "The service is unavailable.".to_string()),
        Fault::Deny(m) => ("403 Forbidden", "UnauthorizedOperation", m.clone()),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{msg}</Message></Error></Errors><RequestID>fault-proxy</RequestID></Response>"
    );
    format!("HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).into_bytes()
}

fn header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// One whole request: the headers, then `Content-Length` bytes of body.
async fn read_request(conn: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = header_end(&buf) {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
            if buf.len() >= end + len {
                return Ok(buf);
            }
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
