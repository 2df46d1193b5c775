//! Issue 15, findings 1 and 3 against the real binary: held HTTP/2 streams
//! announcing huge messages, idle and half-sent HTTP connections under a
//! 1,024 descriptor limit, idle gRPC connections and the long-poll cap.

mod security_support;

use bytes::Bytes;
use security_support::*;
use std::io::Read;
use std::time::{Duration, Instant};

const CREATE: &str = "https://localhost/istio.v1.auth.IstioCertificateService/CreateCertificate";

/// gRPC frame prefix announcing a message of `len` bytes, then `filler` bytes of it.
fn partial_message(len: u32, filler: usize) -> Bytes {
    let mut b = vec![0u8];
    b.extend_from_slice(&len.to_be_bytes());
    b.extend(std::iter::repeat_n(b'A', filler));
    Bytes::from(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_streams_announcing_big_messages_leave_memory_bounded() {
    let work = tempfile::tempdir().unwrap();
    let server = start(work.path(), &[]);
    let roots = server.root_pem();
    let pid = server.pid().unwrap();
    let token = server.token("default", "attacker");
    let idle_rss = rss_kib(pid);

    let tls = tls_connect(server.grpc, &roots).await;
    let (mut h2c, conn) = h2::client::handshake(tls).await.unwrap();
    let driver = tokio::spawn(conn);
    let mut held = Vec::new();
    let (mut sent, mut queued) = (0, 0);
    for i in 0..300 {
        // 0: no credential, 4 MiB announced; 1: a valid token, 4 MiB; 2 and 3: a valid token, 120 KiB
        // (under the message limit), 60 KiB of it sent and the rest withheld until the request timeout.
        let mut req = http::Request::builder()
            .method("POST")
            .uri(CREATE)
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if i % 4 != 0 {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let body =
            if i % 4 >= 2 { partial_message(120 * 1024, 60 * 1024) } else { partial_message(4 << 20, 16 * 1024) };
        match tokio::time::timeout(Duration::from_secs(2), h2c.clone().ready()).await {
            Ok(Ok(ready)) => h2c = ready,
            Ok(Err(e)) => panic!("the connection broke after {sent} streams: {e}"),
            Err(_) => {
                // SETTINGS_MAX_CONCURRENT_STREAMS is reached: the server accepts no more on this connection.
                queued = 300 - i;
                break;
            }
        }
        let (resp, mut stream) = h2c.send_request(req.body(()).unwrap(), false).unwrap();
        let _ = stream.send_data(body, false);
        held.push((resp, stream));
        sent += 1;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The streams that announced 120 KiB are still waiting for the rest of their message.
    let mut pending = 0;
    for (resp, _) in held.iter_mut().skip(2).step_by(4).take(10) {
        pending += tokio::time::timeout(Duration::from_millis(50), resp).await.is_err() as usize;
    }
    assert!(pending >= 5, "the withheld-body streams were not held ({pending}/10)");
    let attack_rss = rss_kib(pid);
    let legit = legit_request(&server, &roots, &server.token("default", "legit")).await;
    println!(
        "held-streams: {sent} streams sent ({queued} held back client-side), server allows {} at once, \
         RSS idle {idle_rss} KiB -> under attack {attack_rss} KiB; legitimate request: {legit:?}",
        h2c.current_max_send_streams()
    );
    let elapsed = legit.expect("a legitimate request must succeed during the attack");
    assert!(elapsed < Duration::from_secs(10), "legitimate request took {elapsed:?}");
    assert!(attack_rss < 100 * 1024, "server RSS {attack_rss} KiB under the held-stream attack");
    let max_streams = h2c.current_max_send_streams();
    assert_eq!(max_streams, 100, "SETTINGS_MAX_CONCURRENT_STREAMS announced by the server");
    let metrics = server.get("/metrics").unwrap();
    assert!(
        meshca_testkit::http::metric(&metrics, "meshca_grpc_requests_without_credential_total") >= 1.0,
        "{metrics}"
    );
    drop(held);
    driver.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http_connections_are_closed_and_issuance_survives_1024_descriptors() {
    let work = tempfile::tempdir().unwrap();
    let wrapped = wrapper(work.path(), "ulimit -n 1024");
    let server = start_with(&wrapped, work.path(), &["--http-header-read-timeout", "2s"]);
    let roots = server.root_pem();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid().unwrap())).unwrap();
    let nofile = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_string();
    assert!(nofile.split_whitespace().nth(3) == Some("1024"), "the child must run with 1024 descriptors: {nofile}");

    // 1,100 idle connections, every 4th one with half a request line.
    let mut conns = Vec::new();
    for i in 0..1100 {
        match std::net::TcpStream::connect_timeout(&server.http, Duration::from_secs(2)) {
            Ok(mut s) => {
                if i % 4 == 0 {
                    use std::io::Write;
                    let _ = s.write_all(b"GET /status HT");
                }
                conns.push(s);
            }
            Err(e) => panic!("connect {i}: {e}"),
        }
    }
    let token = server.token("default", "legit");
    let elapsed =
        legit_request(&server, &roots, &token).await.expect("CreateCertificate under 1,100 idle HTTP connections");
    println!("idle-http: 1100 idle HTTP connections open, CreateCertificate took {elapsed:?}");

    // All of them end: refused at accept (over --http-max-connections) or closed by the header timeout.
    let t0 = Instant::now();
    let mut open = 0;
    for s in &mut conns {
        s.set_read_timeout(Some(Duration::from_secs(10).saturating_sub(t0.elapsed()).max(Duration::from_millis(10))))
            .unwrap();
        let mut b = [0u8; 256];
        match s.read(&mut b) {
            Ok(_) => {} // EOF, or a 408/400 answer before the close
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(_) => open += 1,
        }
    }
    println!("idle-http: {open} of 1100 still open {:?} after the attack", t0.elapsed());
    assert_eq!(open, 0, "idle HTTP connections were not closed");
    let metrics = server.get("/metrics").unwrap();
    let refused = meshca_testkit::http::metric(&metrics, "meshca_http_connections_refused_total");
    println!("idle-http: {refused} connections refused at accept");
    assert!(refused > 0.0, "{metrics}");
    legit_request(&server, &roots, &token).await.expect("CreateCertificate after the attack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_grpc_connections_are_closed_and_long_polls_are_capped() {
    let work = tempfile::tempdir().unwrap();
    // A low soft descriptor limit is raised to the hard one at start-up.
    let wrapped = wrapper(work.path(), "ulimit -Sn 512");
    let server = start_with(&wrapped, work.path(), &["--grpc-idle-timeout", "1s", "--http-max-long-polls", "2"]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid().unwrap())).unwrap();
    let nofile: Vec<&str> =
        limits.lines().find(|l| l.starts_with("Max open files")).unwrap().split_whitespace().skip(3).take(2).collect();
    assert_eq!(nofile[0], nofile[1], "soft open-file limit not raised to the hard one: {nofile:?}");
    assert_ne!(nofile[0], "512");
    let mut tls = tls_connect(server.grpc, &server.root_pem()).await;
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an idle gRPC connection stayed open past --grpc-idle-timeout");

    let etag = meshca_testkit::http::http(server.http, "/root-cert.pem", &[]).1;
    let etag = meshca_testkit::http::header(&etag, "etag").unwrap().to_string();
    let polls: Vec<_> = (0..2)
        .map(|_| {
            let (addr, etag) = (server.http, etag.clone());
            std::thread::spawn(move || {
                meshca_testkit::http::http(addr, "/root-cert.pem?wait=3", &[("If-None-Match", &etag)]).0
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (status, headers, _) =
        meshca_testkit::http::http(server.http, "/root-cert.pem?wait=3", &[("If-None-Match", &etag)]);
    assert_eq!(status, 503, "a third long-poll over --http-max-long-polls 2");
    assert!(meshca_testkit::http::header(&headers, "retry-after").is_some());
    for p in polls {
        assert_eq!(p.join().unwrap(), 304);
    }
    let metrics = server.get("/metrics").unwrap();
    assert!(meshca_testkit::http::metric(&metrics, "meshca_http_long_polls_refused_total") >= 1.0);
    assert!(meshca_testkit::http::metric(&metrics, "meshca_grpc_idle_connections_closed_total") >= 1.0);
}
