//! Issue 14, hardening, against the real binary: 1,000 idle TCP connections
//! on the gRPC port, slow-loris clients on the gRPC and HTTP ports, 100 MB of
//! request metadata and a 100 MB gRPC message, all at once, while a normal
//! client keeps getting certificates; the server's memory stays bounded and
//! the idle connections are closed after the configured timeouts.

mod security_support;

use bytes::Bytes;
use security_support::*;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CREATE_PATH: &str = "/istio.v1.auth.IstioCertificateService/CreateCertificate";
const HUNDRED_MB: usize = 100 * 1024 * 1024;
/// The timeouts the server runs with: short, so the test sees them fire.
const TIMEOUT_SECS: u64 = 3;
/// Largest growth of the server's resident set tolerated under a 100 MB attack.
const MAX_RSS_GROWTH_KIB: u64 = 40 * 1024;

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), first byte's high bits `high`.
fn hpack_int(n: u32, high: u8, v: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(high | v as u8);
        return;
    }
    out.push(high | max as u8);
    let mut rest = v - max;
    while rest >= 128 {
        out.push((rest % 128 + 128) as u8);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// Peak RSS of `pid` sampled every 10 ms until `stop`.
fn sample_peak_rss(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(rss_kib(pid));
            std::thread::sleep(Duration::from_millis(10));
        }
        peak.max(rss_kib(pid))
    })
}

/// 100 MB of metadata: one HEADERS frame opening a literal header whose value
/// is 100 MB long, continued in CONTINUATION frames. Returns the bytes the
/// server took before it closed the connection, and whether it did (in 30 s).
async fn metadata_flood(server: &meshca_testkit::Server, roots: &str, token: &str) -> (usize, bool) {
    let tls = tls_connect(server.grpc, roots).await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let closed = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    });
    let mut block = vec![0x83, 0x87]; // :method POST, :scheme https
    for (name, value) in [(":path", CREATE_PATH), (":authority", "localhost"), ("content-type", "application/grpc")] {
        block.push(0x00);
        hpack_int(7, 0, name.len(), &mut block);
        block.extend_from_slice(name.as_bytes());
        hpack_int(7, 0, value.len(), &mut block);
        block.extend_from_slice(value.as_bytes());
    }
    let auth = format!("Bearer {token}");
    block.push(0x00);
    hpack_int(7, 0, "authorization".len(), &mut block);
    block.extend_from_slice(b"authorization");
    hpack_int(7, 0, auth.len(), &mut block);
    block.extend_from_slice(auth.as_bytes());
    block.push(0x00);
    hpack_int(7, 0, 6, &mut block);
    block.extend_from_slice(b"x-meta");
    hpack_int(7, 0, HUNDRED_MB, &mut block);
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(4, 0, 0, &[]));
    out.extend(frame(1, 0, 1, &block)); // HEADERS without END_HEADERS
    let mut sent = 0usize;
    if wr.write_all(&out).await.is_err() {
        return (0, closed.await.unwrap_or(false));
    }
    let chunk = frame(9, 0, 1, &[b'm'; 16 * 1024]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sent < HUNDRED_MB && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), wr.write_all(&chunk)).await {
            Ok(Ok(())) => sent += 16 * 1024,
            _ => break,
        }
    }
    let _ = wr.shutdown().await;
    (sent, closed.await.unwrap_or(false))
}

/// A TLS HTTP/2 connection to the gRPC port with one `CreateCertificate` request opened with
/// `token`, its body still to send: the response, the body stream and the connection's driver.
async fn open_create(
    server: &meshca_testkit::Server,
    roots: &str,
    token: &str,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>, tokio::task::JoinHandle<Result<(), h2::Error>>) {
    let tls = tls_connect(server.grpc, roots).await;
    let (h2c, conn) = h2::client::handshake(tls).await.unwrap();
    let driver = tokio::spawn(conn);
    let mut h2c = h2c.ready().await.unwrap();
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("https://localhost{CREATE_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
    let (resp, stream) = h2c.send_request(req, false).unwrap();
    (resp, stream, driver)
}

/// The grpc-status of a response (from its headers or its trailers), or what went wrong
/// instead, waiting at most `wait` for the response and 10 s for the trailers.
async fn grpc_status(resp: h2::client::ResponseFuture, wait: Duration) -> String {
    match tokio::time::timeout(wait, resp).await {
        Ok(Ok(r)) => match r.headers().get("grpc-status") {
            Some(s) => s.to_str().unwrap_or("?").to_string(),
            None => {
                let mut body = r.into_body();
                while let Some(Ok(_)) = body.data().await {}
                match tokio::time::timeout(Duration::from_secs(10), body.trailers()).await {
                    Ok(Ok(Some(t))) => t.get("grpc-status").map_or("none".into(), |v| v.to_str().unwrap().into()),
                    other => format!("no trailers: {other:?}"),
                }
            }
        },
        Ok(Err(e)) => format!("stream error: {e}"),
        Err(_) => format!("no answer in {}s", wait.as_secs()),
    }
}

/// A gRPC message announcing 100 MB, with a valid token, pushed as fast as
/// flow control lets it. Returns the grpc-status (or the stream error) and the bytes sent.
async fn oversized_message(server: &meshca_testkit::Server, roots: &str, token: &str) -> (String, usize) {
    let (resp, mut stream, driver) = open_create(server, roots, token).await;
    let pusher = tokio::spawn(async move {
        let mut prefix = vec![0u8];
        prefix.extend_from_slice(&(HUNDRED_MB as u32).to_be_bytes());
        let mut sent = 0usize;
        if stream.send_data(Bytes::from(prefix), false).is_err() {
            return sent;
        }
        let chunk = Bytes::from(vec![b'A'; 64 * 1024]);
        while sent < HUNDRED_MB {
            stream.reserve_capacity(chunk.len());
            match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(n)) if n > 0 => {
                    if stream.send_data(chunk.slice(..n.min(chunk.len())), false).is_err() {
                        break;
                    }
                    sent += n.min(chunk.len());
                }
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        sent
    });
    let status = grpc_status(resp, Duration::from_secs(30)).await;
    let sent = tokio::time::timeout(Duration::from_secs(10), pusher).await.map(|r| r.unwrap_or(0)).unwrap_or(0);
    driver.abort();
    (status, sent)
}

/// A body trickled one byte every 200 ms after a valid token: the request
/// must be cut off by `--grpc-request-timeout`. Returns the grpc-status (or error) and when it came.
async fn grpc_slow_loris(server: &meshca_testkit::Server, roots: &str, token: &str) -> (String, Duration) {
    let t0 = Instant::now();
    let (resp, mut stream, driver) = open_create(server, roots, token).await;
    let trickle = tokio::spawn(async move {
        let _ = stream.send_data(Bytes::from_static(&[0, 0, 0, 8, 0]), false);
        for _ in 0..400 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if stream.send_data(Bytes::from_static(b"x"), false).is_err() {
                break;
            }
        }
    });
    let status = grpc_status(resp, Duration::from_secs(40)).await;
    let took = t0.elapsed();
    trickle.abort();
    driver.abort();
    (status, took)
}

/// A request line and headers trickled one byte every 200 ms on the HTTP
/// port; the time after which the server closed the connection (None: still open after 40 s).
fn http_slow_loris(addr: std::net::SocketAddr) -> Option<Duration> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    let t0 = Instant::now();
    let text = b"GET /status HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
    let mut i = 0;
    while t0.elapsed() < Duration::from_secs(40) {
        let b = text.get(i).copied().unwrap_or(b'z');
        i += 1;
        if s.write_all(&[b]).is_err() {
            return Some(t0.elapsed());
        }
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(_) => return Some(t0.elapsed()), // EOF or a 408 before the close
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(t0.elapsed()),
        }
        std::thread::sleep(Duration::from_millis(190));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_do_not_stop_issuance_and_are_cut_off() {
    let (_, nofile) = meshca_ca::limits::raise_nofile();
    // 1,000 idle connections, sized down (loudly) only if this process cannot hold them.
    let idle_n = 1000usize.min(nofile.saturating_sub(200) as usize);
    assert!(idle_n >= 500, "the open-file limit {nofile} is too low for this test: raise `ulimit -n`");
    let work = tempfile::tempdir().unwrap();
    let t = format!("{TIMEOUT_SECS}s");
    let server = start(
        work.path(),
        &[
            "--tls-handshake-timeout",
            &t,
            "--grpc-idle-timeout",
            &t,
            "--http-header-read-timeout",
            &t,
            "--grpc-request-timeout",
            "5s",
        ],
    );
    let roots = server.root_pem();
    let pid = server.pid().unwrap();
    let token = server.token("default", "hostile");
    let legit_token = server.token("default", "legit");
    legit_request(&server, &roots, &legit_token).await.expect("a certificate before the attack");
    let base_rss = rss_kib(pid);

    // 1,000 TCP connections to the gRPC port that never start their TLS handshake.
    let mut idle = Vec::with_capacity(idle_n);
    for i in 0..idle_n {
        let s = std::net::TcpStream::connect_timeout(&server.grpc, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("idle connection {i}: {e}"));
        idle.push(s);
    }
    let opened = Instant::now();
    // Idle connections that did finish TLS and HTTP/2 but never send a request.
    let mut idle_h2 = Vec::new();
    for _ in 0..10 {
        idle_h2.push(tls_connect(server.grpc, &roots).await);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_peak_rss(pid, stop.clone());
    let http_loris = std::thread::spawn({
        let addr = server.http;
        move || http_slow_loris(addr)
    });
    let (flood, big, loris) = tokio::join!(
        metadata_flood(&server, &roots, &token),
        oversized_message(&server, &roots, &token),
        grpc_slow_loris(&server, &roots, &token),
    );
    // A normal client, on new connections, while all of this is open.
    let legit_ok = AtomicU64::new(0);
    for _ in 0..3 {
        let took = legit_request(&server, &roots, &legit_token).await.expect("a certificate during the attack");
        println!("legit: certificate in {took:?} during the attack");
        legit_ok.fetch_add(1, Ordering::Relaxed);
    }
    let http_closed = http_loris.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let peak_rss = sampler.join().unwrap();
    println!(
        "metadata flood: server took {} MiB of a 100 MB header before closing: {}; oversized message: {} after {} KiB; \
         gRPC slow-loris: {} after {:?}; HTTP slow-loris closed after {http_closed:?}; RSS {base_rss} KiB -> peak \
         {peak_rss} KiB",
        flood.0 >> 20,
        flood.1,
        big.0,
        big.1 >> 10,
        loris.0,
        loris.1
    );
    assert!(flood.1, "the connection sending 100 MB of metadata was not closed by the server");
    assert!(flood.0 < HUNDRED_MB, "the server read the whole 100 MB header block");
    assert!(
        big.0 == "8" || big.0.starts_with("stream error"),
        "a 100 MB message must get RESOURCE_EXHAUSTED or a stream/connection error, got {}",
        big.0
    );
    assert!(big.1 < HUNDRED_MB / 2, "the server read {} KiB of a 100 MB message", big.1 >> 10);
    assert!(loris.0 != "0" && !loris.0.starts_with("no answer"), "gRPC slow-loris got {}", loris.0);
    assert!(loris.1 < Duration::from_secs(30), "gRPC slow-loris held for {:?}", loris.1);
    let http_closed = http_closed.expect("the HTTP slow-loris connection stayed open for 40 s");
    assert!(http_closed < Duration::from_secs(TIMEOUT_SECS + 20), "HTTP slow-loris closed after {http_closed:?}");
    assert!(
        peak_rss.saturating_sub(base_rss) < MAX_RSS_GROWTH_KIB,
        "server RSS grew from {base_rss} KiB to {peak_rss} KiB under 100 MB attacks"
    );
    assert_eq!(legit_ok.load(Ordering::Relaxed), 3);

    // Every idle connection is closed by the server after the handshake / idle timeout.
    let mut open = 0;
    for s in &mut idle {
        let left = Duration::from_secs(TIMEOUT_SECS + 25).saturating_sub(opened.elapsed());
        s.set_read_timeout(Some(left.max(Duration::from_millis(10)))).unwrap();
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(_) => open += 1,
        }
    }
    let idle_closed_after = opened.elapsed();
    let mut h2_open = 0;
    for mut tls in idle_h2 {
        let mut b = vec![0u8; 4096];
        let closed = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match tls.read(&mut b).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        h2_open += closed.is_err() as usize;
    }
    println!(
        "idle: {open} of {idle_n} TCP and {h2_open} of 10 TLS connections open {idle_closed_after:?} after opening"
    );
    assert_eq!(open, 0, "idle TCP connections on the gRPC port outlived --tls-handshake-timeout");
    assert_eq!(h2_open, 0, "idle HTTP/2 connections outlived --grpc-idle-timeout");
    let metrics = server.get("/metrics").unwrap();
    let hs = meshca_testkit::http::metric(&metrics, "meshca_grpc_tls_handshake_failures_total");
    let idle_closed = meshca_testkit::http::metric(&metrics, "meshca_grpc_idle_connections_closed_total");
    // Under a low descriptor limit the server lowers its connection cap: the excess is refused at accept.
    let refused = meshca_testkit::http::metric(&metrics, "meshca_grpc_connections_refused_total");
    println!("metrics: {hs} handshake failures/timeouts, {refused} refused at accept, {idle_closed} idle closed");
    assert!(hs + refused >= idle_n as f64, "handshake timeouts not counted: {hs} (+{refused} refused)");
    assert!(idle_closed >= 10.0, "idle closes not counted: {idle_closed}");
    legit_request(&server, &roots, &legit_token).await.expect("a certificate after the attack");
}
