//! Broken plug-in sets written over a good running set: each is refused as
//! a whole, the old material keeps signing, /status names the file at fault
//! and meshca_ca_reload_failures_total counts it; fixing the files is picked
//! up without a restart.

mod rotation_support;

use meshca_pki::authority::{new_intermediate, new_root};
use meshca_pki::pem::cert_to_pem;
use meshca_pki::{AuthorityOptions, KeyKind, PrivateKey, Signer};
use meshca_testkit::{openssl, Server, ServerOptions};
use rotation_support::*;
use std::path::Path;
use std::time::{Duration, SystemTime};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn authority(cn: &str, locality: Option<&str>, ttl: Duration) -> AuthorityOptions {
    AuthorityOptions {
        common_name: cn.into(),
        organization: "Istio".into(),
        locality: locality.map(Into::into),
        ttl,
        key: KeyKind::EcP256,
        path_len: locality.map(|_| 0),
    }
}

/// Root "a", valid since 30 days ago (so an already expired intermediate can sit under it),
/// written as `meshca certs root` would write it.
fn backdated_root(work: &Path) -> std::path::PathBuf {
    let root = new_root(&authority("Root a", None, 3650 * DAY), SystemTime::now() - 30 * DAY).unwrap();
    let dir = work.join("a");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("root-cert.pem"), cert_to_pem(&root.cert)).unwrap();
    std::fs::write(dir.join("root-key.pem"), root.key.to_pkcs8_pem().as_bytes()).unwrap();
    dir
}

/// An intermediate under the root in `root_dir` that expired 19 days ago.
fn expired_set(root_dir: &Path) -> CaSet {
    let root_pem = std::fs::read_to_string(root_dir.join("root-cert.pem")).unwrap();
    let key = PrivateKey::from_pem(&std::fs::read(root_dir.join("root-key.pem")).unwrap()).unwrap();
    let root_der = meshca_pki::pem::parse_certs(root_pem.as_bytes()).unwrap().remove(0);
    let signer = Signer::new(root_der, key).unwrap();
    let opts = authority("Intermediate CA - old", Some("old"), DAY);
    let inter = new_intermediate(&opts, &signer, SystemTime::now() - 20 * DAY).unwrap();
    let cert = cert_to_pem(&inter.cert);
    CaSet { chain: format!("{cert}{root_pem}"), cert, key: inter.key.to_pkcs8_pem().to_string(), root: root_pem }
}

struct Broken {
    what: &'static str,
    files: Vec<(&'static str, String)>,
    /// The file the error must name, and a phrase of the problem.
    file: &'static str,
    problem: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_sets_are_refused_and_fixes_are_picked_up() {
    openssl::require();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let root_a = backdated_root(w);
    let good = [make_inter(w, &root_a, "a1", "8000h"), make_inter(w, &root_a, "a2", "7000h")];
    let other = make_inter(w, &root_a, "a3", "6000h");
    let root_c = make_root(w, "c");
    let c1 = make_inter(w, &root_c, "c1", "6000h");
    let expired = expired_set(&root_a);
    let ca = w.join("cacerts");
    let mut dir = CaDir::kube(&ca, &good[0]);
    let server = Server::start(&bin(), w, ServerOptions { ca_dir: Some(ca.clone()), ..Default::default() }).unwrap();
    let token = server.token("default", "rot");
    let pem_a = good[0].root.clone();
    let mut wl = Issuer::new(&server, &pem_a, &token).await;
    let workload = wl.issue().await;
    let (leaf, leaf_key) = (workload[0].clone(), wl.key.clone());

    let without = |set: &CaSet, name: &str| set.files().into_iter().filter(|(n, _)| *n != name).collect::<Vec<_>>();
    let replace = |set: &CaSet, name: &'static str, with: String| {
        set.files().into_iter().map(|(n, c)| if n == name { (n, with.clone()) } else { (n, c) }).collect::<Vec<_>>()
    };
    let truncated = good[1].cert[..good[1].cert.len() / 2].to_string();
    let cases = [
        Broken {
            what: "missing file",
            files: without(&good[1], "ca-key.pem"),
            file: "ca-key.pem",
            problem: "missing ca-key.pem",
        },
        Broken {
            what: "truncated PEM",
            files: replace(&good[1], "ca-cert.pem", truncated),
            file: "ca-cert.pem",
            problem: "truncated or not PEM",
        },
        Broken {
            what: "key of another certificate",
            files: replace(&good[1], "ca-key.pem", other.key.clone()),
            file: "ca-key.pem",
            problem: "does not match the certificate",
        },
        Broken {
            what: "chain to an unknown root",
            files: c1.with_root(&pem_a).files(),
            file: "root-cert.pem",
            problem: "does not reach a trusted root",
        },
        Broken { what: "expired intermediate", files: expired.files(), file: "ca-cert.pem", problem: "expired at" },
        Broken {
            what: "non-CA certificate as ca-cert.pem",
            files: CaSet { cert: leaf.clone(), key: leaf_key, chain: format!("{leaf}{pem_a}"), root: pem_a.clone() }
                .files(),
            file: "ca-cert.pem",
            problem: "is not a CA certificate",
        },
    ];
    let mut active = 0;
    for (i, case) in cases.iter().enumerate() {
        let (fails, reloads) = (metric(&server, FAILURES), metric(&server, RELOADS));
        let generation = server.status()["generation"].clone();
        dir.kube_write(&case.files);
        let path = ca.join(case.file).display().to_string();
        let err = wait_last_error(&server, &[&path, case.problem]).await;
        assert_eq!(metric(&server, FAILURES), fails + 1.0, "{}: counted once: {err}", case.what);
        assert_eq!(metric(&server, RELOADS), reloads, "{}", case.what);
        let status = server.status();
        assert_eq!(status["generation"], generation, "{}: nothing swapped: {status}", case.what);
        assert!(status["last_error_at"].is_string(), "{status}");
        // The old material keeps signing, and its leaves verify.
        let chain = wl.issue().await;
        assert_eq!((&chain[1], &chain[2]), (&good[active].cert, &pem_a), "{}: the old intermediate signs", case.what);
        verify_chain_against(&w.join(format!("v{i}")), &chain, &pem_a).unwrap();
        assert_eq!(metric(&server, CHAIN_EXPIRY), good[active].not_after() as f64);

        // Fixing the files (with the other good intermediate) is picked up live and clears the error.
        active = 1 - active;
        dir.kube_write(&good[active].files());
        let what = format!("the fix after {}", case.what);
        let (chain, _) = wl.issue_until(&what, Duration::from_secs(10), |c| c[1] == good[active].cert).await;
        verify_chain_against(&w.join(format!("f{i}")), &chain, &pem_a).unwrap();
        assert_eq!(server.status()["last_error"], serde_json::Value::Null, "{what}");
        expect_counter(&server, RELOADS, reloads + 1.0).await;
    }
    let log = server.logs();
    assert_eq!(log.matches("CA material reload refused, the current material stays active").count(), cases.len());
}

/// The most natural fix is to put the previous secret back. Its material equals the active one, so
/// nothing is swapped, but the files are fine again and /status must stop reporting the old error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_the_active_set_clears_the_error() {
    openssl::require();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let root_a = make_root(w, "a");
    let (a1, a2) = (make_inter(w, &root_a, "a1", "8000h"), make_inter(w, &root_a, "a2", "7000h"));
    let ca = w.join("cacerts");
    let mut dir = CaDir::kube(&ca, &a1);
    let server = Server::start(&bin(), w, ServerOptions { ca_dir: Some(ca.clone()), ..Default::default() }).unwrap();
    let token = server.token("default", "rot");
    let mut wl = Issuer::new(&server, &a1.root, &token).await;

    let mut broken = a2.files();
    broken.retain(|(n, _)| *n != "ca-key.pem");
    broken.push(("ca-key.pem", a1.key.clone()));
    dir.kube_write(&broken);
    wait_last_error(&server, &[&ca.join("ca-key.pem").display().to_string(), "does not match"]).await;

    dir.kube_write(&a1.files());
    poll("/status last_error to clear once the active set is back", Duration::from_secs(5), || {
        server.status()["last_error"].is_null().then_some(())
    })
    .await;
    let chain = wl.issue().await;
    assert_eq!(chain[1], a1.cert);
    assert_eq!(metric(&server, FAILURES), 1.0);
    assert_eq!(metric(&server, RELOADS), 0.0, "the restored set equals the active one: nothing to swap");
}
