//! `ca-material`: the plug-in CA files of `--ca-dir`, checked before (or
//! while) a CA uses them.

use crate::certs::{self, describe, human_secs, DAY};
use crate::check::{CheckDef, CheckResult, Checks, Outcome, Severity};
use crate::Context;
use meshca_pki::CertDer;
use std::path::{Path, PathBuf};

pub const LAYOUT: CheckDef = CheckDef {
    id: "ca-material.files-complete",
    description: "plug-in CA files are present and complete for a layout",
    severity: Severity::Fatal,
};
pub const KEY_MATCH: CheckDef = CheckDef {
    id: "ca-material.key-matches-cert",
    description: "the CA private key matches the signing certificate",
    severity: Severity::Fatal,
};
pub const SIGNER_CA: CheckDef = CheckDef {
    id: "ca-material.signer-is-ca",
    description: "the signing certificate is a CA allowed to sign certificates",
    severity: Severity::Error,
};
pub const CHAIN: CheckDef = CheckDef {
    id: "ca-material.chain-ordered",
    description: "the chain is complete and ordered up to a root of the bundle",
    severity: Severity::Error,
};
pub const VALIDITY: CheckDef = CheckDef {
    id: "ca-material.validity",
    description: "root, intermediates and signing certificate are valid for at least 60 days",
    severity: Severity::Error,
};
pub const LIFETIME: CheckDef = CheckDef {
    id: "ca-material.outlives-workload-ttl",
    description: "the signing certificate outlives the longest workload certificate",
    severity: Severity::Warning,
};
pub const ALGORITHMS: CheckDef = CheckDef {
    id: "ca-material.algorithms",
    description: "CA keys and signatures use supported algorithms",
    severity: Severity::Error,
};

pub const ALL: [CheckDef; 7] = [LAYOUT, ALGORITHMS, KEY_MATCH, SIGNER_CA, CHAIN, VALIDITY, LIFETIME];

const ISTIO: [&str; 4] = ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"];
const K8S: [&str; 3] = ["tls.crt", "tls.key", "ca.crt"];

/// The files of one layout, read and parsed.
struct Material {
    cert_file: PathBuf,
    key_file: PathBuf,
    chain_file: PathBuf,
    roots_file: PathBuf,
    signer: CertDer,
    /// As written in the chain file.
    chain_raw: Vec<CertDer>,
    roots: Vec<CertDer>,
}

fn layout(dir: &Path) -> Result<Material, Outcome> {
    let have = |names: &[&str]| names.iter().filter(|n| dir.join(n).is_file()).count();
    let (a, b) = (have(&ISTIO), have(&K8S));
    let missing =
        |names: &[&'static str]| names.iter().filter(|n| !dir.join(n).is_file()).copied().collect::<Vec<&str>>();
    let (cert, key, chain, roots) = if a == ISTIO.len() {
        ("ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem")
    } else if b == K8S.len() {
        ("tls.crt", "tls.key", "tls.crt", "ca.crt")
    } else if a == 0 && b == 0 {
        return Err(Outcome::fail(
            format!("{} holds no plug-in CA files", dir.display()),
            format!(
                "a CA started with this --ca-dir generates a self-signed root instead. Put {} (Istio layout) or {} \
                 (kubernetes.io/tls) into {}",
                ISTIO.join(", "),
                K8S.join(", "),
                dir.display()
            ),
        ));
    } else {
        let names: &[&str] = if a >= b { &ISTIO } else { &K8S };
        let m = missing(names);
        return Err(Outcome::fail(
            format!("incomplete signing CA bundle in {}: missing {}", dir.display(), m.join(", ")),
            format!(
                "a partial set is refused (the secret objects were not all synced or created). Provide all of {} in {}",
                names.join(", "),
                dir.display()
            ),
        ));
    };
    let bad =
        |e: String| Outcome::fail(e, "replace the file with valid PEM certificates (openssl x509 -in FILE -text)");
    let cert_file = dir.join(cert);
    let chain_file = dir.join(chain);
    let roots_file = dir.join(roots);
    let signer = certs::read_certs(&cert_file).map_err(bad)?.remove(0);
    let chain_raw = certs::read_certs(&chain_file).map_err(bad)?;
    let roots = certs::read_certs(&roots_file).map_err(bad)?;
    Ok(Material { cert_file, key_file: dir.join(key), chain_file, roots_file, signer, chain_raw, roots })
}

pub fn run(ctx: &Context) -> Vec<CheckResult> {
    let mut c = Checks::new();
    let Some(dir) = ctx.targets.ca_dir.clone() else {
        c.skip_all(&ALL, "no --ca-dir given");
        return c.into_results();
    };
    let m = match layout(&dir) {
        Ok(m) => {
            c.record(&LAYOUT, Outcome::Ok);
            m
        }
        Err(o) => {
            c.record(&LAYOUT, o);
            for d in &ALL[1..] {
                c.run(d, || Outcome::Ok);
            }
            return c.into_results();
        }
    };
    let now = certs::unix(ctx.now);
    c.run(&ALGORITHMS, || algorithms(&m));
    c.run(&KEY_MATCH, || key_match(&m));
    c.run(&SIGNER_CA, || signer_is_ca(&m));
    c.run(&CHAIN, || chain(&m));
    c.run(&VALIDITY, || validity(&m, now));
    c.run(&LIFETIME, || lifetime(&m, now, ctx.targets.max_workload_ttl.as_secs() as i64));
    c.into_results()
}

fn key_match(m: &Material) -> Outcome {
    match certs::key_matches(&m.signer, &m.key_file) {
        Ok(true) => Outcome::Ok,
        Ok(false) => Outcome::fail(
            format!(
                "{} does not belong to {} ({}): the cert does not match the key",
                m.key_file.display(),
                m.cert_file.display(),
                describe(&m.signer)
            ),
            format!(
                "the key and certificate come from different generations (a rotation updated one file only). Put the \
                 key generated together with {} into {}",
                m.cert_file.display(),
                m.key_file.display()
            ),
        ),
        Err(e) => Outcome::fail(e, "write the CA private key as PEM (PKCS#8, PKCS#1 or SEC1)"),
    }
}

fn signer_is_ca(m: &Material) -> Outcome {
    let Some(i) = certs::info(&m.signer) else {
        return Outcome::fail(format!("{} does not parse", m.cert_file.display()), "replace it with a valid PEM");
    };
    if !i.is_ca {
        return Outcome::fail(
            format!(
                "{}: \"{}\" is not a CA certificate (basicConstraints CA:TRUE is missing)",
                m.cert_file.display(),
                i.subject
            ),
            "a workload or server certificate was plugged in where an intermediate CA belongs (\"certificate is not \
             authorized to sign other certificates\"). Issue an intermediate with CA:TRUE and keyCertSign \
             (meshca certs intermediate)",
        );
    }
    if !i.key_usage.is_empty() && !i.key_usage.iter().any(|k| k == "keyCertSign") {
        return Outcome::fail(
            format!(
                "{}: \"{}\" keyUsage lacks keyCertSign ({})",
                m.cert_file.display(),
                i.subject,
                i.key_usage.join(", ")
            ),
            "the certificate may not sign certificates. Reissue it with keyUsage keyCertSign, cRLSign",
        );
    }
    let has = |u: &str| i.extended_key_usage.iter().any(|e| e == u);
    if !i.extended_key_usage.is_empty() && (!has("serverAuth") || !has("clientAuth")) {
        return Outcome::warn(
            format!("{}: extended key usage restricted to {}", m.cert_file.display(), i.extended_key_usage.join(", ")),
            "verifiers apply a CA's EKU to the leaves below it, so mTLS can fail in one direction. Leave EKU out of \
             the intermediate, or include both serverAuth and clientAuth",
        );
    }
    Outcome::Ok
}

fn chain(m: &Material) -> Outcome {
    let mut chain = m.chain_raw.clone();
    let file = m.chain_file.display();
    match chain.iter().position(|c| c == &m.signer) {
        Some(0) => {}
        Some(p) => {
            return Outcome::fail(
                format!("wrong order in {file}: the signing certificate {} is #{}, not #1", describe(&m.signer), p + 1),
                format!("list {file} from the signing certificate upwards, each certificate followed by its issuer"),
            )
        }
        None => chain.insert(0, m.signer.clone()),
    }
    let root_copies = chain.iter().filter(|c| m.roots.contains(c)).count();
    // The root may close the chain (Istio's cert-chain.pem often ends with it).
    if chain.len() > 1 && m.roots.contains(chain.last().unwrap_or(&m.signer)) {
        chain.pop();
    }
    if let Some(p) = certs::chain_problem(&chain, &m.roots) {
        return Outcome::fail(
            format!("{file}: {p}"),
            format!(
                "Envoy and istiod refuse a chain that does not lead to a trusted root (\"x509: certificate signed by \
                 unknown authority\"). Fix {file}: the signing certificate first, then every intermediate in issuing \
                 order, and put the root that issued the top one into {}",
                m.roots_file.display()
            ),
        );
    }
    if root_copies > 1 {
        return Outcome::warn(
            format!("{file} contains the root {root_copies} times"),
            "peers receive a chain ending Root -> Root (istio#39001). Keep the root at most once at the end",
        );
    }
    Outcome::Ok
}

fn validity(m: &Material, now: i64) -> Outcome {
    let mut all: Vec<(&CertDer, String)> = vec![(&m.signer, m.cert_file.display().to_string())];
    all.extend(m.chain_raw.iter().map(|c| (c, m.chain_file.display().to_string())));
    all.extend(m.roots.iter().map(|c| (c, m.roots_file.display().to_string())));
    let mut soon = Vec::new();
    let mut seen: Vec<&CertDer> = Vec::new();
    for (der, file) in all {
        if seen.contains(&der) {
            continue;
        }
        seen.push(der);
        let Some(i) = certs::info(der) else { continue };
        match certs::validity(&i, now) {
            Err(e) => {
                return Outcome::fail(
                    format!("{file}: {e}"),
                    "every workload certificate chains through it, so handshakes fail with \"certificate has expired \
                     or is not yet valid\". Issue new CA material (meshca certs root/intermediate) or check the clocks",
                )
            }
            Ok(left) if left < 60 * DAY => {
                soon.push(format!("{file}: \"{}\" expires on {} (in {})", i.subject, i.not_after, human_secs(left)))
            }
            Ok(_) => {}
        }
    }
    if soon.is_empty() {
        Outcome::Ok
    } else {
        Outcome::warn(
            soon.join("; "),
            "less than 60 days left. Plan the rotation now: a new intermediate is hot-reloaded, a new root must first be \
             added to the bundle and reach every workload",
        )
    }
}

fn lifetime(m: &Material, now: i64, max_ttl: i64) -> Outcome {
    let Some(i) = certs::info(&m.signer) else { return Outcome::Ok };
    let left = i.not_after_unix - now;
    if left >= max_ttl {
        return Outcome::Ok;
    }
    Outcome::fail(
        format!(
            "{}: \"{}\" expires in {}, before a workload certificate issued now (up to {}) would",
            m.cert_file.display(),
            i.subject,
            human_secs(left),
            human_secs(max_ttl)
        ),
        "leaves issued now would outlive their issuer and break when it expires (istio#18990). Rotate the \
         intermediate, or lower the workload TTL (--max-workload-ttl states what the CA issues)",
    )
}

const WEAK_SIGNATURES: [(&str, &str); 3] = [
    ("1.2.840.113549.1.1.5", "sha1WithRSA"),
    ("1.2.840.113549.1.1.4", "md5WithRSA"),
    ("1.2.840.10045.4.1", "ecdsa-with-SHA1"),
];

fn algorithms(m: &Material) -> Outcome {
    let mut bad = Vec::new();
    for der in std::iter::once(&m.signer).chain(&m.chain_raw).chain(&m.roots) {
        let Some(i) = certs::info(der) else { continue };
        let key_ok = match i.key.as_str() {
            "ECDSA P-256" | "ECDSA P-384" | "Ed25519" => true,
            k if k.starts_with("RSA ") => k[4..].parse::<u32>().is_ok_and(|b| b >= 2048),
            _ => false,
        };
        if !key_ok {
            bad.push(format!("\"{}\" has a {} key", i.subject, i.key));
        }
        if let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) {
            let oid = cert.signature_algorithm.algorithm.to_id_string();
            if let Some((_, name)) = WEAK_SIGNATURES.iter().find(|(o, _)| *o == oid) {
                bad.push(format!("\"{}\" is signed with {name}", i.subject));
            }
        }
    }
    if bad.is_empty() {
        return Outcome::Ok;
    }
    bad.dedup();
    Outcome::fail(
        bad.join("; "),
        "Envoy and rustls reject weak keys and SHA-1/MD5 signatures. Reissue with ECDSA P-256/P-384 or RSA >= 2048 \
         and SHA-256 (meshca certs root --key ec-p256)",
    )
}
