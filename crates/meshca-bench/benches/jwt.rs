//! JWT validation as meshca does it for every CreateCertificate carrying a
//! bearer token: `meshca_jwt::peek_issuer` then `meshca_jwt::verify`
//! (signature and claims), for ES256 and RS256 service-account tokens.

use criterion::{criterion_group, criterion_main, Criterion};
use meshca_jwt::{verify, Jwks, KeySet, SigningKey, Validation};
use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

fn token(key: &SigningKey) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    key.sign(&serde_json::json!({
        "iss": ISSUER,
        "aud": ["istio-ca"],
        "sub": "system:serviceaccount:bench:w00000",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "kubernetes.io": { "namespace": "bench", "serviceaccount": { "name": "w00000", "uid": "0c4f6b9e" } },
    }))
    .unwrap()
}

fn jwt(c: &mut Criterion) {
    let mut g = c.benchmark_group("jwt");
    for (name, key) in [("ES256", SigningKey::generate_es256()), ("RS256", SigningKey::generate_rs256())] {
        let key = key.unwrap();
        let token = token(&key);
        let keys = KeySet::from_jwks(&Jwks { keys: vec![key.public_jwk()] }).unwrap();
        let validation = Validation::new(ISSUER, "istio-ca");
        g.bench_function(format!("verify/{name}"), |b| {
            b.iter(|| {
                let iss = meshca_jwt::peek_issuer(black_box(&token)).unwrap();
                assert_eq!(iss, ISSUER);
                verify(black_box(&token), &keys, &validation).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, jwt);
criterion_main!(benches);
