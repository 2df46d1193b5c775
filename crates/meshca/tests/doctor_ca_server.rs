//! `meshca doctor` against a real `meshca serve`: healthy, self-signed in use
//! despite plug-in files (seed 000, istio#57853), a rotation that was not
//! picked up, and a CA that is down or trusted with the wrong root.

mod doctor_support;

use doctor_support::*;
use meshca_testkit::{Server, ServerOptions};

fn start(work: &std::path::Path, ca_dir: Option<std::path::PathBuf>) -> Server {
    Server::start(&bin(), work, ServerOptions { ca_dir, ..Default::default() }).expect("meshca serve starts")
}

#[test]
fn a_healthy_plugged_ca_reports_all_ok() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("cacerts");
    install(&make_set(work.path(), "a", "9000h"), &dir);
    let ca = start(work.path(), Some(dir.clone()));
    let (http, grpc) = (ca.http.to_string(), ca.grpc.to_string());
    let args = [
        "--ca-dir",
        dir.to_str().unwrap(),
        "--ca-http-addr",
        &http,
        "--ca-addr",
        &grpc,
        "--ca-server-name",
        "localhost",
    ];
    let run = doctor(&args);
    run.expect_healthy();
    for id in [
        "ca-server.ready",
        "ca-server.grpc-tls",
        "ca-server.files-active",
        "ca-server.root-served",
        "ca-server.plugin-in-use",
        "ca-server.clock-skew",
    ] {
        run.expect(id, "ok", &[]);
    }
    eprintln!("doctor against a local CA took {:?}", run.elapsed);
}

#[test]
fn plugin_files_present_but_self_signed_in_use() {
    let work = tempfile::tempdir().unwrap();
    let ca = start(work.path(), None);
    assert_eq!(ca.status()["source"], "self-signed");
    // The cacerts arrive after the CA started (the seed's Key Vault sync).
    let dir = ca.status()["directory"].as_str().unwrap().to_string();
    install(&make_set(work.path(), "plug", "9000h"), std::path::Path::new(&dir));
    let http = ca.http.to_string();
    let run = doctor(&["--ca-http-addr", &http]);
    assert_eq!(run.code, 1);
    run.expect(
        "ca-server.plugin-in-use",
        "error",
        &["plug-in CA files are present", "self-signed root", "istio#57853", "restart"],
    );
}

#[test]
fn a_rotation_that_was_refused_is_not_picked_up() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("cacerts");
    install(&make_set(work.path(), "a", "9000h"), &dir);
    let ca = start(work.path(), Some(dir.clone()));
    let generation = ca.status()["generation"].clone();
    // A set under a new root replaces the files; the CA refuses it without --allow-root-replace.
    install(&make_set(work.path(), "b", "9000h"), &dir);
    wait_for("the CA to refuse the new root", || !ca.status()["last_error"].is_null());
    assert_eq!(ca.status()["generation"], generation);
    let http = ca.http.to_string();
    let run = doctor(&["--ca-dir", dir.to_str().unwrap(), "--ca-http-addr", &http]);
    assert_eq!(run.code, 1);
    run.expect("ca-material.chain-ordered", "ok", &[]);
    run.expect(
        "ca-server.files-active",
        "error",
        &["ca-cert.pem and root-cert.pem differ", "rotation not picked up", "refused"],
    );
    run.expect("ca-server.last-reload", "error", &["failed", "previous material"]);
    run.expect("ca-server.root-served", "error", &["Root a", "Root b", "root update not detected"]);
}

#[test]
fn a_ca_that_is_down_or_trusted_with_the_wrong_root() {
    let (http, grpc) = (free_addr(), free_addr());
    let run = doctor(&["--ca-http-addr", &http, "--ca-addr", &grpc]);
    assert_eq!(run.code, 1);
    run.expect("ca-server.ready", "error", &["unreachable", "nothing listens"]);
    run.expect("ca-server.grpc-tls", "skipped", &["no root"]);
    run.expect("ca-server.files-active", "skipped", &["not run: ca-server.ready failed"]);

    let work = tempfile::tempdir().unwrap();
    let ca = start(work.path(), None);
    let other = meshca_testkit::cli::make_root(&bin(), work.path(), "other");
    let (http, grpc) = (ca.http.to_string(), ca.grpc.to_string());
    let root = other.join("root-cert.pem");
    let run = doctor(&[
        "--ca-http-addr",
        &http,
        "--ca-addr",
        &grpc,
        "--ca-root",
        root.to_str().unwrap(),
        "--ca-server-name",
        "localhost",
    ]);
    run.expect("ca-server.ready", "ok", &[]);
    run.expect("ca-server.grpc-tls", "error", &["UnknownIssuer", "not signed by the root you trust"]);
    let run = doctor(&["--ca-addr", &free_addr(), "--ca-root", root.to_str().unwrap()]);
    run.expect("ca-server.grpc-tls", "error", &["refused", "nothing listens"]);
}

#[test]
fn a_ca_that_accepts_connections_but_never_answers() {
    // A listener that accepts and stays silent: the probes share the budget and say so.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let run = doctor(&["--ca-http-addr", &addr, "--timeout", "700ms"]);
    assert_eq!(run.code, 1);
    run.expect("ca-server.ready", "error", &["unreachable", "no answer in time"]);
}

#[test]
fn a_ca_whose_clock_is_ten_minutes_behind() {
    // A stand-in for the CA's HTTP port whose Date header lags by ten minutes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let out = std::process::Command::new("date").args(["-u", "-d", "-10 min", "+%a, %d %b %Y %H:%M:%S GMT"]).output();
    let date = String::from_utf8(out.expect("coreutils date").stdout).unwrap().trim().to_string();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ =
                write!(s, "HTTP/1.1 200 OK\r\ndate: {date}\r\ncontent-length: 6\r\nconnection: close\r\n\r\nready\n");
        }
    });
    let run = doctor(&["--ca-http-addr", &addr]);
    run.expect("ca-server.ready", "ok", &[]);
    run.expect("ca-server.clock-skew", "error", &["10 minutes behind", "clock skew beyond 5 minutes", "NTP"]);
}
