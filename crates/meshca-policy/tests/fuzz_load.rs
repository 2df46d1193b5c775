//! Bounded fuzzing of the loader: a deterministic random-mutation loop over valid policy files
//! (byte flips, insertions, deletions, duplicated and truncated slices, deep nesting). The loader
//! and the compiler must never panic; every error must carry the file name and a line.

use std::collections::BTreeMap;

use meshca_policy::compile::compile;
use meshca_policy::load::load_report;
use meshca_policy::model::{MeshSettings, PolicySet, Protocol, Workload};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/istio-authz");
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| {
            panic!("fuzz seed {} missing (the shared/ folder must sit beside the repository): {e}", f)
        })
    };
    vec![
        read("http/allow-full-rule-in.yaml"),
        read("tcp/deny-both-http-tcp-in.yaml"),
        read("http/custom-simple-http-in.yaml"),
        "{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [{\"apiVersion\": \"security.istio.io/v1\", \
         \"kind\": \"RequestAuthentication\", \"metadata\": {\"name\": \"r\"}, \"spec\": {\"jwtRules\": \
         [{\"issuer\": \"i\", \"jwksUri\": \"https://k/j\"}]}}]}"
            .to_string(),
        "apiVersion: rbac.istio.io/v1alpha1\nkind: ServiceRoleBinding\nmetadata: {name: b, namespace: foo}\nspec:\n  \
         subjects: [{user: \"*\"}]\n  roleRef: {kind: ServiceRole, name: r}\n"
            .to_string(),
    ]
}

const TOKENS: &[&str] = &[
    "\n",
    " ",
    "  ",
    "- ",
    ": ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\"",
    "'",
    "&a ",
    "*a",
    "---\n",
    "~",
    "null",
    "*",
    "!!str ",
    "\t",
    "#",
    "|\n",
    ">\n",
    "? ",
    "\u{0}",
    "\u{feff}",
    "é",
    "0x1F",
    "99999999999999999999",
];

fn mutate(rng: &mut Rng, input: &str) -> String {
    let mut bytes = input.as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(6) {
            0 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] = rng.next() as u8;
            }
            1 => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                bytes.splice(at..at, t.iter().copied());
            }
            2 if !bytes.is_empty() => {
                let end = (at + rng.below(40)).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
            3 if !bytes.is_empty() => {
                let start = rng.below(bytes.len());
                let end = (start + rng.below(200)).min(bytes.len());
                let slice = bytes[start..end].to_vec();
                bytes.splice(at..at, slice);
            }
            4 => bytes.truncate(at),
            _ => {
                let depth = rng.below(300);
                let open = if rng.below(2) == 0 { "[" } else { "{a: " };
                bytes.splice(at..at, open.repeat(depth).into_bytes());
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn loader_and_compiler_never_panic_on_mutated_input() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let workload = Workload::new("foo", BTreeMap::from([("app".to_string(), "httpbin".to_string())]));
    let mesh = MeshSettings::default();
    let mut loaded = 0usize;
    let mut rejected = 0usize;
    let seeds = seeds();
    for i in 0..3000 {
        let input = mutate(&mut rng, &seeds[i % seeds.len()]);
        let report = load_report("fuzz.yaml", &input);
        for e in &report.errors {
            assert_eq!(e.file, "fuzz.yaml");
            assert!(e.line >= 1, "error without a line: {e}");
            assert!(!e.message.is_empty());
        }
        if report.errors.is_empty() {
            loaded += 1;
        } else {
            rejected += 1;
        }
        let set = PolicySet::from_objects(report.objects);
        for protocol in [Protocol::Http, Protocol::Tcp] {
            let out =
                compile(&set, &workload, &mesh, protocol, None).expect("compile never fails with valid mesh settings");
            assert!(out.is_object());
        }
    }
    // Both outcomes must occur, or the mutations are not exercising anything.
    assert!(loaded > 50 && rejected > 50, "loaded {loaded}, rejected {rejected}");
}
