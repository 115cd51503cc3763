//! oomlens collector: stores OOM events from the agents, answers queries and
//! serves the subscription stream; and the `oomlens` SRE command line.
//!
//! Storage, ingest and the query API are built in a later increment (see the
//! README's status table); the binaries already parse their full command
//! lines so `--help` documents what is coming, and every command that is not
//! built yet says so and exits with [`EXIT_NOT_BUILT`].

/// Exit status of a command that exists in the interface but is not built
/// yet. Distinct from 1 (runtime error) and 2 (usage error).
pub const EXIT_NOT_BUILT: u8 = 3;

/// Reports that `what` is not built yet, for a binary's `main` to return.
pub fn not_built(what: &str) -> std::process::ExitCode {
    eprintln!(
        "error: {what} is not built yet in this version of oomlens; \
         see the status table in README.md"
    );
    std::process::ExitCode::from(EXIT_NOT_BUILT)
}
