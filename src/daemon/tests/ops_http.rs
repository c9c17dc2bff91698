//! The metrics endpoint on 127.0.0.1:0: routes, status codes, slow and oversized clients.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use intentra::metrics::{MetricsHub, WorkerSnapshot, CONTENT_TYPE};
use intentra_daemon::metrics_http::{fetch_metrics, fetch_path, spawn_metrics_server, FetchError};

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Sends raw bytes and returns the whole response.
fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

#[test]
fn serves_metrics_health_and_errors() {
    let hub = MetricsHub::new(2);
    let mut w = WorkerSnapshot::new(1);
    w.stats.packets_received = 42;
    hub.publish(w);
    let server = spawn_metrics_server(loopback(), hub.clone(), false).unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);

    let body = fetch_metrics(addr).unwrap();
    assert!(
        body.contains("intentra_packets_received_total{worker=\"1\"} 42"),
        "{body}"
    );

    // A later publish is visible on the next scrape.
    hub.update(1, |w| w.stats.packets_received = 43);
    let body = fetch_metrics(addr).unwrap();
    assert!(body.contains("intentra_packets_received_total{worker=\"1\"} 43"));

    let response = raw(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
    assert!(response.contains(&format!("Content-Type: {CONTENT_TYPE}")));

    assert_eq!(fetch_path(addr, "/health").unwrap(), "ok\n");

    let response = raw(addr, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_line(&response), "HTTP/1.1 404 Not Found");

    let response = raw(
        addr,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(status_line(&response), "HTTP/1.1 405 Method Not Allowed");
    assert!(response.contains("Allow: GET"));

    let response = raw(addr, b"\x00\x01garbage\r\n\r\n");
    assert_eq!(status_line(&response), "HTTP/1.1 400 Bad Request");

    match fetch_path(addr, "/other") {
        Err(FetchError::Status { status, .. }) => assert!(status.starts_with("404")),
        other => panic!("expected a 404 error, got {other:?}"),
    }
    server.shutdown();
}

#[test]
fn oversized_request_is_refused_without_reading_it_all() {
    let server = spawn_metrics_server(loopback(), MetricsHub::new(1), false).unwrap();
    let mut request = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 16 * 1024));
    let mut stream = TcpStream::connect(server.local_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The server may close before we finish writing; that is the point.
    let _ = stream.write_all(&request);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    let response = String::from_utf8_lossy(&out);
    assert!(
        response.is_empty() || response.starts_with("HTTP/1.1 431"),
        "{response}"
    );
    // Still serving.
    assert!(fetch_metrics(server.local_addr()).is_ok());
}

#[test]
fn a_silent_client_does_not_pin_the_server() {
    let server = spawn_metrics_server(loopback(), MetricsHub::new(1), false).unwrap();
    let addr = server.local_addr();
    // Opens a connection and never sends a byte; the server must give up on
    // it at its deadline and then serve the next client.
    let silent = TcpStream::connect(addr).unwrap();
    let body = fetch_metrics(addr).unwrap();
    assert!(body.ends_with("# EOF\n"));
    drop(silent);
}

#[test]
fn port_in_use_names_the_address() {
    let first = spawn_metrics_server(loopback(), MetricsHub::new(1), false).unwrap();
    let taken = first.local_addr();
    let err = spawn_metrics_server(taken, MetricsHub::new(1), false).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains(&taken.to_string()), "{err}");
}

#[test]
fn fetch_from_closed_port_names_the_address() {
    // Bind and drop to find a port that is (very likely) closed.
    let addr = {
        let l = std::net::TcpListener::bind(loopback()).unwrap();
        l.local_addr().unwrap()
    };
    let err = fetch_metrics(addr).unwrap_err();
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn shutdown_releases_the_port() {
    let server = spawn_metrics_server(loopback(), MetricsHub::new(1), false).unwrap();
    let addr = server.local_addr();
    server.shutdown();
    assert!(fetch_metrics(addr).is_err());
    let again = spawn_metrics_server(addr, MetricsHub::new(1), false).unwrap();
    assert_eq!(again.local_addr(), addr);
}

/// True while the server has not closed `stream`: a read times out instead of
/// returning EOF or an error.
fn still_open(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Err(err) => matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        // EOF means closed; data (never sent before a request) would mean open.
        Ok(n) => n > 0,
    }
}

#[test]
fn idle_connections_do_not_delay_a_scrape() {
    let server = spawn_metrics_server(loopback(), MetricsHub::new(1), false).unwrap();
    let addr = server.local_addr();
    let mut idle: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Served one at a time, these would hold the scrape for 8 x the 2 s deadline;
    // served concurrently, the scrape completes while every one of them is open.
    let body = fetch_metrics(addr).unwrap();
    assert!(body.ends_with("# EOF\n"));
    for (i, stream) in idle.iter_mut().enumerate() {
        assert!(
            still_open(stream),
            "idle connection {i} was closed before the scrape finished"
        );
    }
}

#[test]
fn more_idle_connections_than_slots_cannot_lock_a_scraper_out() {
    use intentra_daemon::metrics_http::MAX_CONNECTIONS;
    let server = spawn_metrics_server(loopback(), MetricsHub::new(1), false).unwrap();
    let addr = server.local_addr();
    let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS + 4)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // The newest connection evicts the oldest, so the scrape gets a slot.
    let body = fetch_metrics(addr).unwrap();
    assert!(body.ends_with("# EOF\n"));
    drop(idle);
    server.shutdown();
}
