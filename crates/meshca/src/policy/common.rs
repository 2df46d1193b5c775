//! What every `meshca policy` verb shares: reading policy files and directories, and the
//! workload / mesh flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;
use meshca_policy::model::{MeshSettings, Object, PolicySet, Protocol, Workload};

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

/// A text file, size-capped (shared with `meshca serve --policy-dir`).
pub fn read_text(p: &Path) -> anyhow::Result<String> {
    Ok(meshca_ca::policy::files::read_text(p)?)
}

/// The files under `paths`: files as given, directories walked for .yaml/.yml/.json, sorted.
pub fn policy_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    Ok(meshca_ca::policy::files::policy_files(paths)?)
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
