//! The deployment files' tools and parsing, for the offline checks of
//! `deploy/` (tests/tests/deploy_manifests.rs, tests/tests/alert_rules.rs).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn tool(env: &str, name: &str) -> Option<PathBuf> {
    std::env::var(env)
        .ok()
        .map(PathBuf::from)
        .or_else(|| crate::find_program(name))
}

#[derive(Debug)]
pub struct Tools {
    pub kubectl: PathBuf,
    pub helm: PathBuf,
}

pub fn tools() -> Result<Tools, String> {
    let kubectl = tool("OOMLENS_KUBECTL", "kubectl").ok_or("needs kubectl (OOMLENS_KUBECTL)")?;
    let helm = tool("OOMLENS_HELM", "helm").ok_or("needs helm (OOMLENS_HELM)")?;
    let validator = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--version"])
        .output();
    if !validator.is_ok_and(|o| o.status.success()) {
        return Err("needs kubernetes-validate (pip install kubernetes-validate)".into());
    }
    Ok(Tools { kubectl, helm })
}

pub fn run(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The rendered objects, parsed (PyYAML comes with kubernetes-validate):
/// kustomize and helm write the same YAML differently.
pub fn objects(rendered: &str) -> Vec<Value> {
    use std::io::Write as _;
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rendered.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "rendered YAML does not parse");
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

pub fn one<'a>(name: &str, objects: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(objects, kind);
    assert_eq!(found.len(), 1, "{name}: one {kind}");
    found[0]
}

/// The deploy tools, or (outside CI) a printed reason and an early return
/// from the test; with `OOMLENS_REQUIRE_DEPLOY_TOOLS=1` (CI) a failure.
#[macro_export]
macro_rules! require_deploy_tools {
    () => {
        match $crate::deploy::tools() {
            Ok(tools) => tools,
            Err(reason) => {
                assert!(
                    std::env::var("OOMLENS_REQUIRE_DEPLOY_TOOLS").as_deref() != Ok("1"),
                    "{reason} (OOMLENS_REQUIRE_DEPLOY_TOOLS=1)"
                );
                eprintln!("SKIPPED {}: {reason}; .ci/run installs them", module_path!());
                return;
            }
        }
    };
}
