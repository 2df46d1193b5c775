//! The issuance function of meshca's CreateCertificate, without the network:
//! `meshca_pki::csr::validate` (parse, policy checks, CSR signature) and
//! `Signer::issue` (build and sign the leaf), for ECDSA P-256 and RSA-2048
//! (CA and CSR of the same kind).

use criterion::{criterion_group, criterion_main, Criterion};
use meshca_pki::authority::new_root;
use meshca_pki::csr::{self, CsrPolicy};
use meshca_pki::{AuthorityOptions, KeyKind, LeafProfile, Signer};
use meshca_testkit::KeyType;
use std::hint::black_box;
use std::time::{Duration, SystemTime};

const ID: &str = "spiffe://cluster.local/ns/bench/sa/w00000";

fn signer(key: KeyKind) -> Signer {
    let opts = AuthorityOptions {
        common_name: "Bench CA".into(),
        organization: "bench".into(),
        locality: None,
        ttl: Duration::from_secs(365 * 24 * 3600),
        key,
        path_len: None,
    };
    let ca = new_root(&opts, SystemTime::now()).expect("CA");
    Signer::new(ca.cert, ca.key).expect("signer")
}

fn issuance(c: &mut Criterion) {
    let policy = CsrPolicy::default();
    let profile = LeafProfile { uris: vec![ID.into()], dns_names: vec![], ttl: Duration::from_secs(24 * 3600) };
    for (name, ca_key, csr_key) in
        [("ec-p256", KeyKind::EcP256, KeyType::EcP256), ("rsa-2048", KeyKind::Rsa2048, KeyType::Rsa2048)]
    {
        let signer = signer(ca_key);
        let (csr_pem, _) = meshca_testkit::make_csr(csr_key, Some(ID));
        let spki = csr::validate(&csr_pem, ID, &policy).expect("valid CSR").spki_der;
        let now = SystemTime::now();
        let mut g = c.benchmark_group(format!("issuance/{name}"));
        g.bench_function("csr_validate", |b| b.iter(|| csr::validate(black_box(&csr_pem), ID, &policy).unwrap()));
        g.bench_function("signer_issue", |b| b.iter(|| signer.issue(black_box(&spki), &profile, now).unwrap()));
        g.bench_function("validate_and_issue", |b| {
            b.iter(|| {
                let v = csr::validate(black_box(&csr_pem), ID, &policy).unwrap();
                signer.issue(&v.spki_der, &profile, now).unwrap()
            })
        });
        g.finish();
    }
}

criterion_group!(benches, issuance);
criterion_main!(benches);
