//! `meshca doctor` with the Vault flags of `meshca serve`, against a real
//! OpenBao dev server set up as in seed 003: healthy, access denied (403),
//! missing secret objects and mounts (404), a bad token, and sealed.

mod doctor_support;
mod vault_support;

use doctor_support::*;
use vault_support::Bao;

fn kv_args<'a>(bao: &'a Bao, token: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["--vault-addr", bao.addr.as_str(), "--vault-mode", "vault-kv", "--vault-token", token];
    a.extend_from_slice(extra);
    a
}

#[test]
fn vault_layout_capabilities_and_seal_state() {
    let work = tempfile::tempdir().unwrap();
    let bao = Bao::start_dev(work.path());
    bao.setup_seed_pki();

    let run = doctor(&kv_args(&bao, "root", &[]));
    run.expect_healthy();
    for id in ["vault.reachable", "vault.token", "vault.capabilities", "vault.layout"] {
        run.expect(id, "ok", &[]);
    }
    let addr = bao.addr.clone();
    doctor(&["--vault-addr", &addr, "--vault-token", "root", "--vault-pki-mount", "pki_int"]).expect_healthy();

    // Access denied: a policy that forgot the KV secret holding the key.
    let policy =
        "path \"pki_int/cert/*\" { capabilities = [\"read\"] }\npath \"pki/cert/ca\" { capabilities = [\"read\"] }\n";
    bao.cli(&["policy", "write", "limited", bao.file("limited.hcl", policy).trim_start_matches('@')]);
    let limited = bao.cli(&["token", "create", "-policy=limited", "-field=token"]).trim().to_string();
    let run = doctor(&kv_args(&bao, &limited, &[]));
    assert_eq!(run.code, 1);
    run.expect("vault.token", "ok", &[]);
    run.expect(
        "vault.capabilities",
        "error",
        &["access denied", "\"read\" on \"kv/istioca\"", "403", "path \"kv/istioca\" { capabilities = [\"read\"] }"],
    );

    // A bad token.
    doctor(&kv_args(&bao, "not-a-token", &[])).expect(
        "vault.token",
        "error",
        &["refused the token", "invalid, expired or revoked"],
    );

    // Missing secret objects: the key secret deleted, a mount that does not exist.
    bao.cli(&["kv", "delete", "kv/istioca"]);
    let run = doctor(&kv_args(&bao, "root", &["--vault-cert-path", "pki_x/cert/ca"]));
    run.expect(
        "vault.layout",
        "error",
        &[
            "missing secret objects",
            "nothing is mounted at \"pki_x/\"",
            "does not exist at \"kv/istioca\"",
            "bao kv put",
        ],
    );

    // Sealed.
    bao.seal();
    let run = doctor(&kv_args(&bao, "root", &[]));
    run.expect("vault.reachable", "error", &["is sealed", "operator unseal"]);
    run.expect("vault.layout", "skipped", &["vault.reachable failed"]);
    assert_eq!(run.code, 1);
}

#[test]
fn vault_unreachable() {
    let addr = format!("http://{}", free_addr());
    doctor(&["--vault-addr", &addr, "--vault-token", "x"]).expect(
        "vault.reachable",
        "error",
        &["unreachable", "nothing listens"],
    );
}

#[test]
fn vault_over_https_with_and_without_its_ca() {
    let work = tempfile::tempdir().unwrap();
    let bao = Bao::start_dev_tls(work.path());
    bao.setup_seed_pki();
    let ca = bao.ca_file.clone().unwrap();
    let args = ["--vault-addr", &bao.addr, "--vault-mode", "vault-kv", "--vault-token", "root"];
    let mut with_ca = args.to_vec();
    with_ca.extend(["--vault-ca-file", ca.to_str().unwrap()]);
    doctor(&with_ca).expect_healthy();
    // Without --vault-ca-file the dev server's certificate is not trusted.
    doctor(&args).expect("vault.reachable", "error", &["unreachable", "--vault-ca-file"]);
}
