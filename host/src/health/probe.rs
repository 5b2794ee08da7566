//! One check: a TCP connect (keepalived `TCP_CHECK`), an HTTP GET whose status line is
//! compared with the expected codes (keepalived `HTTP_GET`, and over TLS `SSL_GET`), or a
//! script (keepalived `MISC_CHECK`, [`super::script`]), all within one deadline.
//! Non-blocking tokio I/O only, addresses only (no name resolution).

use super::script::{self, ScriptError};
use crate::config::{CheckKind, HealthConfig, HttpCheck, ScriptCheck};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::TlsConnector;

/// Longest HTTP status line read (bytes).
const MAX_STATUS_LINE: usize = 1024;

/// Why a check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No connection within the timeout.
    ConnectTimeout(Duration),
    /// Connected, but no complete status line within the timeout.
    ResponseTimeout(Duration),
    /// The server refused the connection (nothing listens).
    Refused,
    /// Another socket error (`no route to host`, `connection reset`, …).
    Io(String),
    /// The server closed before sending a status line.
    Closed,
    /// Not an HTTP status line.
    BadResponse(String),
    /// An HTTP status other than the expected ones.
    Status {
        /// What it answered.
        got: u16,
        /// What passes (`200`, `2xx`, …).
        expected: String,
    },
    /// A script check failed: it exited with another status, timed out (and was killed) or
    /// could not run.
    Script(ScriptError),
}

impl Failure {
    /// The `result` label of `ringvs_health_checks_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::ConnectTimeout(_) | Failure::ResponseTimeout(_) => "timeout",
            Failure::Refused => "refused",
            Failure::Status { .. } => "bad_status",
            Failure::Io(_) | Failure::Closed | Failure::BadResponse(_) => "error",
            Failure::Script(ScriptError::Timeout(_)) => "timeout",
            Failure::Script(ScriptError::Spawn(_)) => "error",
            Failure::Script(_) => "bad_status",
        }
    }

    fn io(e: std::io::Error) -> Failure {
        match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Failure::Refused,
            _ => Failure::Io(e.to_string()),
        }
    }
}

fn ms(d: &Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::ConnectTimeout(d) => write!(f, "connect timeout ({})", ms(d)),
            Failure::ResponseTimeout(d) => write!(f, "response timeout ({})", ms(d)),
            Failure::Refused => f.write_str("connection refused"),
            Failure::Io(e) => f.write_str(e),
            Failure::Closed => f.write_str("closed without a response"),
            Failure::BadResponse(s) => write!(f, "not an HTTP response: {s:?}"),
            Failure::Status { got, expected } => write!(f, "HTTP {got} (expected {expected})"),
            Failure::Script(e) => write!(f, "{e}"),
        }
    }
}

/// Runs one check of realserver `server` of `service` with `cfg`: `Ok(Some(weight))` when a
/// dynamic script check passed with a weight (exit status 2 to 255: weight status − 2).
pub async fn check(
    service: &str,
    server: SocketAddr,
    cfg: &HealthConfig,
) -> Result<Option<u32>, Failure> {
    let target = cfg.target(server);
    match &cfg.kind {
        CheckKind::Script(s) => {
            let env = [
                ("RINGVS_SERVICE", service.to_string()),
                ("RINGVS_SERVER", server.to_string()),
                ("RINGVS_SERVER_IP", server.ip().to_string()),
                ("RINGVS_SERVER_PORT", server.port().to_string()),
                ("RINGVS_TARGET", target.to_string()),
            ];
            run_script(s, &env, cfg.timeout).await
        }
        kind => probe(target, kind, cfg.timeout).await.map(|()| None),
    }
}

/// A script check: exit 0 passes; with `dynamic`, 1 fails and 2 to 255 pass with a weight.
async fn run_script(
    s: &ScriptCheck,
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<Option<u32>, Failure> {
    match script::run(&s.command, env, &s.user, timeout, s.dynamic).await {
        Ok(0) => Ok(None),
        Ok(code) if code >= 2 => Ok(Some(code as u32 - 2)),
        Ok(code) => Err(Failure::Script(ScriptError::Exit(code, String::new()))),
        Err(e) => Err(Failure::Script(e)),
    }
}

/// Runs one check of `kind` against `target`, bounded by `timeout` from start to verdict (a
/// script check with only `RINGVS_TARGET` in its environment).
pub async fn probe(target: SocketAddr, kind: &CheckKind, timeout: Duration) -> Result<(), Failure> {
    if let CheckKind::Script(s) = kind {
        return run_script(s, &[("RINGVS_TARGET", target.to_string())], timeout)
            .await
            .map(|_| ());
    }
    let deadline = Instant::now() + timeout;
    let mut stream = match timeout_at(deadline, TcpStream::connect(target)).await {
        Err(_) => return Err(Failure::ConnectTimeout(timeout)),
        Ok(Err(e)) => return Err(Failure::io(e)),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    match kind {
        CheckKind::Tcp | CheckKind::Script(_) => Ok(()),
        CheckKind::Http(h) if h.tls => match timeout_at(deadline, https(stream, target, h)).await {
            Err(_) => Err(Failure::ResponseTimeout(timeout)),
            Ok(r) => r,
        },
        CheckKind::Http(h) => match timeout_at(deadline, http(&mut stream, target, h)).await {
            Err(_) => Err(Failure::ResponseTimeout(timeout)),
            Ok(r) => r,
        },
    }
}

/// Accepts any certificate, as keepalived's `SSL_GET` does by default (realservers behind a
/// director mostly carry self-signed or internal ones): a check asks "does it answer", not
/// "is it who it says". The handshake's own signatures are still verified, with the
/// provider's algorithms.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// rustls's ring provider. rustls 0.23.48 deprecates it for having no post-quantum key
/// exchange; that is irrelevant to a health check on the director's own network, and ring
/// builds with a C compiler alone (aws-lc-rs wants more toolchain).
#[allow(deprecated)]
pub(crate) fn ring_provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The TLS client of every HTTPS check (built once: ring's provider, TLS 1.2 and 1.3).
fn tls_client() -> &'static Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let provider = Arc::new(ring_provider());
        let config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        Arc::new(config)
    })
}

/// The name the TLS handshake carries: `host` when it is a DNS name (sent as SNI), else the
/// checked address (no SNI).
fn server_name(target: SocketAddr, h: &HttpCheck) -> ServerName<'static> {
    h.host
        .as_deref()
        .and_then(|n| ServerName::try_from(n.to_string()).ok())
        .filter(|n| matches!(n, ServerName::DnsName(_)))
        .unwrap_or_else(|| ServerName::IpAddress(target.ip().into()))
}

/// An HTTP check over TLS (keepalived `SSL_GET`).
async fn https(stream: TcpStream, target: SocketAddr, h: &HttpCheck) -> Result<(), Failure> {
    let connector = TlsConnector::from(tls_client().clone());
    let mut tls = connector
        .connect(server_name(target, h), stream)
        .await
        .map_err(|e| Failure::Io(format!("TLS handshake: {e}")))?;
    let r = http(&mut tls, target, h).await;
    // Best effort: a close_notify, as a well-behaved client sends.
    let _ = tls.shutdown().await;
    r
}

/// The request keepalived's HTTP_GET sends, in HTTP/1.0 with `Connection: close`.
pub fn request(target: SocketAddr, h: &HttpCheck) -> String {
    let host = h.host.clone().unwrap_or_else(|| target.to_string());
    format!(
        "GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: ringvs-health/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        h.path,
        env!("CARGO_PKG_VERSION")
    )
}

async fn http<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    target: SocketAddr,
    h: &HttpCheck,
) -> Result<(), Failure> {
    stream
        .write_all(request(target, h).as_bytes())
        .await
        .map_err(Failure::io)?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let status = status_code(&buf[..end])?;
            return if h.passes(status) {
                Ok(())
            } else {
                Err(Failure::Status {
                    got: status,
                    expected: h.expected(),
                })
            };
        }
        if buf.len() >= MAX_STATUS_LINE {
            return Err(Failure::BadResponse(preview(&buf)));
        }
        let n = stream.read(&mut chunk).await.map_err(Failure::io)?;
        if n == 0 {
            return Err(if buf.is_empty() {
                Failure::Closed
            } else {
                Failure::BadResponse(preview(&buf))
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn preview(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(40)]).into_owned()
}

/// The code of a status line `HTTP/1.x NNN reason`.
pub fn status_code(line: &[u8]) -> Result<u16, Failure> {
    let text = std::str::from_utf8(line).map_err(|_| Failure::BadResponse(preview(line)))?;
    let mut parts = text.trim_end().split(' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/") || code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(Failure::BadResponse(preview(line)));
    }
    match code.parse::<u16>() {
        Ok(c) if (100..=599).contains(&c) => Ok(c),
        _ => Err(Failure::BadResponse(preview(line))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r"), Ok(200));
        assert_eq!(status_code(b"HTTP/1.0 503 Service Unavailable"), Ok(503));
        assert_eq!(status_code(b"HTTP/1.1 204"), Ok(204));
        for bad in [
            &b"SSH-2.0-OpenSSH_9.6"[..],
            b"HTTP/1.1 20 OK",
            b"HTTP/1.1 2000 OK",
            b"HTTP/1.1 abc OK",
            b"HTTP/1.1 999 Nope",
            b"\xff\xfe",
            b"",
        ] {
            assert!(
                matches!(status_code(bad), Err(Failure::BadResponse(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn expected_codes() {
        let mut h = HttpCheck {
            path: "/".into(),
            expect: vec![],
            host: None,
            tls: false,
        };
        assert!(h.passes(200) && h.passes(204) && !h.passes(301) && !h.passes(500));
        assert_eq!(h.expected(), "2xx");
        h.expect = vec![200, 301];
        assert!(h.passes(301) && !h.passes(204));
        assert_eq!(h.expected(), "200 or 301");
    }

    #[test]
    fn the_request_names_path_and_host() {
        let t: SocketAddr = "10.77.1.1:8080".parse().unwrap();
        let mut h = HttpCheck {
            path: "/health?x=1".into(),
            expect: vec![200],
            host: None,
            tls: false,
        };
        let r = request(t, &h);
        assert!(
            r.starts_with("GET /health?x=1 HTTP/1.0\r\nHost: 10.77.1.1:8080\r\n"),
            "{r}"
        );
        assert!(r.ends_with("Connection: close\r\n\r\n"), "{r}");
        h.host = Some("www.example.com".into());
        assert!(request(t, &h).contains("\r\nHost: www.example.com\r\n"));
    }

    #[test]
    fn failures_read_well_and_have_bounded_labels() {
        let f = Failure::Status {
            got: 500,
            expected: "200".into(),
        };
        assert_eq!(f.to_string(), "HTTP 500 (expected 200)");
        assert_eq!(f.label(), "bad_status");
        assert_eq!(
            Failure::ConnectTimeout(Duration::from_millis(1500)).to_string(),
            "connect timeout (1500ms)"
        );
        assert_eq!(
            Failure::ResponseTimeout(Duration::from_secs(1)).to_string(),
            "response timeout (1s)"
        );
        assert_eq!(Failure::Refused.label(), "refused");
        assert_eq!(Failure::Closed.label(), "error");
    }

    #[test]
    fn script_failures_have_the_check_labels() {
        let t = Failure::Script(ScriptError::Timeout(Duration::from_millis(100)));
        assert_eq!(
            (t.label(), t.to_string().as_str()),
            ("timeout", "script timeout (100ms), killed")
        );
        let x = Failure::Script(ScriptError::Exit(1, "no".into()));
        assert_eq!(
            (x.label(), x.to_string().as_str()),
            ("bad_status", "script exit 1: no")
        );
        assert_eq!(
            Failure::Script(ScriptError::Signal(9)).label(),
            "bad_status"
        );
        assert_eq!(
            Failure::Script(ScriptError::Spawn("x".into())).label(),
            "error"
        );
    }

    /// A TLS server with a fresh self-signed certificate on 127.0.0.1: answers `GET /ok`
    /// with 200 and anything else with 503, and sends what it read (decrypted) to `seen`.
    async fn tls_server() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
        use rustls::pki_types::PrivateKeyDer;
        let key = rcgen::generate_simple_self_signed(vec!["rs1.example".to_string()]).unwrap();
        let der = PrivateKeyDer::try_from(key.signing_key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(ring_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![key.cert.der().clone()], der)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let sni = tls.get_ref().1.server_name().map(str::to_string);
                    let mut buf = vec![0u8; 1024];
                    let n = tls.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let status = if req.starts_with("GET /ok ") {
                        200
                    } else {
                        503
                    };
                    let _ = tx.send(format!("sni={sni:?} {req}"));
                    let answer = format!("HTTP/1.0 {status} X\r\nContent-Length: 0\r\n\r\n");
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (addr, rx)
    }

    fn https(path: &str, host: Option<&str>) -> CheckKind {
        CheckKind::Http(HttpCheck {
            path: path.into(),
            expect: vec![],
            host: host.map(str::to_string),
            tls: true,
        })
    }

    #[tokio::test]
    async fn https_checks_speak_tls_to_a_self_signed_server() {
        let (addr, mut seen) = tls_server().await;
        let t = Duration::from_secs(5);
        probe(addr, &https("/ok", None), t).await.unwrap();
        let req = seen.recv().await.unwrap();
        assert!(req.starts_with("sni=None GET /ok HTTP/1.0\r\n"), "{req}");
        // A DNS name in `host` goes out as SNI and as the Host header.
        probe(addr, &https("/ok", Some("rs1.example")), t)
            .await
            .unwrap();
        let req = seen.recv().await.unwrap();
        assert!(
            req.starts_with("sni=Some(\"rs1.example\") GET /ok"),
            "{req}"
        );
        assert!(req.contains("\r\nHost: rs1.example\r\n"), "{req}");
        assert_eq!(
            probe(addr, &https("/down", None), t).await,
            Err(Failure::Status {
                got: 503,
                expected: "2xx".into()
            })
        );
        // Plain HTTP to the TLS server is not a response; HTTPS to a plain server fails the
        // handshake.
        let plain = CheckKind::Http(HttpCheck {
            tls: false,
            ..match https("/ok", None) {
                CheckKind::Http(h) => h,
                _ => unreachable!(),
            }
        });
        assert!(probe(addr, &plain, t).await.is_err());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain_addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await;
            }
        });
        match probe(plain_addr, &https("/ok", None), t).await {
            Err(Failure::Io(e)) => assert!(e.starts_with("TLS handshake"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
