//! The `oomlens.v1` contract cannot break by accident: `buf lint` with the
//! rules in proto/buf.yaml, and `buf breaking` (FILE rules: no field
//! renumbered, retyped, renamed or removed) of the working tree against
//! the last commit and the one before it.
//!
//! Needs `buf` (`OOMLENS_BUF` or PATH; .ci/run installs it from the npm
//! registry's `@bufbuild/buf-linux-x64`) and the repository's git history.
//! Without them the test prints why it skips; with `OOMLENS_REQUIRE_BUF=1`
//! (CI) it fails instead.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn buf() -> Option<PathBuf> {
    std::env::var_os("OOMLENS_BUF")
        .map(PathBuf::from)
        .or_else(|| oomlens_tests::find_program("buf"))
}

fn skip_or_fail(reason: &str) {
    assert!(
        std::env::var("OOMLENS_REQUIRE_BUF").as_deref() != Ok("1"),
        "{reason} (OOMLENS_REQUIRE_BUF=1)"
    );
    eprintln!("SKIPPED contract: {reason}; .ci/run installs buf");
}

fn run(buf: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new(buf)
        .args(args)
        .current_dir(workspace())
        .output()
        .map_err(|e| format!("{}: {e}", buf.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "buf {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Whether `rev` names a commit that has a proto/ directory.
fn has_proto(rev: &str) -> bool {
    Command::new("git")
        .args(["cat-file", "-e", &format!("{rev}:proto/oomlens/v1")])
        .current_dir(workspace())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn the_contract_is_linted_and_never_breaks() {
    let Some(buf) = buf() else {
        skip_or_fail("needs buf (OOMLENS_BUF or PATH)");
        return;
    };
    run(&buf, &["lint", "proto"]).unwrap_or_else(|e| panic!("{e}"));
    let revisions: Vec<&str> = ["HEAD", "HEAD~1"].into_iter().filter(|r| has_proto(r)).collect();
    if revisions.is_empty() {
        skip_or_fail("no git history with proto/ to compare with");
        return;
    }
    for rev in revisions {
        let against = format!(".git#ref={rev},subdir=proto");
        run(&buf, &["breaking", "proto", "--against", &against]).unwrap_or_else(|e| panic!("{e}"));
    }
}
