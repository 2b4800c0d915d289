//! The HTTP path every request takes: a VU's own keep-alive connection for plain `http://`,
//! the shared `reqwest` client for `https://`.
//!
//! # Why not reqwest for everything
//! A profile of the closed model (see `benches/throughput.sh` and the README's performance
//! section) showed reqwest's per-request overhead in user space: the `Url` → `Uri` conversion
//! re-parses the URL on every send, the client and its connector are cloned per request, the
//! connection pool is a `HashMap` (SipHash) behind a lock that every VU takes twice per
//! request. None of that is needed when each VU keeps its own connection: a VU runs one
//! request at a time, so it never needs more than one connection, and nobody else touches it.
//!
//! So for `http://` URLs a VU holds one HTTP/1.1 connection ([`Connections`], in
//! [`crate::vu::VuContext`]) made with hyper's client connection API, and sends on it a request
//! whose origin-form URI and `Host` header were derived from the URL once ([`Endpoint`]; once
//! per run for a literal URL). Everything else the step does (redirects, cookies, the
//! allow-list, byte counts, checks) happens in [`crate::step`] exactly as before, on top of
//! either path.
//!
//! `https://` keeps the shared `reqwest` client, which carries the TLS options
//! (`insecureSkipTlsVerify`) and a pool of TLS sessions; see [`crate::step::build_client`].
//!
//! # The connection's life
//! A connection is reused only after its previous response was read to the end
//! ([`Connections::finished`]): an exchange abandoned half-way (a timeout, a body error, a
//! cancelled iteration) leaves it marked busy, and the next send closes it and dials a new one,
//! as a pool would. A connection whose server closed it (`Connection: close`, an idle timeout)
//! is found closed before the send and replaced. Dropping [`Connections`] (the VU ends) closes
//! the socket at once rather than leaving it to the server's idle timeout.

use std::fmt;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use reqwest::header::{ACCEPT, HOST, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use tokio::net::TcpStream;
use tokio::task::AbortHandle;
use volley_crds::spec::ErrorKind;

/// `User-Agent` of every request (re-exported as `step::USER_AGENT`).
pub(crate) const USER_AGENT: &str = concat!("volley/", env!("CARGO_PKG_VERSION"));

/// Where a plain-HTTP request goes, derived from its URL once.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    /// Host as in the URL (`[::1]` for IPv6), for connecting and comparing origins.
    host: String,
    port: u16,
    /// `/path?query`: what goes on the request line.
    path: hyper::Uri,
    /// The `Host` header: the host, and the port unless it is the default.
    host_header: HeaderValue,
}

impl Endpoint {
    /// The endpoint of `url`, or `None` when the URL is not plain `http` (TLS goes through
    /// reqwest) or cannot be expressed as a request line (left to reqwest to report).
    pub(crate) fn of(url: &Url) -> Option<Endpoint> {
        if url.scheme() != "http" {
            return None;
        }
        let host = url.host_str()?.to_string();
        let port = url.port_or_known_default()?;
        let mut path =
            String::with_capacity(url.path().len() + url.query().map_or(0, str::len) + 1);
        path.push_str(url.path());
        if let Some(query) = url.query() {
            path.push('?');
            path.push_str(query);
        }
        let path = hyper::Uri::try_from(path).ok()?;
        let host_header = match url.port() {
            Some(port) => HeaderValue::try_from(format!("{host}:{port}")),
            None => HeaderValue::try_from(host.as_str()),
        }
        .ok()?;
        Some(Endpoint {
            host,
            port,
            path,
            host_header,
        })
    }

    fn same_origin(&self, other: &Endpoint) -> bool {
        self.port == other.port && self.host == other.host
    }

    /// Connects to the endpoint: an IP literal directly, a name through the system resolver
    /// (each address in turn, as `reqwest` does without happy eyeballs).
    async fn connect(&self) -> std::io::Result<TcpStream> {
        let stream = match self
            .host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
        {
            Some(v6) => TcpStream::connect((v6, self.port)).await?,
            None => TcpStream::connect((self.host.as_str(), self.port)).await?,
        };
        // Requests are small writes that must go out at once.
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// One VU's keep-alive connection for plain HTTP (see the module documentation).
#[derive(Default)]
pub struct Connections {
    open: Option<Connection>,
}

struct Connection {
    endpoint: Endpoint,
    sender: SendRequest<Full<Bytes>>,
    /// The task driving the connection; aborted when the connection is dropped.
    task: AbortHandle,
    /// A request was sent and its response not yet read to the end.
    busy: bool,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Closes the socket now; otherwise an idle connection would live on in its task.
        self.task.abort();
    }
}

impl Clone for Connections {
    /// A copy of a VU's state starts with no connection: a connection belongs to one VU.
    fn clone(&self) -> Self {
        Connections::default()
    }
}

impl fmt::Debug for Connections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connections")
            .field(
                "open",
                &self
                    .open
                    .as_ref()
                    .map(|c| (&c.endpoint.host, c.endpoint.port)),
            )
            .finish()
    }
}

impl Connections {
    /// Marks the last response as read to the end: the connection may carry the next request.
    pub(crate) fn finished(&mut self) {
        if let Some(conn) = &mut self.open {
            conn.busy = false;
        }
    }

    /// Sends one request and returns its response head (the body is read through
    /// [`Response::chunk`]). `endpoint` is the URL's [`Endpoint`] when the URL is plain HTTP;
    /// otherwise the request goes through `client`. Any failure is `connect`; the caller bounds
    /// the time.
    pub(crate) async fn send(
        &mut self,
        client: &reqwest::Client,
        endpoint: Option<&Endpoint>,
        method: &Method,
        url: &Url,
        mut headers: HeaderMap,
        body: Option<&Bytes>,
    ) -> Result<Response, ErrorKind> {
        let Some(endpoint) = endpoint else {
            let mut request = reqwest::Request::new(method.clone(), url.clone());
            *request.headers_mut() = headers;
            if let Some(body) = body {
                *request.body_mut() = Some(body.clone().into());
            }
            return match client.execute(request).await {
                Ok(response) => Ok(Response::Client(response)),
                Err(e) if e.is_timeout() => Err(ErrorKind::Timeout),
                Err(_) => Err(ErrorKind::Connect),
            };
        };
        // What reqwest's client adds to every request, so both paths send the same head.
        if !headers.contains_key(HOST) {
            headers.insert(HOST, endpoint.host_header.clone());
        }
        if !headers.contains_key(ACCEPT) {
            headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        }
        if !headers.contains_key(reqwest::header::USER_AGENT) {
            headers.insert(
                reqwest::header::USER_AGENT,
                HeaderValue::from_static(USER_AGENT),
            );
        }
        let mut request = hyper::Request::new(Full::new(body.cloned().unwrap_or_default()));
        *request.method_mut() = method.clone();
        *request.uri_mut() = endpoint.path.clone();
        *request.headers_mut() = headers;

        let conn = self.ready(endpoint).await?;
        conn.busy = true;
        match conn.sender.send_request(request).await {
            Ok(response) => Ok(Response::Plain(response)),
            Err(e) => {
                tracing::debug!(error = %e, "request failed on its connection");
                self.open = None;
                Err(ErrorKind::Connect)
            }
        }
    }

    /// The VU's connection to `endpoint`, ready for a request: the open one if it is to the
    /// same origin, idle and still up, else a new one.
    async fn ready(&mut self, endpoint: &Endpoint) -> Result<&mut Connection, ErrorKind> {
        let reusable = self
            .open
            .as_ref()
            .is_some_and(|c| !c.busy && !c.sender.is_closed() && c.endpoint.same_origin(endpoint));
        if reusable && let Some(conn) = &mut self.open {
            // Resolves at once on a live idle connection; fails if the server closed it.
            if conn.sender.ready().await.is_ok() {
                // Re-borrow: returning `conn` from inside the `if let` would keep `self.open`
                // borrowed on the path below.
                return self.open.as_mut().ok_or(ErrorKind::Connect);
            }
        }
        self.open = None;
        let stream = endpoint.connect().await.map_err(|e| {
            tracing::debug!(error = %e, "cannot connect");
            ErrorKind::Connect
        })?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| {
                    tracing::debug!(error = %e, "HTTP handshake failed");
                    ErrorKind::Connect
                })?;
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        })
        .abort_handle();
        Ok(self.open.insert(Connection {
            endpoint: endpoint.clone(),
            sender,
            task,
            busy: false,
        }))
    }
}

/// A response head whose body is still to be read, from either path.
pub(crate) enum Response {
    /// From the VU's own connection.
    Plain(hyper::Response<Incoming>),
    /// From the shared reqwest client.
    Client(reqwest::Response),
}

impl Response {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Response::Plain(r) => r.status(),
            Response::Client(r) => r.status(),
        }
    }

    /// Takes the headers out (they are handed on to checks and extractors).
    pub(crate) fn take_headers(&mut self) -> HeaderMap {
        match self {
            Response::Plain(r) => std::mem::take(r.headers_mut()),
            Response::Client(r) => std::mem::take(r.headers_mut()),
        }
    }

    /// The body's length if known up front (a size hint for the buffer that keeps it).
    pub(crate) fn content_length(&self) -> Option<u64> {
        match self {
            Response::Plain(r) => hyper::body::Body::size_hint(r.body()).exact(),
            Response::Client(r) => r.content_length(),
        }
    }

    /// The next piece of the body; `None` at its end. A broken body is `connect`.
    pub(crate) async fn chunk(&mut self) -> Result<Option<Bytes>, ErrorKind> {
        match self {
            Response::Plain(r) => loop {
                match r.body_mut().frame().await {
                    None => return Ok(None),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "response body broken off");
                        return Err(ErrorKind::Connect);
                    }
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            return Ok(Some(data));
                        }
                        // Trailers: not part of the counted body.
                    }
                }
            },
            Response::Client(r) => match r.chunk().await {
                Ok(chunk) => Ok(chunk),
                Err(e) if e.is_timeout() => Err(ErrorKind::Timeout),
                Err(_) => Err(ErrorKind::Connect),
            },
        }
    }
}
