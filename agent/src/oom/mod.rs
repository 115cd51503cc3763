//! Turning kernel log lines into OOM reports: [`lines`] recognises each line
//! of a report (with [`fields`] for the values inside), [`parser`] groups
//! them into bursts, [`assemble`] turns a burst into one [`OomReport`] per
//! kill by the rules in [`report`]. All pure, and shared by the live
//! `/dev/kmsg` path and the post-mortem parser.

mod anchors;
mod assemble;
mod burst;
pub mod fields;
pub mod lines;
pub mod memstat;
pub mod parser;
pub mod report;
mod unused;

pub use parser::{InputLine, Parser, ParserStats, Unused, UnusedLine};
pub use report::{Anchor, EvidenceLine, OomReport, ReportConstraint, Stamp, VictimInfo};
