//! What every `meshca policy` verb shares: reading policy files and directories, and the
//! workload / mesh flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use meshca_policy::model::{MeshSettings, Object, PolicySet, Protocol, Workload};

/// Largest policy file read (the loader has its own, finer limits).
const MAX_FILE: u64 = 16 * 1024 * 1024;
const MAX_FILES: usize = 10_000;

/// The workload the policies are evaluated for, and the mesh settings.
#[derive(Args, Debug, Clone)]
pub struct WorkloadArgs {
    /// Workload namespace.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// Workload labels, `k=v,k2=v2` (repeatable).
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Filter chain: http or tcp.
    #[arg(long, default_value = "http", value_parser = ["http", "tcp"])]
    pub protocol: String,
    /// Workload (container) port the request arrives on.
    #[arg(long)]
    pub port: Option<u16>,
    /// Mesh trust domain [default: cluster.local, or the mesh config's].
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// Trust domain alias (repeatable).
    #[arg(long = "trust-domain-alias")]
    pub trust_domain_aliases: Vec<String>,
    /// Root namespace [default: istio-system, or the mesh config's].
    #[arg(long)]
    pub root_namespace: Option<String>,
    /// MeshConfig YAML (rootNamespace, trustDomain, trustDomainAliases, extensionProviders).
    #[arg(long)]
    pub mesh_config: Option<PathBuf>,
}

impl WorkloadArgs {
    pub fn workload(&self) -> anyhow::Result<Workload> {
        let mut labels = BTreeMap::new();
        for kv in self.labels.iter().filter(|s| !s.is_empty()) {
            let Some((k, v)) = kv.split_once('=') else { bail!("--labels {kv:?}: expected key=value") };
            labels.insert(k.trim().to_string(), v.trim().to_string());
        }
        Ok(Workload::new(self.namespace.clone(), labels))
    }

    pub fn protocol(&self) -> Protocol {
        if self.protocol == "tcp" {
            Protocol::Tcp
        } else {
            Protocol::Http
        }
    }

    pub fn mesh(&self) -> anyhow::Result<MeshSettings> {
        let mut mesh = match &self.mesh_config {
            Some(p) => {
                let text = read_text(p)?;
                meshca_policy::load::mesh_settings_str(&p.display().to_string(), &text).map_err(join_errors)?
            }
            None => MeshSettings::default(),
        };
        if let Some(td) = &self.trust_domain {
            mesh.trust_domain = td.clone();
        }
        if !self.trust_domain_aliases.is_empty() {
            mesh.trust_domain_aliases = self.trust_domain_aliases.clone();
        }
        if let Some(r) = &self.root_namespace {
            mesh.root_namespace = r.clone();
        }
        Ok(mesh)
    }
}

pub fn join_errors<E: std::fmt::Display>(errs: Vec<E>) -> anyhow::Error {
    let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
    anyhow::anyhow!("{}", lines.join("\n"))
}

/// A text file, size-capped.
pub fn read_text(p: &Path) -> anyhow::Result<String> {
    let meta = std::fs::metadata(p).with_context(|| format!("reading {}", p.display()))?;
    if meta.len() > MAX_FILE {
        bail!("{}: {} bytes is larger than the {MAX_FILE}-byte limit", p.display(), meta.len());
    }
    std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
}

/// The files under `paths`: files as given, directories walked for .yaml/.yml/.json, sorted.
pub fn policy_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).with_context(|| format!("reading {}", p.display()))?;
        if meta.is_dir() {
            walk(p, &mut out, 0)?;
        } else {
            out.push(p.clone());
        }
    }
    if out.len() > MAX_FILES {
        bail!("more than {MAX_FILES} policy files");
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> anyhow::Result<()> {
    if depth > 32 {
        bail!("{}: directories nested too deep", dir.display());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for e in entries {
        if e.is_dir() {
            walk(&e, out, depth + 1)?;
        } else if matches!(e.extension().and_then(|x| x.to_str()), Some("yaml" | "yml" | "json")) {
            out.push(e);
        }
        if out.len() > MAX_FILES {
            bail!("more than {MAX_FILES} policy files under {}", dir.display());
        }
    }
    Ok(())
}

/// Load every object of every file; all errors of all files are reported together.
pub fn load_objects(paths: &[PathBuf]) -> anyhow::Result<Vec<Object>> {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for f in policy_files(paths)? {
        let text = read_text(&f)?;
        match meshca_policy::load::load_str(&f.display().to_string(), &text) {
            Ok(o) => objects.extend(o),
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        return Err(join_errors(errors));
    }
    Ok(objects)
}

pub fn load_set(paths: &[PathBuf]) -> anyhow::Result<PolicySet> {
    Ok(PolicySet::from_objects(load_objects(paths)?))
}
