//! Issue 15, findings 5, 6, 7 and 10 against the real binary: Vault
//! redirects, roots with pathLen:0 or CA:FALSE, plain-HTTP JWKS, and SPIFFE
//! IDs with dot segments.

mod security_support;

use meshca_jwt::{Jwks, SigningKey};
use security_support::*;
use std::path::Path;
use tonic::Code;

fn openssl(dir: &Path, args: &[&str]) {
    meshca_testkit::openssl::require();
    let out = std::process::Command::new("openssl").current_dir(dir).args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A P-256 key and CSR (or self-signed certificate with `x509_ext`) named `name`.
fn key_and(dir: &Path, name: &str, x509_ext: Option<&str>) {
    let key = format!("{name}.key");
    let mut args = vec!["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", &key];
    let subj = format!("/O=test/CN={name}");
    args.extend(["-subj", &subj]);
    let (out, ext);
    match x509_ext {
        Some(e) => {
            out = format!("{name}.pem");
            ext = e.to_string();
            args.extend(["-x509", "-days", "30", "-out", &out, "-addext", &ext]);
            args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        }
        None => {
            out = format!("{name}.csr");
            args.extend(["-out", &out]);
        }
    }
    openssl(dir, &args);
}

/// `child` signed by `parent` as a CA.
fn sign_ca(dir: &Path, child: &str, parent: &str) {
    std::fs::write(
        dir.join("ca.ext"),
        "[v3]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )
    .unwrap();
    key_and(dir, child, None);
    let (csr, ca, cakey, out) =
        (format!("{child}.csr"), format!("{parent}.pem"), format!("{parent}.key"), format!("{child}.pem"));
    openssl(
        dir,
        &["x509", "-req", "-in", &csr, "-CA", &ca, "-CAkey", &cakey, "-CAcreateserial", "-days", "20", "-out", &out]
            .into_iter()
            .chain(["-extfile", "ca.ext", "-extensions", "v3"])
            .collect::<Vec<_>>(),
    );
}

/// Lay out a plug-in set: signing `leaf_ca`, chain `chain` (signing first), root `root`.
fn plug(dir: &Path, ca_dir: &Path, signing: &str, chain: &[&str], root: &str) {
    std::fs::create_dir_all(ca_dir).unwrap();
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap();
    std::fs::write(ca_dir.join("ca-cert.pem"), read(&format!("{signing}.pem"))).unwrap();
    std::fs::write(ca_dir.join("ca-key.pem"), read(&format!("{signing}.key"))).unwrap();
    let chain: String = chain.iter().map(|c| read(&format!("{c}.pem"))).collect();
    std::fs::write(ca_dir.join("cert-chain.pem"), chain).unwrap();
    std::fs::write(ca_dir.join("root-cert.pem"), read(&format!("{root}.pem"))).unwrap();
}

#[test]
fn roots_with_path_len_0_above_two_cas_or_ca_false_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    key_and(d, "root0", Some("basicConstraints=critical,CA:TRUE,pathlen:0"));
    sign_ca(d, "int1", "root0");
    sign_ca(d, "int2", "int1");
    plug(d, &d.join("cacerts-pathlen"), "int2", &["int2", "int1"], "root0");
    let out = refuses_to_start(d, &["--ca-dir", &d.join("cacerts-pathlen").display().to_string()]);
    assert!(out.contains("root-cert.pem") && out.contains("pathLen:0") && out.contains("has 2"), "{out}");

    key_and(d, "rootnoca", Some("basicConstraints=critical,CA:FALSE"));
    sign_ca(d, "int3", "rootnoca");
    plug(d, &d.join("cacerts-noca"), "int3", &["int3"], "rootnoca");
    let out = refuses_to_start(d, &["--ca-dir", &d.join("cacerts-noca").display().to_string()]);
    assert!(out.contains("root-cert.pem") && out.contains("not a CA certificate"), "{out}");

    // The same chain under an unconstrained root is accepted.
    key_and(d, "rootok", Some("basicConstraints=critical,CA:TRUE"));
    sign_ca(d, "int4", "rootok");
    sign_ca(d, "int5", "int4");
    plug(d, &d.join("cacerts-ok"), "int5", &["int5", "int4"], "rootok");
    let ok = tempfile::tempdir().unwrap();
    let opts = meshca_testkit::ServerOptions { ca_dir: Some(d.join("cacerts-ok")), ..Default::default() };
    let server = meshca_testkit::Server::start(&bin(), ok.path(), opts).unwrap();
    assert_eq!(server.status()["source"], "plugged", "{}", server.status());
}

#[test]
fn plain_http_jwks_and_oidc_need_an_explicit_flag() {
    let work = tempfile::tempdir().unwrap();
    let out = refuses_to_start(work.path(), &["--jwt-issuer", "https://k8s=http://127.0.0.1:9/jwks"]);
    assert!(out.contains("plain HTTP") && out.contains("--jwt-allow-http"), "{out}");
    let out = refuses_to_start(work.path(), &["--jwt-issuer", "http://127.0.0.1:9=oidc"]);
    assert!(out.contains("--jwt-allow-http"), "{out}");
    // With the flag it starts, and says so.
    let server = start(work.path(), &["--jwt-issuer", "https://k8s=http://127.0.0.1:9/jwks", "--jwt-allow-http"]);
    assert!(server.logs().contains("plain HTTP (--jwt-allow-http)"), "{}", server.logs());
}

#[test]
fn vault_redirects_are_not_followed_with_the_token() {
    let target = Recorder::start(|_| json_reply("200 OK", r#"{"data":{}}"#));
    let target_addr = target.addr;
    let redirector = Recorder::start(move |line| {
        if line.contains("/v1/sys/health") {
            json_reply("200 OK", r#"{"initialized":true,"sealed":false,"standby":false}"#)
        } else {
            let path = line.split_whitespace().nth(1).unwrap_or("/");
            format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{target_addr}{path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        }
    });
    let work = tempfile::tempdir().unwrap();
    let out = refuses_to_start(
        work.path(),
        &[
            "--vault-addr",
            &format!("http://{}", redirector.addr),
            "--vault-token",
            "s.very-secret",
            "--vault-mode",
            "vault-kv",
        ],
    );
    assert!(out.contains("redirect") && out.contains("not followed"), "{out}");
    assert!(out.contains("plain http://"), "no warning about the http:// Vault address:\n{out}");
    let tokens_sent = redirector.seen().iter().filter(|s| s.headers.iter().any(|(k, _)| k == "x-vault-token")).count();
    assert!(tokens_sent >= 1, "the redirecting server never saw an authenticated call: {:?}", redirector.seen());
    assert!(target.seen().is_empty(), "the redirect was followed: {:?}", target.seen());
    assert!(!out.contains("s.very-secret"), "the token was logged");
}

async fn ask(client: &mut meshca_testkit::CaClient, token: &str, impersonate: Option<&str>) -> Result<String, Code> {
    let (csr, _) = meshca_testkit::make_csr(meshca_testkit::KeyType::EcP256, None);
    let resp = client
        .create_certificate(meshca_testkit::request(&csr, 3600, Some(token), impersonate))
        .await
        .map_err(|s| s.code())?;
    Ok(resp.into_inner().cert_chain[0].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_ids_with_dot_segments_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let issuer_key = SigningKey::generate_es256().unwrap();
    let jwks = work.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::to_string(&Jwks { keys: vec![issuer_key.public_jwk()] }).unwrap()).unwrap();
    let server = start(
        work.path(),
        &["--trusted-node-accounts", "kube-system/node", "--jwt-issuer", &format!("https://k8s={}", jwks.display())],
    );
    let mut client = meshca_testkit::connect(server.grpc, &server.root_pem(), None).await.unwrap();
    let node = server.token("kube-system", "node");
    for target in
        ["spiffe://cluster.local/ns/../sa/..", "spiffe://cluster.local/ns/./sa/x", "spiffe://cluster.local/ns/x/sa/."]
    {
        assert_eq!(ask(&mut client, &node, Some(target)).await, Err(Code::Unauthenticated), "{target}");
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    for (ns, sa) in [("..", "x"), ("x", ".."), (".", ".")] {
        let claims = serde_json::json!({
            "iss": "https://k8s", "sub": format!("system:serviceaccount:{ns}:{sa}"), "aud": ["istio-ca"],
            "iat": now - 60, "exp": now + 600,
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa}},
        });
        let token = issuer_key.sign(&claims).unwrap();
        assert_eq!(ask(&mut client, &token, None).await, Err(Code::Unauthenticated), "{ns}/{sa}");
    }
    // The node account itself and a legal impersonation still work.
    assert!(ask(&mut client, &node, Some("spiffe://cluster.local/ns/a.b/sa/c..d")).await.is_ok());
}
