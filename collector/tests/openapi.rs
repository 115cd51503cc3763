//! docs/api/openapi.json against the contract: the schemas of events,
//! warnings and container statuses must be the ones made from the
//! `.proto` files (`OOMLENS_BLESS=1` rewrites them), every path the API
//! serves must be described, and every reference must resolve.

use std::path::PathBuf;

use oomlens_proto::schema::json_schemas;
use oomlens_proto::v1::FILE_DESCRIPTOR_SET;
use serde_json::Value;

fn document_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/api/openapi.json")
}

fn document() -> Value {
    let text = std::fs::read_to_string(document_path()).expect("read docs/api/openapi.json");
    serde_json::from_str(&text).expect("docs/api/openapi.json is JSON")
}

#[test]
fn the_event_schemas_are_the_contracts() {
    let (generated, undocumented) = json_schemas(FILE_DESCRIPTOR_SET).expect("schemas");
    assert!(undocumented.is_empty(), "fields without docs: {undocumented:#?}");
    let mut doc = document();
    if std::env::var_os("OOMLENS_BLESS").is_some() {
        let schemas = doc["components"]["schemas"].as_object_mut().expect("schemas");
        for (name, schema) in &generated {
            schemas.insert(name.clone(), schema.clone());
        }
        let text = serde_json::to_string_pretty(&doc).expect("JSON") + "\n";
        std::fs::write(document_path(), text).expect("write docs/api/openapi.json");
        return;
    }
    for (name, schema) in &generated {
        assert_eq!(
            doc["components"]["schemas"].get(name),
            Some(schema),
            "the schema of {name} in docs/api/openapi.json is not the one made from the .proto \
             files; run `OOMLENS_BLESS=1 cargo test -p oomlens-collector --test openapi` and review the diff"
        );
    }
}

#[test]
fn every_route_is_described_and_every_reference_resolves() {
    let doc = document();
    let paths: Vec<&String> = doc["paths"].as_object().expect("paths").keys().collect();
    for route in [
        "/api/v1/events",
        "/api/v1/events/{id}",
        "/api/v1/stream",
        "/api/v1/summary",
        "/api/v1/top",
        "/api/v1/openapi.json",
    ] {
        assert!(paths.iter().any(|p| *p == route), "{route} is not described");
    }
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(refs.len() > 20, "{refs:?}");
    for reference in refs {
        let pointer = reference.strip_prefix('#').expect("local reference");
        assert!(doc.pointer(pointer).is_some(), "{reference} does not resolve");
    }
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(target)) => out.push(target.clone()),
                    _ => collect_refs(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}
