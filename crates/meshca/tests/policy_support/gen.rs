//! Requests (and later policy sets) for the Envoy agreement tests.

use serde_json::{json, Value};

/// A small deterministic PRNG (xorshift64*), so a failing seed can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Requests that exercise the conformance goldens (peers named in them, paths, methods).
pub fn conformance_requests() -> Vec<Value> {
    let peers = [
        None,
        Some("allow"),
        Some("deny"),
        Some("cluster.local/ns/ns-1/sa/x"),
        Some("another.local/ns/a/sa/b"),
        Some("badtd/ns/a/sa/b"),
        Some("td1/ns/foo/sa/sleep"),
        Some("cluster.local/ns/foo/sa/sleep"),
    ];
    let paths = ["/allow", "/another", "/httpbin1", "/exact", "/prefix/x"];
    let mut out = Vec::new();
    for (i, p) in peers.iter().enumerate() {
        for (j, path) in paths.iter().enumerate().filter(|(j, _)| (i + j) % 2 == 0) {
            let method = if j % 2 == 0 { "GET" } else { "POST" };
            let mut r = json!({"name": format!("c{i}-{j}"), "method": method, "path": path, "host": "httpbin.foo",
                "source": {"ip": format!("127.0.0.{}", 1 + (i + j) % 3)}, "destination": {"ip": "127.0.0.1"}});
            if let Some(p) = p {
                r["source"]["principal"] = json!(format!("spiffe://{p}"));
            }
            out.push(r);
        }
    }
    out
}

pub const ISS: &str = "https://issuer.test";
pub const ISS2: &str = "https://other.test";

/// Signing keys and a pool of tokens (valid and every kind of invalid) for the generated sets.
pub struct Tokens {
    pub jwks_a: String,
    pub jwks_b: String,
    pub pool: Vec<(&'static str, String)>,
}

impl Tokens {
    pub fn new(now: i64) -> Tokens {
        let a = meshca_jwt::SigningKey::generate_es256().unwrap();
        let b = meshca_jwt::SigningKey::generate_rs256().unwrap();
        let c = meshca_jwt::SigningKey::generate_es256().unwrap();
        let jwks = |k: &meshca_jwt::SigningKey| json!({"keys": [k.public_jwk()]}).to_string();
        let exp = now + 3600;
        let sign = |k: &meshca_jwt::SigningKey, claims: Value| k.sign(&claims).unwrap();
        let alice = sign(
            &a,
            json!({"iss": ISS, "sub": "alice", "aud": "svc-a", "exp": exp, "groups": ["admins", "dev"],
            "scope": "read write", "azp": "web", "nested": {"level": "gold"}}),
        );
        let forged = {
            let other = sign(&c, json!({"iss": ISS, "sub": "alice", "aud": "svc-a", "exp": exp}));
            let (head, _) = alice.rsplit_once('.').unwrap();
            format!("{head}.{}", other.rsplit('.').next().unwrap())
        };
        let pool = vec![
            ("alice", alice),
            (
                "bob",
                sign(
                    &a,
                    json!({"iss": ISS, "sub": "bob", "aud": ["svc-a", "other"], "exp": exp, "groups": ["dev"], "scope": "read", "azp": "cli"}),
                ),
            ),
            (
                "carol",
                sign(
                    &a,
                    json!({"iss": ISS, "sub": "carol@example.com", "aud": "svc-a", "exp": exp, "nested": {"level": "silver"}}),
                ),
            ),
            ("dave-iss2", sign(&b, json!({"iss": ISS2, "sub": "dave", "aud": "svc-a", "exp": exp, "groups": ["ops"]}))),
            ("no-sub", sign(&a, json!({"iss": ISS, "aud": "svc-a", "exp": exp}))),
            ("expired", sign(&a, json!({"iss": ISS, "sub": "alice", "aud": "svc-a", "exp": now - 3600}))),
            ("not-yet", sign(&a, json!({"iss": ISS, "sub": "alice", "aud": "svc-a", "exp": exp, "nbf": now + 3600}))),
            ("wrong-aud", sign(&a, json!({"iss": ISS, "sub": "alice", "aud": "nope", "exp": exp}))),
            ("unknown-iss", sign(&a, json!({"iss": "https://unknown.test", "sub": "alice", "exp": exp}))),
            ("unknown-kid", sign(&c, json!({"iss": ISS, "sub": "alice", "aud": "svc-a", "exp": exp}))),
            ("forged", forged),
            ("garbage", "abc.def.ghi".to_string()),
        ];
        Tokens { jwks_a: jwks(&a), jwks_b: jwks(&b), pool }
    }
}

const PRINCIPALS: &[&str] = &[
    "cluster.local/ns/foo/sa/sleep",
    "cluster.local/ns/bar/sa/admin",
    "cluster.local/ns/foo/*",
    "*/sa/admin",
    "*",
    "other.td/ns/foo/sa/sleep",
];
const REQ_PRINCIPALS: &[&str] =
    &["https://issuer.test/alice", "https://issuer.test/*", "*/bob", "*", "*@example.com", "https://other.test/dave"];
const NAMESPACES: &[&str] = &["foo", "bar", "ba*", "*oo", "*"];
const SERVICE_ACCOUNTS: &[&str] = &["foo/sleep", "bar/admin", "sleep"];
const TRUST_DOMAINS: &[&str] = &["cluster.local", "other.td", "*"];
const IP_BLOCKS: &[&str] = &["127.0.0.2", "127.0.0.0/30", "127.0.0.8/29"];
const REMOTE_BLOCKS: &[&str] = &["10.0.0.1", "10.0.0.0/24", "192.168.1.0/24", "127.0.0.3"];
const HOSTS: &[&str] = &["example.com", "*.example.com", "api.*", "example.com:*", "*"];
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE"];
const PATHS: &[&str] = &["/api/*", "/admin", "*/info", "/v1/{*}/items", "/static/{**}", "/", "*"];

fn some(rng: &mut Rng, pool: &[&str]) -> Value {
    let n = 1 + rng.below(2);
    let mut v: Vec<String> = Vec::new();
    for _ in 0..n {
        let x = rng.pick(pool).to_string();
        if !v.contains(&x) {
            v.push(x);
        }
    }
    json!(v)
}

fn source(rng: &mut Rng) -> Value {
    let mut s = serde_json::Map::new();
    let fields: &[(&str, &[&str])] = &[
        ("principals", PRINCIPALS),
        ("requestPrincipals", REQ_PRINCIPALS),
        ("namespaces", NAMESPACES),
        ("serviceAccounts", SERVICE_ACCOUNTS),
        ("trustDomains", TRUST_DOMAINS),
        ("ipBlocks", IP_BLOCKS),
        ("remoteIpBlocks", REMOTE_BLOCKS),
    ];
    let n = 1 + rng.below(2);
    for _ in 0..n {
        let (f, pool) = *rng.pick(fields);
        let key = if rng.chance(30) { format!("not{}{}", &f[..1].to_uppercase(), &f[1..]) } else { f.to_string() };
        s.insert(key, some(rng, pool));
    }
    // serviceAccounts cannot be combined with principals or namespaces.
    let has_sa = s.keys().any(|k| k.to_lowercase().contains("serviceaccounts"));
    if has_sa {
        s.retain(|k, _| {
            let k = k.to_lowercase();
            (!k.contains("principals") || k.contains("request")) && !k.contains("namespaces")
        });
    }
    Value::Object(s)
}

fn operation(rng: &mut Rng, port: u16) -> Value {
    let mut o = serde_json::Map::new();
    let ports = [port.to_string(), "9999".to_string()];
    let port_pool: Vec<&str> = ports.iter().map(String::as_str).collect();
    let fields: &[(&str, &[&str])] = &[("hosts", HOSTS), ("methods", METHODS), ("paths", PATHS), ("ports", &port_pool)];
    let n = 1 + rng.below(2);
    for _ in 0..n {
        let (f, pool) = *rng.pick(fields);
        let key = if rng.chance(30) { format!("not{}{}", &f[..1].to_uppercase(), &f[1..]) } else { f.to_string() };
        o.insert(key, some(rng, pool));
    }
    Value::Object(o)
}

fn condition(rng: &mut Rng, port: u16) -> Value {
    let p = port.to_string();
    let keys: &[(&str, &[&str])] = &[
        ("request.headers[x-user]", &["alice", "ad*", "*ob", "*"]),
        ("source.ip", IP_BLOCKS),
        ("remote.ip", REMOTE_BLOCKS),
        ("source.namespace", NAMESPACES),
        ("source.principal", PRINCIPALS),
        ("source.serviceAccount", &["foo/sleep", "bar/admin"]),
        ("source.trustDomain", &["cluster.local", "other.td"]),
        ("request.auth.principal", REQ_PRINCIPALS),
        ("request.auth.audiences", &["svc-a", "other", "svc*"]),
        ("request.auth.presenter", &["web", "cli"]),
        ("request.auth.claims[groups]", &["admins", "dev", "ops"]),
        ("request.auth.claims[scope]", &["read", "write"]),
        ("request.auth.claims[nested][level]", &["gold", "silver"]),
        ("destination.ip", &["127.0.0.1", "127.0.0.0/8", "10.0.0.0/8"]),
        ("destination.port", &[p.as_str(), "9999"]),
        ("connection.sni", &["svc.example.com", "*.example.com", "other.test"]),
        ("experimental.envoy.filters.network.mysql_proxy[db.table]", &["[update]", "x"]),
    ];
    let (k, pool) = *rng.pick(keys);
    let mut c = json!({"key": k});
    match rng.below(3) {
        0 => c["values"] = some(rng, pool),
        1 => c["notValues"] = some(rng, pool),
        _ => {
            c["values"] = some(rng, pool);
            c["notValues"] = some(rng, pool);
        }
    }
    c
}

fn rule(rng: &mut Rng, port: u16) -> Value {
    if rng.chance(8) {
        return json!({});
    }
    let mut r = serde_json::Map::new();
    if rng.chance(60) {
        r.insert(
            "from".into(),
            json!((0..1 + rng.below(2)).map(|_| json!({"source": source(rng)})).collect::<Vec<_>>()),
        );
    }
    if rng.chance(60) {
        r.insert(
            "to".into(),
            json!((0..1 + rng.below(2)).map(|_| json!({"operation": operation(rng, port)})).collect::<Vec<_>>()),
        );
    }
    if r.is_empty() || rng.chance(40) {
        r.insert("when".into(), json!((0..1 + rng.below(2)).map(|_| condition(rng, port)).collect::<Vec<_>>()));
    }
    Value::Object(r)
}

fn meta(name: &str, ns: &str, dry_run: bool) -> Value {
    let mut m = json!({"name": name, "namespace": ns});
    if dry_run {
        m["annotations"] = json!({"istio.io/dry-run": "true"});
    }
    m
}

/// One generated policy set: Kubernetes objects and requests.
pub struct GenSet {
    pub tcp: bool,
    pub objects: Vec<Value>,
    pub requests: Vec<Value>,
    pub extra_args: Vec<String>,
}

/// A random policy set for the workload foo/{app: httpbin, version: v1} on `port`, and `n` requests.
pub fn policy_set(rng: &mut Rng, idx: usize, port: u16, tokens: &Tokens, n: usize) -> GenSet {
    let tcp = rng.chance(30);
    let mut objects = Vec::new();
    for i in 0..1 + rng.below(4) {
        let action = *rng.pick(&["ALLOW", "ALLOW", "ALLOW", "DENY", "DENY", "AUDIT"]);
        let ns = *rng.pick(&["foo", "foo", "foo", "foo", "istio-system", "bar"]);
        let mut spec = serde_json::Map::new();
        if action != "ALLOW" || !rng.chance(6) {
            spec.insert("action".into(), json!(action));
            spec.insert("rules".into(), json!((0..1 + rng.below(3)).map(|_| rule(rng, port)).collect::<Vec<_>>()));
        }
        match rng.below(10) {
            0..=4 => {}
            5..=8 => {
                spec.insert("selector".into(), json!({"matchLabels": {"app": "httpbin"}}));
            }
            _ => {
                spec.insert("selector".into(), json!({"matchLabels": {"app": "other"}}));
            }
        }
        objects.push(json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": meta(&format!("p{idx}-{i}"), ns, rng.chance(15)), "spec": spec}));
    }
    if rng.chance(60) {
        let mut rules = vec![json!({"issuer": ISS, "jwks": tokens.jwks_a})];
        if rng.chance(50) {
            rules[0]["audiences"] = json!(["svc-a"]);
        }
        if rng.chance(40) {
            rules.push(json!({"issuer": ISS2, "jwks": tokens.jwks_b}));
        }
        objects.push(json!({"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
            "metadata": meta(&format!("ra{idx}"), "foo", false), "spec": {"jwtRules": rules}}));
    }
    let mut extra_args = Vec::new();
    if rng.chance(10) {
        extra_args.extend(["--trust-domain", "other.td", "--trust-domain-alias", "cluster.local"].map(String::from));
    }
    let requests = (0..n).map(|j| request(rng, format!("s{idx}-r{j}"), port, tcp, tokens)).collect();
    GenSet { tcp, objects, requests, extra_args }
}

fn request(rng: &mut Rng, name: String, port: u16, tcp: bool, tokens: &Tokens) -> Value {
    let mut r = json!({"name": name, "source": {"ip": format!("127.0.0.{}", 1 + rng.below(10))},
        "destination": {"ip": "127.0.0.1", "port": port}});
    if !rng.chance(30) {
        let p = *rng.pick(&[
            "spiffe://cluster.local/ns/foo/sa/sleep",
            "spiffe://cluster.local/ns/bar/sa/admin",
            "spiffe://other.td/ns/foo/sa/sleep",
            "spiffe://cluster.local/ns/baz/sa/x",
        ]);
        r["source"]["principal"] = json!(p);
        if rng.chance(40) {
            r["sni"] = json!(*rng.pick(&["svc.example.com", "a.example.com", "other.test"]));
        }
    }
    if tcp {
        return r;
    }
    if rng.chance(40) {
        r["remote"] = json!({"ip": *rng.pick(&["10.0.0.1", "10.0.0.7", "192.168.1.9", "127.0.0.3"])});
    }
    r["method"] = json!(*rng.pick(&["GET", "POST", "PUT", "DELETE", "PATCH"]));
    r["path"] = json!(*rng.pick(&[
        "/api/x",
        "/admin",
        "/admin?debug=1",
        "/a/info",
        "/v1/7/items",
        "/v1/7/8/items",
        "/static/a/b",
        "/api/../admin",
        "/",
        "/other",
        "/%61dmin",
    ]));
    r["host"] =
        json!(*rng.pick(&["example.com", "a.example.com", "api.test", "EXAMPLE.COM", "example.com:8080", "other.org"]));
    if rng.chance(60) {
        r["headers"] = json!({"x-user": *rng.pick(&["alice", "admin", "bob", "carol"])});
    }
    if rng.chance(50) {
        let (_, t) = rng.pick(&tokens.pool);
        r["jwt"] = json!(t);
    }
    r
}
