//! Loading policy files: text in, typed [`Object`]s out.
//!
//! [`load_str`] / [`load_report`] read multi-document YAML, JSON and `kind: List` text. Every error
//! names the file, the line and the field path, for example
//! `policies.yaml:12: spec.rules[0].from[0].source.principal: unknown field "principal", did you mean "principals"?`.
//! Unknown fields and wrong types are errors; Istio's validation rules ([`crate::validate`]) add
//! errors and warnings. Objects of kinds that are not security policies (Deployments, Services...)
//! are skipped with a warning. Input size, nesting depth, node count and document count are capped
//! ([`Limits`]), so no input can panic the loader or make it use unbounded memory.
//!
//! [`mesh_settings_str`] reads a MeshConfig (plain, inside an `istio` ConfigMap's `data.mesh`, or
//! under `meshConfig:`) into [`MeshSettings`].

use std::collections::BTreeMap;

use crate::model::{
    AuthnPolicy, AuthorizationPolicy, ExtensionProvider, MeshSettings, Object, ObjectMeta, PeerAuthentication,
    RbacConfig, RequestAuthentication, ServiceRole, ServiceRoleBinding, SourceLocation, Spec,
};
use crate::schema::{self, Field, Ty};
use crate::validate::{self, Severity};
use crate::yaml::{self, Node, Value};

pub use crate::yaml::Limits;

/// One loader diagnostic (an error or a warning).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct LoadError {
    pub file: String,
    pub line: u32,
    /// Field path such as `spec.rules[0].to[0].operation.ports[1]`; empty for document-level errors.
    pub path: String,
    pub message: String,
}

impl LoadError {
    fn render(&self) -> String {
        if self.path.is_empty() {
            format!("{}:{}: {}", self.file, self.line, self.message)
        } else {
            format!("{}:{}: {}: {}", self.file, self.line, self.path, self.message)
        }
    }
}

/// Everything the loader found in one file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Objects without errors (objects with errors are left out).
    pub objects: Vec<Object>,
    pub errors: Vec<LoadError>,
    pub warnings: Vec<LoadError>,
}

/// Loads every object of `text`; `file_name` is only used in locations and messages.
/// Returns the errors when there is any (warnings are dropped; use [`load_report`] to see them).
pub fn load_str(file_name: &str, text: &str) -> Result<Vec<Object>, Vec<LoadError>> {
    let report = load_report(file_name, text);
    if report.errors.is_empty() {
        Ok(report.objects)
    } else {
        Err(report.errors)
    }
}

/// Loads every object of `text` with the default [`Limits`], keeping errors and warnings.
pub fn load_report(file_name: &str, text: &str) -> LoadReport {
    load_report_with_limits(file_name, text, Limits::default())
}

/// [`load_report`] with explicit limits.
pub fn load_report_with_limits(file_name: &str, text: &str, limits: Limits) -> LoadReport {
    let mut report = LoadReport::default();
    let docs = match yaml::parse_documents(text, limits) {
        Ok(d) => d,
        Err(e) => {
            report.errors.push(LoadError {
                file: file_name.to_string(),
                line: e.line,
                path: String::new(),
                message: e.message,
            });
            return report;
        }
    };
    for doc in docs.iter().filter(|d| !matches!(d.value, Value::Null)) {
        load_document(file_name, doc, "", &mut report);
    }
    report
}

/// Parses YAML or JSON text (all documents) into JSON values, for callers that read other files
/// (requests, inventories, golden files) with the same bounded parser.
pub fn yaml_to_json(file_name: &str, text: &str) -> Result<Vec<serde_json::Value>, LoadError> {
    yaml::parse_documents(text, Limits::default())
        .map(|docs| docs.iter().map(Node::to_json).collect())
        .map_err(|e| LoadError { file: file_name.to_string(), line: e.line, path: String::new(), message: e.message })
}

fn load_document(file: &str, doc: &Node, prefix: &str, report: &mut LoadReport) {
    let err = |line: u32, path: &str, message: String| LoadError {
        file: file.to_string(),
        line,
        path: path.to_string(),
        message,
    };
    if !matches!(doc.value, Value::Map(_)) {
        let at = if prefix.is_empty() { "" } else { prefix };
        report.errors.push(err(
            doc.line,
            at,
            format!("expected a Kubernetes object (a mapping), found {}", doc.type_name()),
        ));
        return;
    }
    let p = |f: &str| if prefix.is_empty() { f.to_string() } else { format!("{prefix}.{f}") };
    let kind = doc.get("kind").and_then(Node::as_str).unwrap_or_default().to_string();
    let api_version = doc.get("apiVersion").and_then(Node::as_str).unwrap_or_default().to_string();
    if kind.is_empty() {
        report.errors.push(err(doc.line, &p("kind"), "missing field \"kind\"".to_string()));
        return;
    }
    if kind == "List" || kind.ends_with("List") && doc.get("items").is_some() {
        match doc.get("items").map(|n| &n.value) {
            Some(Value::Seq(items)) => {
                for (i, item) in items.iter().enumerate() {
                    load_document(file, item, &p(&format!("items[{i}]")), report);
                }
            }
            None | Some(Value::Null) => {}
            Some(_) => report.errors.push(err(doc.line, &p("items"), "expected a list".to_string())),
        }
        return;
    }
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version.as_str()));
    let Some(&(_, versions, _, spec_schema)) = schema::KINDS.iter().find(|(_, _, k, _)| *k == kind) else {
        let ours = schema::KINDS.iter().any(|(g, _, _, _)| *g == group);
        if ours {
            let kinds: Vec<&str> = schema::KINDS.iter().filter(|(g, ..)| *g == group).map(|(_, _, k, _)| *k).collect();
            let msg = format!("unknown kind \"{kind}\" in {group}{}", did_you_mean(&kind, &kinds));
            report.errors.push(err(doc.get("kind").map_or(doc.line, |n| n.line), &p("kind"), msg));
        } else {
            let msg = format!("skipped {kind} ({api_version}): not a security policy");
            report.warnings.push(err(doc.line, prefix, msg));
        }
        return;
    };
    let expected_group = schema::KINDS.iter().find(|(_, _, k, _)| *k == kind).map_or("", |e| e.0);
    if group != expected_group || !versions.contains(&version) {
        let want: Vec<String> = versions.iter().map(|v| format!("{expected_group}/{v}")).collect();
        let line = doc.get("apiVersion").map_or(doc.line, |n| n.line);
        let msg = format!("apiVersion \"{api_version}\" is not valid for {kind}; use {}", want.join(" or "));
        report.errors.push(err(line, &p("apiVersion"), msg));
        return;
    }

    let mut ck = Checker { file, prefix: prefix.to_string(), errors: Vec::new(), lines: BTreeMap::new() };
    const TOP: &[Field] = &[
        ("apiVersion", Ty::Str),
        ("kind", Ty::Str),
        ("metadata", Ty::Obj(schema::METADATA)),
        ("spec", Ty::Any),
        ("status", Ty::Any),
    ];
    ck.check(doc, Ty::Obj(TOP), "");
    let meta_json = match doc.get("metadata") {
        Some(m) => ck.check(m, Ty::Obj(schema::METADATA), "metadata"),
        None => serde_json::Value::Null,
    };
    let spec_json = match doc.get("spec") {
        Some(s) => ck.check(s, Ty::Obj(spec_schema), "spec"),
        None => serde_json::json!({}),
    };
    let spec_json = if spec_json.is_null() { serde_json::json!({}) } else { spec_json };
    let meta: ObjectMeta =
        if meta_json.is_null() { ObjectMeta::default() } else { from_json(&mut ck, doc.line, "metadata", meta_json) };
    if meta.name.is_empty() {
        ck.error(doc.line, "metadata.name", "missing field \"name\"".to_string());
    }
    let spec = build_spec(&mut ck, &kind, doc.line, spec_json);
    let had_errors = !ck.errors.is_empty();
    report.errors.append(&mut ck.errors);
    let (Some(spec), false) = (spec, had_errors) else { return };
    let object = Object {
        api_version,
        meta,
        spec,
        source: SourceLocation { file: file.to_string(), line: doc.line },
        lines: ck.lines,
    };
    let mut failed = false;
    for finding in validate::validate(&object) {
        let e = err(object.line_of(&finding.path), &p(&finding.path), finding.message);
        match finding.severity {
            Severity::Error => {
                failed = true;
                report.errors.push(e);
            }
            Severity::Warning => report.warnings.push(e),
        }
    }
    if !failed {
        report.objects.push(object);
    }
}

fn build_spec(ck: &mut Checker<'_>, kind: &str, line: u32, v: serde_json::Value) -> Option<Spec> {
    Some(match kind {
        "AuthorizationPolicy" => Spec::AuthorizationPolicy(from_json::<AuthorizationPolicy>(ck, line, "spec", v)),
        "RequestAuthentication" => Spec::RequestAuthentication(from_json::<RequestAuthentication>(ck, line, "spec", v)),
        "PeerAuthentication" => Spec::PeerAuthentication(from_json::<PeerAuthentication>(ck, line, "spec", v)),
        "ServiceRole" => Spec::ServiceRole(from_json::<ServiceRole>(ck, line, "spec", v)),
        "ServiceRoleBinding" => Spec::ServiceRoleBinding(from_json::<ServiceRoleBinding>(ck, line, "spec", v)),
        "ClusterRbacConfig" => Spec::ClusterRbacConfig(from_json::<RbacConfig>(ck, line, "spec", v)),
        "RbacConfig" => Spec::RbacConfig(from_json::<RbacConfig>(ck, line, "spec", v)),
        "Policy" => Spec::Policy(from_json::<AuthnPolicy>(ck, line, "spec", v)),
        "MeshPolicy" => Spec::MeshPolicy(from_json::<AuthnPolicy>(ck, line, "spec", v)),
        _ => return None,
    })
}

fn from_json<T: serde::de::DeserializeOwned + Default>(
    ck: &mut Checker<'_>,
    line: u32,
    path: &str,
    v: serde_json::Value,
) -> T {
    match serde_json::from_value(v) {
        Ok(t) => t,
        Err(e) => {
            if ck.errors.is_empty() {
                ck.error(line, path, format!("invalid value: {e}"));
            }
            T::default()
        }
    }
}

/// Suggestion text `, did you mean "x"?` for the closest of `options`, or empty.
pub fn did_you_mean(word: &str, options: &[&str]) -> String {
    let lower = word.to_ascii_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for &o in options {
        let d = if o.to_ascii_lowercase() == lower { 0 } else { strsim::levenshtein(&lower, &o.to_ascii_lowercase()) };
        let limit = (word.chars().count() / 3).max(2);
        let close = d <= limit || (word.len() >= 4 && o.to_ascii_lowercase().starts_with(&lower));
        if close && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, o));
        }
    }
    best.map(|(_, o)| format!(", did you mean \"{o}\"?")).unwrap_or_default()
}

struct Checker<'a> {
    file: &'a str,
    prefix: String,
    errors: Vec<LoadError>,
    lines: BTreeMap<String, u32>,
}

const MAX_ERRORS: usize = 200;

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Checker<'_> {
    fn error(&mut self, line: u32, path: &str, message: String) {
        if self.errors.len() >= MAX_ERRORS {
            return;
        }
        let path = match (self.prefix.is_empty(), path.is_empty()) {
            (true, _) => path.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}.{path}", self.prefix),
        };
        self.errors.push(LoadError { file: self.file.to_string(), line, path, message });
    }

    fn expected(&mut self, node: &Node, path: &str, what: &str) -> serde_json::Value {
        self.error(node.line, path, format!("expected {what}, found {}", node.type_name()));
        serde_json::Value::Null
    }

    /// Checks `node` against `ty`, records line numbers and returns the JSON to deserialize.
    fn check(&mut self, node: &Node, ty: Ty, path: &str) -> serde_json::Value {
        use serde_json::Value as J;
        self.lines.entry(path.to_string()).or_insert(node.line);
        if matches!(node.value, Value::Null) {
            return J::Null;
        }
        match ty {
            Ty::Any => node.to_json(),
            Ty::Str => match &node.value {
                Value::Scalar { text, .. } => J::String(text.clone()),
                _ => self.expected(node, path, "a string"),
            },
            Ty::Bool => match yaml::plain_scalar_json(node.as_str().unwrap_or("-")) {
                J::Bool(b) if node.as_str().is_some() => J::Bool(b),
                _ => self.expected(node, path, "true or false"),
            },
            Ty::Uint => match node.as_str().map(|s| s.parse::<u32>()) {
                Some(Ok(n)) => J::from(n),
                _ => self.expected(node, path, "a non-negative integer"),
            },
            Ty::Enum(options) => match node.as_str() {
                Some(s) if options.contains(&s) => J::String(s.to_string()),
                Some(s) => {
                    let msg = format!(
                        "invalid value \"{s}\", expected one of {}{}",
                        options.join(", "),
                        did_you_mean(s, options)
                    );
                    self.error(node.line, path, msg);
                    J::Null
                }
                None => self.expected(node, path, "a string"),
            },
            Ty::StrList => self.check(node, Ty::List(&Ty::Str), path),
            Ty::StrMap => match &node.value {
                Value::Map(entries) => {
                    let mut out = serde_json::Map::new();
                    for (k, kline, v) in entries {
                        let vp = format!("{path}[{k}]");
                        self.lines.entry(vp.clone()).or_insert(*kline);
                        match &v.value {
                            Value::Scalar { text, .. } => {
                                out.insert(k.clone(), J::String(text.clone()));
                            }
                            Value::Null => {
                                out.insert(k.clone(), J::String(String::new()));
                            }
                            _ => {
                                self.expected(v, &vp, "a string");
                            }
                        }
                    }
                    J::Object(out)
                }
                _ => self.expected(node, path, "a mapping of strings"),
            },
            Ty::List(inner) => match &node.value {
                Value::Seq(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        let ip = format!("{path}[{i}]");
                        if matches!(item.value, Value::Null) {
                            self.error(item.line, &ip, "must not be null".to_string());
                            continue;
                        }
                        out.push(self.check(item, *inner, &ip));
                    }
                    J::Array(out)
                }
                _ => self.expected(node, path, "a list"),
            },
            Ty::PortMap(inner) => match &node.value {
                Value::Map(entries) => {
                    let mut out = serde_json::Map::new();
                    for (k, kline, v) in entries {
                        let vp = format!("{path}[{k}]");
                        self.lines.entry(vp.clone()).or_insert(*kline);
                        match k.parse::<u32>() {
                            Ok(_) => {
                                let val = self.check(v, *inner, &vp);
                                out.insert(k.clone(), if val.is_null() { serde_json::json!({}) } else { val });
                            }
                            Err(_) => self.error(*kline, &vp, format!("port \"{k}\" is not a number")),
                        }
                    }
                    J::Object(out)
                }
                _ => self.expected(node, path, "a mapping of port numbers"),
            },
            Ty::Obj(fields) => match &node.value {
                Value::Map(entries) => {
                    let mut out = serde_json::Map::new();
                    for (k, kline, v) in entries {
                        let fp = join(path, k);
                        let Some((_, fty)) = fields.iter().find(|(name, _)| name == k) else {
                            let names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
                            self.error(*kline, &fp, format!("unknown field \"{k}\"{}", did_you_mean(k, &names)));
                            continue;
                        };
                        self.lines.insert(fp.clone(), *kline);
                        let val = self.check(v, *fty, &fp);
                        if !val.is_null() {
                            out.insert(k.clone(), val);
                        }
                    }
                    J::Object(out)
                }
                _ => self.expected(node, path, "a mapping"),
            },
        }
    }
}

/// Reads the mesh settings from a MeshConfig YAML/JSON: the MeshConfig itself, an `istio`
/// ConfigMap (its `data.mesh` string) or a document with a `meshConfig:` key (IstioOperator values).
/// Only `rootNamespace`, `trustDomain`, `trustDomainAliases` and `extensionProviders` are read;
/// other MeshConfig fields are ignored. Missing fields keep the defaults of [`MeshSettings`].
pub fn mesh_settings_str(file_name: &str, text: &str) -> Result<MeshSettings, Vec<LoadError>> {
    let docs = yaml::parse_documents(text, Limits::default()).map_err(|e| {
        vec![LoadError { file: file_name.to_string(), line: e.line, path: String::new(), message: e.message }]
    })?;
    let mut ck = Checker { file: file_name, prefix: String::new(), errors: Vec::new(), lines: BTreeMap::new() };
    let mut settings = MeshSettings::default();
    let Some(doc) = docs.first() else { return Ok(settings) };
    let owned;
    let mut mesh = doc;
    let mut base = String::new();
    if let Some(m) = doc.get("meshConfig").or_else(|| doc.get("spec").and_then(|s| s.get("meshConfig"))) {
        mesh = m;
        base = "meshConfig".to_string();
    } else if let Some(text) = doc.get("data").and_then(|d| d.get("mesh")).and_then(Node::as_str) {
        let inner = yaml::parse_documents(text, Limits::default()).map_err(|e| {
            vec![LoadError {
                file: file_name.to_string(),
                line: e.line,
                path: "data.mesh".to_string(),
                message: e.message,
            }]
        })?;
        owned = inner.into_iter().next();
        match &owned {
            Some(n) => mesh = n,
            None => return Ok(settings),
        }
        base = "data.mesh".to_string();
    }
    if let Some(v) = mesh.get("rootNamespace").map(|n| ck.check(n, Ty::Str, &join(&base, "rootNamespace"))) {
        if let Some(s) = v.as_str() {
            settings.root_namespace = s.to_string();
        }
    }
    if let Some(v) = mesh.get("trustDomain").map(|n| ck.check(n, Ty::Str, &join(&base, "trustDomain"))) {
        if let Some(s) = v.as_str() {
            settings.trust_domain = s.to_string();
        }
    }
    if let Some(v) =
        mesh.get("trustDomainAliases").map(|n| ck.check(n, Ty::StrList, &join(&base, "trustDomainAliases")))
    {
        settings.trust_domain_aliases =
            v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(String::from)).collect();
    }
    if let Some(Node { value: Value::Seq(items), .. }) = mesh.get("extensionProviders") {
        for (i, item) in items.iter().enumerate() {
            let path = format!("{}[{i}]", join(&base, "extensionProviders"));
            let mut p = ExtensionProvider {
                name: item.get("name").and_then(Node::as_str).unwrap_or_default().to_string(),
                ..ExtensionProvider::default()
            };
            if let Some(g) = item.get("envoyExtAuthzGrpc") {
                let v = ck.check(g, Ty::Obj(schema::EXT_AUTHZ_GRPC), &join(&path, "envoyExtAuthzGrpc"));
                p.envoy_ext_authz_grpc = Some(from_json(&mut ck, g.line, &path, v));
            } else if let Some(h) = item.get("envoyExtAuthzHttp") {
                let v = ck.check(h, Ty::Obj(schema::EXT_AUTHZ_HTTP), &join(&path, "envoyExtAuthzHttp"));
                p.envoy_ext_authz_http = Some(from_json(&mut ck, h.line, &path, v));
            } else if let Value::Map(entries) = &item.value {
                p.other_kind = entries.iter().map(|(k, _, _)| k.clone()).find(|k| k != "name");
            }
            settings.extension_providers.push(p);
        }
    }
    if ck.errors.is_empty() {
        Ok(settings)
    } else {
        Err(ck.errors)
    }
}
