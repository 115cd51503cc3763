//! docs/configuration.md is the reference of every flag and environment
//! variable: each one the binaries accept (from their `--help`) must be in
//! it, and each `OOMLENS_*` variable it names must be one they read.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use oomlens_tests::{agent_binary, cli_binary, collector_binary};

fn help(binary: &Path, args: &[&str]) -> String {
    let out = Command::new(binary).args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{} {args:?} --help", binary.display());
    String::from_utf8(out.stdout).unwrap()
}

/// Long flags (`--name`) and variables (`[env: NAME`) of one help text.
fn flags_and_variables(help: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut flags = BTreeSet::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        // Option lines start with `-x, --name` or `--name`.
        let option = trimmed.strip_prefix('-').map(|_| trimmed);
        if let Some(option) = option
            && let Some(at) = option.find("--")
        {
            let name: String = option[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if !["--help", "--version"].contains(&name.as_str()) {
                flags.insert(name);
            }
        }
    }
    let variables = oomlens_tests::help_variables(help).into_iter().collect();
    (flags, variables)
}

#[test]
fn configuration_reference_lists_every_flag_and_variable() {
    let docs_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let docs = std::fs::read_to_string(&docs_path).unwrap();
    let commands: Vec<(PathBuf, Vec<&str>)> = vec![
        (agent_binary(), vec!["run"]),
        (agent_binary(), vec!["demo"]),
        (agent_binary(), vec!["parse"]),
        (collector_binary(), vec!["serve"]),
        (cli_binary(), vec![]),
        (cli_binary(), vec!["events"]),
        (cli_binary(), vec!["show"]),
        (cli_binary(), vec!["watch"]),
        (cli_binary(), vec!["summary"]),
        (cli_binary(), vec!["top"]),
    ];
    let mut known_variables = BTreeSet::from(["OOMLENS_LOG".to_owned()]);
    let mut missing = Vec::new();
    for (binary, args) in &commands {
        let (flags, variables) = flags_and_variables(&help(binary, args));
        let name = format!(
            "{} {}",
            binary.file_name().unwrap().to_string_lossy(),
            args.join(" ")
        );
        for flag in flags {
            // In a table cell (`--flag`), in running text, or in a usage line ([--flag]).
            if !["`", " ", "["]
                .iter()
                .any(|before| docs.contains(&format!("{before}{flag}")))
            {
                missing.push(format!("{name}: {flag}"));
            }
        }
        for variable in variables {
            if !docs.contains(&variable) {
                missing.push(format!("{name}: {variable}"));
            }
            known_variables.insert(variable);
        }
    }
    assert!(
        missing.is_empty(),
        "missing from docs/configuration.md:\n{}",
        missing.join("\n")
    );
    let documented: BTreeSet<String> = docs
        .split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
        .filter(|w| w.starts_with("OOMLENS_") && w.len() > "OOMLENS_".len())
        .map(str::to_owned)
        .collect();
    let unknown: Vec<&String> = documented
        .iter()
        .filter(|v| {
            !known_variables.contains(*v)
                && !v.starts_with("OOMLENS_TEST")
                && !v.starts_with("OOMLENS_REQUIRE")
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/configuration.md names variables no binary reads: {unknown:?}"
    );
}
