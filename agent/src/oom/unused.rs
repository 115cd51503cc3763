//! Why an OOM-looking line made no report: what `parse --explain` says of
//! each, and counts by reason.

use super::report::Stamp;

/// Why an OOM-looking line made no report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unused {
    /// Written by a program, not the kernel.
    NotKernel,
    /// Part of a report that never named a killed process (a header, a
    /// stack, a task table whose kill line was cut or filtered out).
    NoKill,
    /// `Out of memory and no killable processes`.
    NoKillable,
    /// `oom_reaper` reaps after a kill; it is not one.
    AfterKill,
    /// A memcg stats, counter or task table line outside any report.
    Fragment,
    /// The same process printed twice in one report (group kills).
    Duplicate,
}

impl Unused {
    pub const ALL: [Unused; 6] = [
        Self::NotKernel,
        Self::NoKill,
        Self::NoKillable,
        Self::AfterKill,
        Self::Fragment,
        Self::Duplicate,
    ];

    /// A short plural label, for counts.
    pub fn label(self) -> &'static str {
        match self {
            Self::NotKernel => "written by another program",
            Self::NoKill => "in reports with no kill line",
            Self::NoKillable => "with no process to kill",
            Self::AfterKill => "oom_reaper lines without their kill",
            Self::Fragment => "stats or task table lines outside a report",
            Self::Duplicate => "repeated kill lines",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::NotKernel => "written by another program, not the kernel",
            Self::NoKill => "part of a report with no kill line, summary or Task in line",
            Self::NoKillable => "the kernel found no process to kill",
            Self::AfterKill => "oom_reaper reaps after a kill; the kill line itself is missing",
            Self::Fragment => "a memory stats, counter or task table line outside any report",
            Self::Duplicate => "the same process printed twice in one report",
        }
    }
}

/// An OOM-looking line that made no report, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnusedLine {
    pub stamp: Stamp,
    pub text: String,
    pub why: Unused,
}
