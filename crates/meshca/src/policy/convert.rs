//! `meshca policy convert PATH...`: legacy v1alpha1 objects to security.istio.io v1, with a
//! report of what could not be converted.

use std::path::PathBuf;

use clap::Args;

use super::common::load_set;

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Files or directories with legacy objects.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Root namespace (for ClusterRbacConfig and MeshPolicy).
    #[arg(long, default_value = "istio-system")]
    pub root_namespace: String,
    /// yaml (objects, report as comments) or json ({objects, issues}).
    #[arg(long, short = 'o', default_value = "yaml", value_parser = ["yaml", "json"])]
    pub output: String,
}

pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    let set = load_set(&args.paths)?;
    let conv = meshca_policy::convert::convert(&set, &args.root_namespace);
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&conv)?);
        return Ok(());
    }
    println!("# meshca policy convert: {} object(s), {} note(s)", conv.objects.len(), conv.issues.len());
    for i in &conv.issues {
        println!("# {} {}: {}", i.at, i.object, i.message);
    }
    for o in &conv.objects {
        println!("---");
        print!("{}", super::yaml_out::to_yaml(o));
    }
    if conv.objects.is_empty() {
        let legacy = set.objects.iter().filter(|o| o.spec.is_legacy()).count();
        eprintln!("no legacy object converted ({legacy} legacy object(s) found)");
    }
    Ok(())
}
