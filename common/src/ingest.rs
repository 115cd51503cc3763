//! The collector's answer for one ingested event, as a metric label: the
//! collector counts what it stored, the agent what was acknowledged, with
//! the same values.

use oomlens_proto::v1::AckStatus;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum IngestResult {
    Stored,
    Duplicate,
    Rejected,
}

impl From<AckStatus> for IngestResult {
    /// An acknowledgement that is neither stored nor duplicate did not
    /// store the event.
    fn from(status: AckStatus) -> Self {
        match status {
            AckStatus::Stored => Self::Stored,
            AckStatus::Duplicate => Self::Duplicate,
            AckStatus::Rejected | AckStatus::Unspecified => Self::Rejected,
        }
    }
}

impl EncodeLabelValue for IngestResult {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Self::Stored => "stored",
            Self::Duplicate => "duplicate",
            Self::Rejected => "rejected",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: IngestResult,
}
