//! Generates the oomlens.v1 Rust types and tonic services.
//!
//! protox compiles the .proto files in pure Rust, so a fresh machine needs no
//! system `protoc`. The event types also derive serde with the JSON
//! conventions documented in `event.proto` (see `src/json.rs`).

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "oomlens/v1/event.proto",
    "oomlens/v1/ingest.proto",
    "oomlens/v1/query.proto",
];

/// Messages that have a JSON form (the event and everything inside it).
const JSON_MESSAGES: &[&str] = &[
    "OomEvent",
    "Victim",
    "Trigger",
    "MemcgUsage",
    "TaskEntry",
    "Pod",
    "Workload",
    "Container",
    "MemoryHistory",
    "MemorySample",
    "MemoryBucket",
    "NodeMemory",
    "KernelLine",
    "KernelRef",
    "Analysis",
    "MemoryWarning",
    "ContainerMemoryStatus",
    "MemoryBreakdown",
    "MemoryVolume",
    "ContainerUsage",
    "RuntimeStatus",
];

/// Enum-typed fields and the JSON module that prints them as words.
const ENUM_FIELDS: &[(&str, &str)] = &[
    ("OomEvent.constraint", "constraint"),
    ("OomEvent.scope", "scope"),
    ("OomEvent.identity_source", "identity_source"),
    ("Pod.qos", "qos_class"),
    ("Container.runtime", "runtime"),
    ("Container.role", "container_role"),
    ("Analysis.verdict", "verdict"),
    ("MemoryBreakdown.source", "breakdown_source"),
    ("RuntimeStatus.state", "container_state"),
    ("Analysis.status_match", "status_match"),
];

/// Timestamp fields, printed as RFC 3339.
const TIME_FIELDS: &[&str] = &[
    "OomEvent.time",
    "MemorySample.time",
    "MemoryBucket.time",
    "NodeMemory.time",
    "MemoryWarning.time",
    "ContainerMemoryStatus.time",
    "RuntimeStatus.observed",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;

    // Decoding from a slice (src/codec.rs).
    let mut builder = tonic_prost_build::configure().codec_path("crate::codec::SliceCodec");
    for message in JSON_MESSAGES {
        builder = builder.type_attribute(
            format!(".oomlens.v1.{message}"),
            "#[derive(::serde::Serialize, ::serde::Deserialize)] #[serde(default)]",
        );
    }
    for (field, module) in ENUM_FIELDS {
        builder = builder.field_attribute(
            format!(".oomlens.v1.{field}"),
            format!("#[serde(with = \"crate::json::{module}\")]"),
        );
    }
    for field in TIME_FIELDS {
        builder = builder.field_attribute(
            format!(".oomlens.v1.{field}"),
            "#[serde(with = \"crate::json::timestamp\")]",
        );
    }
    // Packed histories never leave the collector: no JSON form (and none
    // in the schema: `schema::NOT_IN_JSON`).
    builder = builder.field_attribute(".oomlens.v1.MemoryHistory.packed", "#[serde(skip)]");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("oomlens_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    builder.compile_fds(descriptors)?;
    Ok(())
}
