//! Turning kernel log lines into OOM reports: [`lines`] recognises each line
//! of a report, [`parser`] assembles them into one report per kill. Both are
//! pure and shared by the live `/dev/kmsg` path and the post-mortem parser.

pub mod lines;
pub mod parser;

pub use parser::{InputLine, OomReport, Parser, ParserStats, ReportConstraint, Stamp};
