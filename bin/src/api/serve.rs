//! The API's listener: our own accept loop around hyper (instead of `axum::serve`) so that the
//! port gets what every listener of the daemon has: a cap on connections (a flood waits in the
//! kernel's backlog instead of taking the daemon's file descriptors), a deadline for the TLS
//! handshake and for each request's headers (a silent or slow client is cut), accept errors
//! logged and retried; and optional TLS with rustls.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_rustls::rustls;

/// The bounds of one listener.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once per address: a page, a few scripts, load balancers' checks
    /// and event streams fit with room to spare.
    pub connections: usize,
    /// A client must send a request's headers within this (also between keep-alive requests),
    /// and finish a TLS handshake within it.
    pub headers_within: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { connections: 128, headers_within: Duration::from_secs(10) }
    }
}

/// The certificate chain and key, read and checked at start (an error names the file).
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("api.tls_cert_file {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("api.tls_cert_file {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("api.tls_cert_file {}: no PEM certificate in it", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("api.tls_key_file {}: {e}", key.display()))?;
    // The provider named, not left to rustls' process default.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("api: TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("api.tls_key_file: does not match the certificate or is not usable: {e}"))?;
    Ok(Arc::new(config))
}

/// Binds now (a port in use is an error at start), then serves until the daemon ends.
pub async fn listen(addr: SocketAddr, app: Router, tls: Option<Arc<rustls::ServerConfig>>, limits: Limits) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("api: listening on {addr}: {e}"))?;
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(limits.connections));
        let mut errors = ridondato_adapters::accept::AcceptErrors::new("HTTP API");
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            let Some((tcp, _)) = errors.check(listener.accept().await).await else { continue };
            let (app, acceptor) = (app.clone(), acceptor.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let _ = tcp.set_nodelay(true);
                match acceptor {
                    None => connection(TokioIo::new(tcp), app, limits).await,
                    Some(a) => match tokio::time::timeout(limits.headers_within, a.accept(tcp)).await {
                        Ok(Ok(tls)) => connection(TokioIo::new(tls), app, limits).await,
                        Ok(Err(e)) => tracing::debug!("api: TLS handshake: {e}"),
                        Err(_) => tracing::debug!("api: TLS handshake not done in time"),
                    },
                }
            });
        }
    });
    Ok(())
}

async fn connection<I>(io: TokioIo<I>, app: Router, limits: Limits)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.headers_within);
    if let Err(e) = http.serve_connection(io, TowerToHyperService::new(app)).await {
        tracing::debug!("api connection: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn app() -> Router {
        Router::new().route("/health", axum::routing::get(|| async { "ok" }))
    }

    /// Reads until the server closes (Ok) or `within` passes (Err).
    async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> Result<Vec<u8>, ()> {
        let mut all = Vec::new();
        let mut buf = [0u8; 1024];
        tokio::time::timeout(within, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return all,
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .map_err(|_| ())
    }

    const QUICK: Limits = Limits { connections: 4, headers_within: Duration::from_secs(1) };

    async fn free_port() -> SocketAddr {
        let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("port");
        probe.local_addr().expect("addr")
    }

    #[tokio::test]
    async fn a_silent_client_is_cut_and_a_flood_waits_for_a_slot() {
        let addr = free_port().await;
        listen(addr, app(), None, QUICK).await.expect("listen");
        // Every slot taken by silent connections: the next client waits, it is not refused.
        let mut silent = Vec::new();
        for _ in 0..QUICK.connections {
            silent.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
        }
        let mut late = tokio::net::TcpStream::connect(addr).await.expect("backlog");
        late.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.expect("send");
        // The silent ones are cut at the header deadline, which frees a slot for the late one.
        let answer = closed_within(&mut late, Duration::from_secs(5)).await.expect("answered after the cut");
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
        assert!(closed_within(&mut silent[0], Duration::from_secs(2)).await.is_ok(), "a silent connection is closed");
        // An idle keep-alive connection is cut too, after its first answer.
        let mut idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
        idle.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("send");
        let got = closed_within(&mut idle, Duration::from_secs(5)).await.expect("idle connection cut");
        assert!(String::from_utf8_lossy(&got).contains("200 OK"), "{}", String::from_utf8_lossy(&got));
    }

    #[tokio::test]
    async fn tls_serves_with_the_configured_certificate_and_names_a_bad_file() {
        let dir = std::env::temp_dir().join(format!("ridondato-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        let (cert_file, key_file) = (dir.join("api.crt"), dir.join("api.key"));
        std::fs::write(&cert_file, cert.cert.pem()).expect("write");
        std::fs::write(&key_file, cert.key_pair.serialize_pem()).expect("write");
        let addr = free_port().await;
        listen(addr, app(), Some(tls_config(&cert_file, &key_file).expect("tls")), QUICK).await.expect("listen");
        let url = format!("https://localhost:{}/health", addr.port());
        let body = tokio::task::spawn_blocking(move || {
            let agent = crate::client::agent(Some(&cert_file)).map_err(|e| format!("{e:?}"))?;
            let trusted = agent.get(&url).call().map_err(|e| e.to_string())?.body_mut().read_to_string().map_err(|e| e.to_string())?;
            // Without the certificate trusted, the handshake fails.
            let untrusted = crate::client::agent(None).map_err(|e| format!("{e:?}"))?.get(&url).call().is_err();
            Ok::<_, String>((trusted, untrusted))
        })
        .await
        .expect("join");
        assert_eq!(body, Ok(("ok".to_string(), true)));
        let e = tls_config(&dir.join("api.key"), &dir.join("api.key")).expect_err("a key is not a certificate");
        assert!(e.contains("api.tls_cert_file") && e.contains("no PEM certificate"), "{e}");
        let e = tls_config(&dir.join("api.crt"), &dir.join("api.crt")).expect_err("a certificate is not a key");
        assert!(e.contains("api.tls_key_file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
