//! The metrics endpoint: `GET /metrics` and `GET /health` over HTTP/1.1.
//!
//! Owns one accept thread, one listening socket and at most `MAX_CONNECTIONS`
//! connection threads. Connections are served concurrently, each with a hard
//! deadline and a request-size cap, so an idle or slow client delays nobody:
//! a scrape never waits behind another connection. When every slot is taken,
//! the oldest connection is shut down to make room for the new one, so even a
//! client holding `MAX_CONNECTIONS` idle sockets cannot lock a scraper out, and
//! the endpoint never allocates or spawns without bound. It must never touch
//! worker state except by taking a `MetricsHub` snapshot, once per scrape.
//!
//! Requests are parsed with `httparse`. The body is OpenMetrics text
//! (`metrics::CONTENT_TYPE`) because that is what prometheus-client writes;
//! labelling it `text/plain; version=0.0.4` would make Prometheus read it with
//! the older parser, which rejects the `unknown` type it uses.
//!
//! Also owns `fetch_metrics`, the client used by `intentra status`.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use intentra::metrics::{self, MetricsHub};

/// Largest request head we read; a scrape request is a few hundred bytes.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Total time one connection may take, from accept to the last byte written.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(2);
/// Connections served at once; a new one past this evicts the oldest.
pub const MAX_CONNECTIONS: usize = 16;
/// Stack of a connection thread: the request buffer plus httparse and a format call.
const CONNECTION_STACK_BYTES: usize = 128 * 1024;
/// How often the accept loop checks for shutdown.
const SHUTDOWN_POLL_MS: u16 = 100;
/// Largest response `fetch_metrics` accepts.
const MAX_RESPONSE_BYTES: u64 = 64 << 20;
const MAX_HEADERS: usize = 32;

/// A running metrics endpoint. Dropping it shuts it down.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, shuts down open connections and joins the accept
    /// thread (within about 100 ms).
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Binds `listen` and serves the hub's snapshots on a new thread.
/// Errors (address in use, permission) name the address.
pub fn spawn_metrics_server(
    listen: SocketAddr,
    hub: MetricsHub,
    per_peer: bool,
) -> io::Result<MetricsServer> {
    let named = |err: io::Error, what: &str| {
        io::Error::new(
            err.kind(),
            format!("metrics endpoint {listen}: {what}: {err}"),
        )
    };
    let listener = TcpListener::bind(listen).map_err(|e| named(e, "cannot listen"))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| named(e, "cannot read bound address"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("intentra-metrics".to_owned())
        .spawn(move || accept_loop(&listener, &hub, per_peer, &thread_stop))
        .map_err(|e| named(e, "cannot start thread"))?;
    Ok(MetricsServer {
        local_addr,
        stop,
        thread: Some(thread),
    })
}

/// The connections being served, oldest first: a clone of each stream, so the
/// accept loop can shut one down to make room (its thread then sees EOF or an
/// error and exits at once).
#[derive(Default)]
struct Connections {
    next_id: u64,
    open: VecDeque<(u64, TcpStream)>,
}

impl Connections {
    /// Registers a new connection, evicting the oldest if every slot is taken.
    fn admit(&mut self, stream: &TcpStream) -> io::Result<u64> {
        let clone = stream.try_clone()?;
        while self.open.len() >= MAX_CONNECTIONS {
            if let Some((_, oldest)) = self.open.pop_front() {
                let _ = oldest.shutdown(std::net::Shutdown::Both);
            }
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.open.push_back((id, clone));
        Ok(id)
    }

    fn release(&mut self, id: u64) {
        self.open.retain(|(open, _)| *open != id);
    }

    fn shutdown_all(&mut self) {
        for (_, stream) in self.open.drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn lock(connections: &Mutex<Connections>) -> std::sync::MutexGuard<'_, Connections> {
    // The table holds plain sockets; a panicking connection thread cannot tear it.
    connections
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn accept_loop(listener: &TcpListener, hub: &MetricsHub, per_peer: bool, stop: &AtomicBool) {
    let connections = Arc::new(Mutex::new(Connections::default()));
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(SHUTDOWN_POLL_MS)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(err) => {
                tracing::error!(error = %err, "metrics endpoint: poll failed; endpoint stopped");
                break;
            }
        }
        match listener.accept() {
            Ok((stream, _peer)) => spawn_connection(stream, hub, per_peer, &connections),
            // EMFILE and friends: back off instead of spinning on a full fd table.
            Err(err) => {
                tracing::warn!(error = %err, "metrics endpoint: accept failed");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    lock(&connections).shutdown_all();
}

/// Serves one connection on a thread of its own, within the connection bound.
fn spawn_connection(
    stream: TcpStream,
    hub: &MetricsHub,
    per_peer: bool,
    connections: &Arc<Mutex<Connections>>,
) {
    let Ok(id) = lock(connections).admit(&stream) else {
        return; // no descriptor for the clone: drop this client
    };
    let hub = hub.clone();
    let table = Arc::clone(connections);
    let spawned = std::thread::Builder::new()
        .name("intentra-metrics-conn".to_owned())
        .stack_size(CONNECTION_STACK_BYTES)
        .spawn(move || {
            // Errors on one connection (reset, timeout, eviction) concern only that client.
            let _ = serve_connection(stream, &hub, per_peer);
            lock(&table).release(id);
        });
    if let Err(err) = spawned {
        lock(connections).release(id);
        tracing::warn!(error = %err, "metrics endpoint: cannot start a connection thread");
    }
}

/// What the request asked for, after parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Metrics,
    Health,
    NotFound,
    MethodNotAllowed,
    BadRequest,
    TooLarge,
}

fn route(method: &str, path: &str) -> Route {
    let path = path.split(['?', '#']).next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics,
        ("GET", "/health") => Route::Health,
        ("GET", _) => Route::NotFound,
        _ => Route::MethodNotAllowed,
    }
}

fn serve_connection(mut stream: TcpStream, hub: &MetricsHub, per_peer: bool) -> io::Result<()> {
    let deadline = Instant::now() + CONNECTION_DEADLINE;
    // Accepted sockets do not inherit the listener's settings reliably across
    // platforms; make this one blocking with timeouts.
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    let route = match read_request(&mut stream, deadline)? {
        Some(route) => route,
        None => return Ok(()), // client went away or was too slow
    };
    let (status, content_type, body) = match route {
        Route::Metrics => {
            let snapshots = hub.snapshot();
            let daemon = hub.daemon_snapshot();
            (
                "200 OK",
                metrics::CONTENT_TYPE,
                crate::hub::append_metrics(metrics::encode_with_daemon(
                    &snapshots, &daemon, per_peer,
                )),
            )
        }
        Route::Health => ("200 OK", "text/plain; charset=utf-8", "ok\n".to_owned()),
        Route::NotFound => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found\n".to_owned(),
        ),
        Route::MethodNotAllowed => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "method not allowed\n".to_owned(),
        ),
        Route::BadRequest => (
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "bad request\n".to_owned(),
        ),
        Route::TooLarge => (
            "431 Request Header Fields Too Large",
            "text/plain; charset=utf-8",
            "request too large\n".to_owned(),
        ),
    };
    let allow = if route == Route::MethodNotAllowed {
        "Allow: GET\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\nCache-Control: no-store\r\n\r\n",
        body.len()
    );
    write_all_by(&mut stream, head.as_bytes(), deadline)?;
    write_all_by(&mut stream, body.as_bytes(), deadline)?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

/// Reads one request head. `None` means give up silently (timeout, EOF).
fn read_request(stream: &mut TcpStream, deadline: Instant) -> io::Result<Option<Route>> {
    let mut buf = [0u8; MAX_REQUEST_BYTES];
    let mut filled = 0;
    loop {
        let Some(remaining) = deadline.checked_duration_since(Instant::now()) else {
            return Ok(None);
        };
        if remaining.is_zero() {
            return Ok(None);
        }
        stream.set_read_timeout(Some(remaining))?;
        let Some(free) = buf.get_mut(filled..) else {
            return Ok(Some(Route::TooLarge));
        };
        if free.is_empty() {
            return Ok(Some(Route::TooLarge));
        }
        let n = match stream.read(free) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(err) => return Err(err),
        };
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(buf.get(..filled).unwrap_or(&[])) {
            Ok(httparse::Status::Complete(_)) => {
                let method = request.method.unwrap_or("");
                let path = request.path.unwrap_or("");
                return Ok(Some(route(method, path)));
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Ok(Some(Route::TooLarge)),
            Err(_) => return Ok(Some(Route::BadRequest)),
        }
    }
}

fn write_all_by(stream: &mut TcpStream, mut data: &[u8], deadline: Instant) -> io::Result<()> {
    while !data.is_empty() {
        let remaining = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "write deadline passed"))?;
        stream.set_write_timeout(Some(remaining))?;
        match stream.write(data) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "peer closed")),
            Ok(n) => data = data.get(n..).unwrap_or(&[]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Why `fetch_metrics` failed. Display is one line naming the address.
#[derive(Debug)]
pub enum FetchError {
    Io { addr: SocketAddr, source: io::Error },
    Status { addr: SocketAddr, status: String },
    BadResponse { addr: SocketAddr, message: String },
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Io { addr, source } => write!(f, "metrics endpoint {addr}: {source}"),
            FetchError::Status { addr, status } => {
                write!(f, "metrics endpoint {addr}: answered {status}")
            }
            FetchError::BadResponse { addr, message } => {
                write!(f, "metrics endpoint {addr}: bad response: {message}")
            }
        }
    }
}

impl std::error::Error for FetchError {}

/// `GET /metrics` from a running daemon with a plain HTTP/1.1 request.
pub fn fetch_metrics(addr: SocketAddr) -> Result<String, FetchError> {
    fetch_path(addr, "/metrics")
}

/// `GET <path>`; returns the body of a 200 answer.
pub fn fetch_path(addr: SocketAddr, path: &str) -> Result<String, FetchError> {
    let io_err = |source| FetchError::Io { addr, source };
    let bad = |message: &str| FetchError::BadResponse {
        addr,
        message: message.to_owned(),
    };
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io_err)?;
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: intentra-status\r\nAccept: {}, text/plain;q=0.5\r\nConnection: close\r\n\r\n",
        metrics::CONTENT_TYPE
    );
    stream.write_all(request.as_bytes()).map_err(io_err)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(io_err)?;
    if raw.len() as u64 > MAX_RESPONSE_BYTES {
        return Err(bad("response larger than 64 MiB"));
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(&raw) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err(bad("truncated response head")),
        Err(err) => return Err(bad(&err.to_string())),
    };
    let code = response.code.unwrap_or(0);
    if code != 200 {
        return Err(FetchError::Status {
            addr,
            status: format!("{code} {}", response.reason.unwrap_or("")),
        });
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
    let content_length = header("content-length");
    let body = raw.get(head_len..).unwrap_or(&[]);
    let body = if chunked {
        dechunk(body).ok_or_else(|| bad("malformed chunked body"))?
    } else if let Some(len) = content_length {
        let len: usize = len.parse().map_err(|_| bad("bad Content-Length"))?;
        body.get(..len)
            .ok_or_else(|| bad("body shorter than Content-Length"))?
            .to_vec()
    } else {
        body.to_vec()
    };
    String::from_utf8(body).map_err(|_| bad("body is not UTF-8"))
}

/// Decodes a `Transfer-Encoding: chunked` body (trailers ignored).
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(body.get(..line_end)?).ok()?;
        let size_hex = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_hex, 16).ok()?;
        body = body.get(line_end + 2..)?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("GET", "/metrics"), Route::Metrics);
        assert_eq!(route("GET", "/metrics?x=1"), Route::Metrics);
        assert_eq!(route("GET", "/health"), Route::Health);
        assert_eq!(route("GET", "/"), Route::NotFound);
        assert_eq!(route("POST", "/metrics"), Route::MethodNotAllowed);
        assert_eq!(route("HEAD", "/nope"), Route::MethodNotAllowed);
    }

    #[test]
    fn dechunk_decodes_and_rejects_garbage() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n").as_deref(),
            Some(&b"abcde"[..])
        );
        assert_eq!(dechunk(b"zz\r\n"), None);
        assert_eq!(dechunk(b"5\r\nab"), None);
    }
}
