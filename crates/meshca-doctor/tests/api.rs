//! The library API: a three-tier chain in the wrong order, and the extension
//! point for later categories (policy, HA).

use meshca_doctor::{run_categories, CategoryDef, CheckDef, CheckResult, Outcome, Severity, Status, Targets};
use meshca_pki::authority::{new_intermediate, new_root, AuthorityOptions};
use meshca_pki::pem::cert_to_pem;
use meshca_pki::{KeyKind, Signer};
use std::time::{Duration, SystemTime};

fn opts(cn: &str) -> AuthorityOptions {
    AuthorityOptions {
        common_name: cn.into(),
        organization: "Istio".into(),
        locality: None,
        ttl: Duration::from_secs(300 * 86400),
        key: KeyKind::EcP256,
        path_len: None,
    }
}

#[tokio::test]
async fn a_three_tier_chain_out_of_order_names_the_positions() {
    let now = SystemTime::now();
    let root = new_root(&opts("Root T"), now).unwrap();
    let root_signer = Signer::new(root.cert.clone(), root.key).unwrap();
    let mid = new_intermediate(&opts("Mid T"), &root_signer, now).unwrap();
    let mid_signer = Signer::new(mid.cert.clone(), mid.key).unwrap();
    let leafca = new_intermediate(&opts("Issuing T"), &mid_signer, now).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ca-cert.pem"), cert_to_pem(&leafca.cert)).unwrap();
    std::fs::write(d.join("ca-key.pem"), leafca.key.to_pkcs8_pem().as_bytes()).unwrap();
    std::fs::write(d.join("root-cert.pem"), cert_to_pem(&root.cert)).unwrap();
    let good = format!("{}{}", cert_to_pem(&leafca.cert), cert_to_pem(&mid.cert));
    std::fs::write(d.join("cert-chain.pem"), &good).unwrap();
    let targets = Targets { ca_dir: Some(d.to_path_buf()), ..Default::default() };
    let report = meshca_doctor::run(targets.clone()).await;
    assert!(report.success, "{report:#?}");
    assert_eq!(report.check("ca-material.chain-ordered").unwrap().result, Status::Ok);

    // Issuing, Root, Mid: the issuer of #1 is #3.
    let bad = format!("{}{}{}", cert_to_pem(&leafca.cert), cert_to_pem(&root.cert), cert_to_pem(&mid.cert));
    std::fs::write(d.join("cert-chain.pem"), bad).unwrap();
    let report = meshca_doctor::run(targets.clone()).await;
    let c = report.check("ca-material.chain-ordered").unwrap();
    assert_eq!(c.result, Status::Error);
    let e = c.error.as_deref().unwrap();
    assert!(e.contains("wrong order") && e.contains("Issuing T") && e.contains("its issuer is #3"), "{e}");

    // The middle intermediate missing: the chain stops short of the root.
    std::fs::write(d.join("cert-chain.pem"), cert_to_pem(&leafca.cert)).unwrap();
    let report = meshca_doctor::run(targets).await;
    let c = report.check("ca-material.chain-ordered").unwrap();
    assert_eq!(c.result, Status::Error);
    assert!(c.error.as_deref().unwrap().contains("issued by \"CN=Mid T,O=Istio\""), "{c:?}");
}

#[tokio::test]
async fn later_categories_plug_in_through_category_defs() {
    const STORE: CheckDef =
        CheckDef { id: "ha.store", description: "the store has a leader", severity: Severity::Fatal };
    const AGREE: CheckDef = CheckDef { id: "ha.agree", description: "replicas agree", severity: Severity::Error };
    fn ha(
        _: std::sync::Arc<meshca_doctor::Context>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<CheckResult>> + Send>> {
        Box::pin(async {
            let mut c = meshca_doctor::Checks::new();
            c.run(&STORE, || Outcome::fail("no leader", "quorum lost; start the missing members"));
            c.run(&AGREE, || Outcome::Ok);
            c.into_results()
        })
    }
    let mut cats = meshca_doctor::builtin_categories();
    cats.push(CategoryDef { name: "ha", run: ha });
    let report = run_categories(Targets::default(), &cats).await;
    assert!(!report.success);
    assert_eq!(report.categories.last().unwrap().name, "ha");
    assert_eq!(report.check("ha.agree").unwrap().result, Status::Skipped);
    // With no target at all every built-in check is skipped with its reason.
    for cat in &report.categories[..report.categories.len() - 1] {
        for c in &cat.checks {
            assert_eq!(c.result, Status::Skipped, "{c:?}");
            assert!(c.error.as_deref().is_some_and(|e| e.starts_with("no --") || e.starts_with("needs ")), "{c:?}");
        }
    }
}

#[tokio::test]
async fn a_category_that_outlives_the_budget_is_cut_off_and_named() {
    fn slow(
        _: std::sync::Arc<meshca_doctor::Context>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<CheckResult>> + Send>> {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Vec::new()
        })
    }
    let targets = Targets { timeout: Duration::from_millis(200), ..Default::default() };
    let report = run_categories(targets, &[CategoryDef { name: "slow", run: slow }]).await;
    let c = report.check("slow.deadline").expect("a deadline result");
    assert_eq!(c.result, Status::Error);
    assert!(c.error.as_deref().unwrap().contains("did not finish within 200ms"), "{c:?}");
    assert!(!report.success);
}
