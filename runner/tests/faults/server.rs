//! A fault-injecting HTTP/1.1 server on 127.0.0.1, written on raw sockets so that it can
//! misbehave in ways an HTTP framework never would: reset a connection mid-response, trickle
//! its headers, promise more body than it sends, answer bytes that are not HTTP, or accept and
//! never answer. It can stop and start again on the same port, and serve TLS with a
//! self-signed certificate.
//!
//! What it does for each request is decided by a [`Plan`], from the request's number (0-based,
//! counted across connections and restarts when the [`Stats`] are shared), so a test can script
//! bursts by count instead of by wall time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// What the server does with one request (after reading its head and body).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `200 OK` with a short body; the connection is kept alive.
    Ok,
    /// This status with a short body; the connection is kept alive.
    Status(u16),
    /// Resets the connection (`SO_LINGER` 0, so the peer gets a TCP RST) without answering.
    ResetBeforeResponse,
    /// Sends the head and 50 of the 100 body bytes it announces, then resets the connection.
    ResetMidBody,
    /// Answers `200 OK` (no `connection: close`), then closes the connection: a keep-alive
    /// connection the client may try to reuse is gone.
    CloseAfterResponse,
    /// Answers `200 OK`, then closes the connection unless the next request arrives within
    /// this idle time (as servers with a keep-alive timeout do, e.g. nginx's
    /// `keepalive_timeout`), without saying so.
    IdleClose(Duration),
    /// Waits this long before answering `200 OK`.
    SlowHeaders(Duration),
    /// Sends the `200 OK` head one byte at a time, pausing this long before each byte.
    TrickleHeaders(Duration),
    /// Never answers; the connection stays open until the client closes it.
    NeverAnswer,
    /// Announces a 100-byte body, sends 10 bytes, then closes the connection (FIN).
    TruncatedBodyClose,
    /// Announces a 100-byte body, sends 10 bytes, then holds the connection open.
    TruncatedBodyHold,
    /// Answers bytes that are not HTTP at all, then holds the connection.
    Garbage,
    /// A status line whose code is not a number, then holds the connection.
    BadStatusLine,
    /// A chunked body whose chunk size is not hexadecimal, then holds the connection.
    BadChunk,
    /// A 1 MiB header line (more than any client buffers), then holds the connection.
    HugeHeader,
}

/// Decides the fault for request number `n`.
pub type Plan = Arc<dyn Fn(u64) -> Fault + Send + Sync>;

/// The same fault for every request.
pub fn always(fault: Fault) -> Plan {
    Arc::new(move |_| fault)
}

/// What the server saw. Shared across a stop and restart when passed to [`FaultServer::start`].
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections open right now (server side).
    pub open: AtomicU64,
    /// Request heads read.
    pub requests: AtomicU64,
    /// Complete responses written (any status).
    pub answered: AtomicU64,
    /// TLS handshakes that failed.
    pub tls_failures: AtomicU64,
}

impl Stats {
    /// Reads one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }
}

/// A running fault server. Dropping it does not stop it: call [`FaultServer::stop`].
pub struct FaultServer {
    addr: SocketAddr,
    stats: Arc<Stats>,
    accept: JoinHandle<()>,
    connections: Arc<Mutex<JoinSet<()>>>,
}

impl FaultServer {
    /// Starts a plain-HTTP server on `127.0.0.1:port` (0: any free port).
    pub async fn start(port: u16, plan: Plan, stats: Arc<Stats>) -> FaultServer {
        Self::start_with(port, plan, stats, None).await
    }

    /// Starts a TLS server on any free port of 127.0.0.1 with a new self-signed certificate
    /// for `127.0.0.1` and `localhost`.
    pub async fn start_tls(plan: Plan) -> FaultServer {
        Self::start_with(0, plan, Arc::default(), Some(self_signed_acceptor())).await
    }

    async fn start_with(
        port: u16,
        plan: Plan,
        stats: Arc<Stats>,
        tls: Option<TlsAcceptor>,
    ) -> FaultServer {
        let socket = TcpSocket::new_v4().expect("socket");
        // A restart binds the port its predecessor used; its closed connections may linger.
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
        let listener = socket.listen(1024).expect("listen");
        let addr = listener.local_addr().expect("local addr");
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let accept = {
            let (stats, connections) = (stats.clone(), connections.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        // E.g. out of file descriptors: do not spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    stats.accepted.fetch_add(1, Ordering::SeqCst);
                    let open = OpenGuard::new(stats.clone());
                    let (plan, stats, tls) = (plan.clone(), stats.clone(), tls.clone());
                    let task = async move {
                        let _open = open;
                        let _ = stream.set_nodelay(true);
                        match tls {
                            None => serve(stream, &plan, &stats, reset_tcp).await,
                            Some(tls) => match tls.accept(stream).await {
                                Ok(stream) => serve(stream, &plan, &stats, reset_tls).await,
                                Err(_) => {
                                    stats.tls_failures.fetch_add(1, Ordering::SeqCst);
                                }
                            },
                        }
                    };
                    connections
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .spawn(task);
                }
            })
        };
        FaultServer {
            addr,
            stats,
            accept,
            connections,
        }
    }

    /// `http://127.0.0.1:PORT` (or `https://`).
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// What it saw.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Stops accepting, closes every connection (in-flight requests included) and waits
    /// until the port is free again.
    pub async fn stop(self) {
        self.accept.abort();
        let _ = self.accept.await;
        let mut connections = std::mem::take(
            &mut *self
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        connections.shutdown().await;
    }
}

/// Counts a connection as open while it lives (an aborted task drops it too).
struct OpenGuard(Arc<Stats>);

impl OpenGuard {
    fn new(stats: Arc<Stats>) -> Self {
        stats.open.fetch_add(1, Ordering::SeqCst);
        OpenGuard(stats)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Closes a TCP connection with a RST instead of a FIN.
fn reset_tcp(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

fn reset_tls(stream: tokio_rustls::server::TlsStream<TcpStream>) {
    let (tcp, _) = stream.into_inner();
    reset_tcp(tcp);
}

/// A TLS acceptor with a fresh self-signed certificate for `127.0.0.1` and `localhost`.
fn self_signed_acceptor() -> TlsAcceptor {
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("self-signed certificate");
    let cert = key.cert.der().clone();
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(
        rustls::pki_types::PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()),
    );
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], private)
        .expect("TLS server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// Largest request head it reads; the client never sends more.
const MAX_HEAD: usize = 64 * 1024;

/// Serves requests on one connection until the client closes it or a fault ends it.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    plan: &Plan,
    stats: &Stats,
    reset: fn(S),
) {
    let mut buf = Vec::with_capacity(4096);
    let mut idle = None;
    loop {
        let read = read_request(&mut stream, &mut buf);
        let got = match idle.take() {
            Some(limit) => tokio::time::timeout(limit, read).await.unwrap_or(false),
            None => read.await,
        };
        if !got {
            return;
        }
        let n = stats.requests.fetch_add(1, Ordering::SeqCst);
        let fault = plan(n);
        match fault {
            Fault::Ok | Fault::Status(_) | Fault::SlowHeaders(_) => {
                if let Fault::SlowHeaders(pause) = fault {
                    tokio::time::sleep(pause).await;
                }
                let status = match fault {
                    Fault::Status(code) => code,
                    _ => 200,
                };
                if stream.write_all(&response(status)).await.is_err() {
                    return;
                }
                stats.answered.fetch_add(1, Ordering::SeqCst);
            }
            Fault::IdleClose(limit) => {
                if stream.write_all(&response(200)).await.is_err() {
                    return;
                }
                stats.answered.fetch_add(1, Ordering::SeqCst);
                idle = Some(limit);
            }
            Fault::CloseAfterResponse => {
                if stream.write_all(&response(200)).await.is_err() {
                    return;
                }
                stats.answered.fetch_add(1, Ordering::SeqCst);
                let _ = stream.shutdown().await;
                return;
            }
            Fault::TrickleHeaders(every) => {
                for byte in response(200) {
                    tokio::time::sleep(every).await;
                    if stream.write_all(&[byte]).await.is_err() {
                        return;
                    }
                    let _ = stream.flush().await;
                }
                stats.answered.fetch_add(1, Ordering::SeqCst);
            }
            Fault::ResetBeforeResponse => return reset(stream),
            Fault::ResetMidBody => {
                let mut partial = head(200, "content-length: 100\r\n").into_bytes();
                partial.extend_from_slice(&[b'x'; 50]);
                let _ = stream.write_all(&partial).await;
                let _ = stream.flush().await;
                // Let the head reach the client first, so the reset hits the body.
                tokio::time::sleep(Duration::from_millis(20)).await;
                return reset(stream);
            }
            Fault::TruncatedBodyClose | Fault::TruncatedBodyHold => {
                let mut partial = head(200, "content-length: 100\r\n").into_bytes();
                partial.extend_from_slice(&[b'x'; 10]);
                let _ = stream.write_all(&partial).await;
                let _ = stream.flush().await;
                if fault == Fault::TruncatedBodyClose {
                    let _ = stream.shutdown().await;
                    return;
                }
                return hold(stream).await;
            }
            Fault::NeverAnswer => return hold(stream).await,
            Fault::Garbage | Fault::BadStatusLine | Fault::BadChunk | Fault::HugeHeader => {
                let bytes = match fault {
                    Fault::Garbage => b"SSH-2.0-OpenSSH_9.6 this is not HTTP\r\n\r\n".to_vec(),
                    Fault::BadStatusLine => {
                        b"HTTP/1.1 2x0 OK\r\ncontent-length: 0\r\n\r\n".to_vec()
                    }
                    Fault::BadChunk => {
                        let mut r = head(200, "transfer-encoding: chunked\r\n").into_bytes();
                        r.extend_from_slice(b"zz\r\nhello\r\n0\r\n\r\n");
                        r
                    }
                    _ => {
                        let mut r = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
                        r.resize(r.len() + 1024 * 1024, b'a');
                        r.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
                        r
                    }
                };
                let _ = stream.write_all(&bytes).await;
                let _ = stream.flush().await;
                return hold(stream).await;
            }
        }
    }
}

/// Reads (and discards) everything until the client closes the connection.
async fn hold<S: AsyncRead + Unpin>(mut stream: S) {
    let mut sink = [0u8; 4096];
    while let Ok(n) = stream.read(&mut sink).await {
        if n == 0 {
            return;
        }
    }
}

/// Reads one request (head, and a body by `content-length`) into `buf`, keeping what follows
/// it. False when the client closed the connection (or sent something that is not HTTP).
async fn read_request<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> bool {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD || !read_more(stream, buf).await {
            return false;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let body = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + body {
        if !read_more(stream, buf).await {
            return false;
        }
    }
    buf.drain(..head_end + body);
    true
}

async fn read_more<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// A status line and `extra` header lines, ending the head.
fn head(status: u16, extra: &str) -> String {
    let reason = if status == 200 { "OK" } else { "Fault" };
    format!("HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\n{extra}\r\n")
}

/// A complete response with a short body.
fn response(status: u16) -> Vec<u8> {
    let body = if status == 200 { "ok\n" } else { "fault\n" };
    let mut r = head(status, &format!("content-length: {}\r\n", body.len())).into_bytes();
    r.extend_from_slice(body.as_bytes());
    r
}
