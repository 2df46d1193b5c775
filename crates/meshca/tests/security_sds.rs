//! Issue 15, finding 8 against the real binary: under umask 0000 the agent's
//! SDS socket (which hands out the workload's private key) and the directory
//! it creates for it are still closed to other users.

mod security_support;

use security_support::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn sds_socket_and_directory_ignore_a_permissive_umask() {
    let work = tempfile::tempdir().unwrap();
    let ca_work = work.path().join("ca");
    std::fs::create_dir_all(&ca_work).unwrap();
    let ca = start(&ca_work, &[]);
    let root = work.path().join("root.pem");
    std::fs::write(&root, ca.root_pem()).unwrap();
    let token = work.path().join("token");
    std::fs::write(&token, ca.token("default", "app")).unwrap();
    let socket_dir = work.path().join("uds");
    let socket = socket_dir.join("sds.sock");
    let http = format!("127.0.0.1:{}", meshca_testkit::free_port());
    let log = std::fs::File::create(work.path().join("agent.log")).unwrap();
    let mut child = std::process::Command::new(wrapper(work.path(), "umask 000"))
        .args(["agent", "--ca-addr", &ca.grpc.to_string(), "--ca-root", &root.display().to_string()])
        .args(["--ca-server-name", "localhost", "--token-file", &token.display().to_string()])
        .args(["--sds-socket", &socket.display().to_string(), "--http-addr", &http])
        .args(["--output-dir", &work.path().join("out").display().to_string()])
        .env("NO_COLOR", "1")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| m.permissions().mode() & 0o7777);
    let found = wait_for("the SDS socket", 30, || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("agent exited with {status}: {}", std::fs::read_to_string(work.path().join("agent.log")).unwrap());
        }
        // The mode is set right after bind; wait for the final one.
        mode(&socket).filter(|m| *m & 0o007 == 0)
    });
    let dir_mode = mode(&socket_dir).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    println!("sds: under umask 000 the socket is {found:o} and its directory {dir_mode:o}");
    assert_eq!(found, 0o660, "SDS socket mode");
    assert_eq!(dir_mode, 0o750, "SDS socket directory mode");
}
