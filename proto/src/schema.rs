//! JSON Schemas (OpenAPI 3.1 dialect) of the event's JSON form, made from
//! the compiled `.proto` files and their comments, so the HTTP API's
//! OpenAPI document cannot drift from the contract, and every field
//! documented there is documented in the schema.
//!
//! The mapping follows `json.rs`: field names as in the `.proto`, every
//! field present, `optional` scalars and messages null when unset, enums as
//! lowercase words (null when unspecified, a number for a value newer than
//! this contract), timestamps as RFC 3339 strings, 64-bit integers as JSON
//! numbers.

use std::collections::BTreeMap;

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet, SourceCodeInfo};
use serde_json::{Value, json};

/// The messages the JSON API returns directly; everything they contain
/// is described too.
pub const JSON_ROOTS: &[&str] = &["OomEvent", "MemoryWarning", "ContainerMemoryStatus"];

const PACKAGE: &str = ".oomlens.v1.";

/// A message, field or enum value without a comment in the `.proto`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} has no comment in the .proto: say what it is, its units, and when it is unset")]
pub struct Undocumented(pub String);

/// Errors making the schemas.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("the compiled descriptor set does not decode: {0}")]
    Descriptor(#[from] prost::DecodeError),
    #[error("{0} is referenced but not defined in oomlens.v1")]
    Missing(String),
    #[error("{0}: nested, map and bytes types have no JSON form here yet")]
    Unsupported(String),
}

struct Contract {
    messages: BTreeMap<String, (DescriptorProto, Docs)>,
    enums: BTreeMap<String, (EnumDescriptorProto, Docs)>,
}

/// Comments by source path (`[4, message]`, `[4, message, 2, field]`,
/// `[5, enum, 2, value]`), relative to one element.
#[derive(Debug, Clone, Default)]
struct Docs(BTreeMap<Vec<i32>, String>);

impl Docs {
    fn of(info: Option<&SourceCodeInfo>, prefix: &[i32]) -> Self {
        let mut docs = BTreeMap::new();
        for location in info.map(|i| i.location.as_slice()).unwrap_or_default() {
            let Some(rest) = location.path.strip_prefix(prefix) else {
                continue;
            };
            let text = location
                .leading_comments
                .as_deref()
                .filter(|c| !c.trim().is_empty())
                .or(location.trailing_comments.as_deref())
                .map(clean_comment)
                .unwrap_or_default();
            if !text.is_empty() {
                docs.insert(rest.to_vec(), text);
            }
        }
        Self(docs)
    }

    fn get(&self, path: &[i32]) -> Option<&str> {
        self.0.get(path).map(String::as_str)
    }
}

/// One paragraph per blank-line-separated block, lines joined by spaces.
fn clean_comment(text: &str) -> String {
    let mut paragraphs: Vec<String> = vec![String::new()];
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            if paragraphs.last().is_some_and(|p| !p.is_empty()) {
                paragraphs.push(String::new());
            }
            continue;
        }
        let current = paragraphs
            .last_mut()
            .unwrap_or_else(|| unreachable!("never empty"));
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(line);
    }
    paragraphs.retain(|p| !p.is_empty());
    paragraphs.join("\n\n")
}

impl Contract {
    fn decode(encoded: &[u8]) -> Result<Self, SchemaError> {
        let set = FileDescriptorSet::decode(encoded)?;
        let mut messages = BTreeMap::new();
        let mut enums = BTreeMap::new();
        for file in set.file.iter().filter(|f| f.package() == "oomlens.v1") {
            let info = file.source_code_info.as_ref();
            for (i, message) in file.message_type.iter().enumerate() {
                let index = i32::try_from(i).unwrap_or(i32::MAX);
                messages.insert(
                    message.name().to_owned(),
                    (message.clone(), Docs::of(info, &[4, index])),
                );
            }
            for (i, kind) in file.enum_type.iter().enumerate() {
                let index = i32::try_from(i).unwrap_or(i32::MAX);
                enums.insert(
                    kind.name().to_owned(),
                    (kind.clone(), Docs::of(info, &[5, index])),
                );
            }
        }
        Ok(Self { messages, enums })
    }

    fn message(&self, name: &str) -> Result<&(DescriptorProto, Docs), SchemaError> {
        self.messages
            .get(name)
            .ok_or_else(|| SchemaError::Missing(name.to_owned()))
    }
}

/// The enum's JSON words: value names without the enum's prefix
/// (`SCOPE_POD_LIMIT` -> `pod_limit`), the unspecified value left out.
fn enum_words(kind: &EnumDescriptorProto) -> Vec<String> {
    let prefix = kind
        .value
        .iter()
        .find(|v| v.number() == 0)
        .and_then(|v| v.name().strip_suffix("UNSPECIFIED"))
        .unwrap_or("");
    kind.value
        .iter()
        .filter(|v| v.number() != 0)
        .map(|v| {
            v.name()
                .strip_prefix(prefix)
                .unwrap_or(v.name())
                .to_ascii_lowercase()
        })
        .collect()
}

fn nullable(schema: Value) -> Value {
    json!({ "anyOf": [schema, { "type": "null" }] })
}

/// The schema of one field, and the messages it refers to.
fn field_schema(
    contract: &Contract,
    field: &prost_types::FieldDescriptorProto,
    owner: &str,
    refs: &mut Vec<String>,
    undocumented: &mut Vec<Undocumented>,
) -> Result<Value, SchemaError> {
    let repeated = field.label() == Label::Repeated;
    let optional = field.proto3_optional();
    let where_ = || format!("{owner}.{}", field.name());
    let base = match field.r#type() {
        Type::Double | Type::Float => json!({ "type": "number" }),
        Type::Int64 | Type::Int32 | Type::Sint64 | Type::Sint32 | Type::Sfixed64 | Type::Sfixed32 => {
            json!({ "type": "integer" })
        }
        Type::Uint64 | Type::Uint32 | Type::Fixed64 | Type::Fixed32 => {
            json!({ "type": "integer", "minimum": 0 })
        }
        Type::Bool => json!({ "type": "boolean" }),
        Type::String => json!({ "type": "string" }),
        Type::Message if field.type_name() == ".google.protobuf.Timestamp" => {
            json!({ "type": "string", "format": "date-time" })
        }
        Type::Message => {
            let name = field
                .type_name()
                .strip_prefix(PACKAGE)
                .ok_or_else(|| SchemaError::Unsupported(where_()))?;
            contract.message(name)?;
            refs.push(name.to_owned());
            json!({ "$ref": format!("#/components/schemas/{name}") })
        }
        Type::Enum => {
            let name = field
                .type_name()
                .strip_prefix(PACKAGE)
                .ok_or_else(|| SchemaError::Unsupported(where_()))?;
            let (kind, docs) = contract
                .enums
                .get(name)
                .ok_or_else(|| SchemaError::Missing(name.to_owned()))?;
            for (i, value) in kind.value.iter().enumerate() {
                let index = i32::try_from(i).unwrap_or(i32::MAX);
                if value.number() != 0 && docs.get(&[2, index]).is_none() {
                    undocumented.push(Undocumented(format!("{name}.{}", value.name())));
                }
            }
            // Unspecified is null; a number is a value newer than this
            // contract, kept rather than guessed.
            let words: Vec<Value> = enum_words(kind).into_iter().map(Value::from).collect();
            let schema = json!({
                "anyOf": [
                    { "type": "string", "enum": words },
                    { "type": "integer" },
                    { "type": "null" }
                ]
            });
            return Ok(if repeated {
                json!({ "type": "array", "items": schema })
            } else {
                schema
            });
        }
        Type::Bytes | Type::Group => return Err(SchemaError::Unsupported(where_())),
    };
    Ok(if repeated {
        json!({ "type": "array", "items": base })
    } else if optional || field.r#type() == Type::Message {
        nullable(base)
    } else {
        base
    })
}

/// Component schemas for [`JSON_ROOTS`] and everything inside them, by
/// message name; and every message, field and enum value among them that
/// has no comment.
/// Fields the JSON form leaves out (`#[serde(skip)]` in build.rs).
const NOT_IN_JSON: &[&str] = &["MemoryHistory.packed"];

pub fn json_schemas(
    descriptor_set: &[u8],
) -> Result<(BTreeMap<String, Value>, Vec<Undocumented>), SchemaError> {
    let contract = Contract::decode(descriptor_set)?;
    let mut schemas = BTreeMap::new();
    let mut undocumented = Vec::new();
    let mut pending: Vec<String> = JSON_ROOTS.iter().map(|&r| r.to_owned()).collect();
    while let Some(name) = pending.pop() {
        if schemas.contains_key(&name) {
            continue;
        }
        let (message, docs) = contract.message(&name)?;
        if !message.nested_type.is_empty() || !message.enum_type.is_empty() {
            return Err(SchemaError::Unsupported(name));
        }
        let mut properties = serde_json::Map::new();
        let mut required = Vec::new();
        for (i, field) in message.field.iter().enumerate() {
            if NOT_IN_JSON.contains(&format!("{name}.{}", field.name()).as_str()) {
                continue;
            }
            let index = i32::try_from(i).unwrap_or(i32::MAX);
            let mut refs = Vec::new();
            let mut schema = field_schema(&contract, field, &name, &mut refs, &mut undocumented)?;
            match docs.get(&[2, index]) {
                Some(text) => {
                    schema["description"] = Value::from(text);
                }
                None => undocumented.push(Undocumented(format!("{name}.{}", field.name()))),
            }
            properties.insert(field.name().to_owned(), schema);
            required.push(Value::from(field.name()));
            pending.extend(refs);
        }
        let mut schema = json!({
            "type": "object",
            "required": required,
            "properties": properties,
        });
        match docs.get(&[]) {
            Some(text) => schema["description"] = Value::from(text),
            None => undocumented.push(Undocumented(name.clone())),
        }
        schemas.insert(name, schema);
    }
    Ok((schemas, undocumented))
}

/// Every message, field, enum value (but the unspecified ones), service
/// and method of `oomlens.v1` that has no comment in the `.proto` files:
/// the whole contract, not only the JSON form.
pub fn undocumented(descriptor_set: &[u8]) -> Result<Vec<Undocumented>, SchemaError> {
    let set = FileDescriptorSet::decode(descriptor_set)?;
    let mut missing = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == "oomlens.v1") {
        let info = file.source_code_info.as_ref();
        for (i, message) in file.message_type.iter().enumerate() {
            let docs = Docs::of(info, &[4, i32::try_from(i).unwrap_or(i32::MAX)]);
            if docs.get(&[]).is_none() {
                missing.push(Undocumented(message.name().to_owned()));
            }
            for (j, field) in message.field.iter().enumerate() {
                if docs.get(&[2, i32::try_from(j).unwrap_or(i32::MAX)]).is_none() {
                    missing.push(Undocumented(format!("{}.{}", message.name(), field.name())));
                }
            }
        }
        for (i, kind) in file.enum_type.iter().enumerate() {
            let docs = Docs::of(info, &[5, i32::try_from(i).unwrap_or(i32::MAX)]);
            if docs.get(&[]).is_none() {
                missing.push(Undocumented(kind.name().to_owned()));
            }
            for (j, value) in kind.value.iter().enumerate() {
                if value.number() != 0 && docs.get(&[2, i32::try_from(j).unwrap_or(i32::MAX)]).is_none() {
                    missing.push(Undocumented(format!("{}.{}", kind.name(), value.name())));
                }
            }
        }
        for (i, service) in file.service.iter().enumerate() {
            let docs = Docs::of(info, &[6, i32::try_from(i).unwrap_or(i32::MAX)]);
            if docs.get(&[]).is_none() {
                missing.push(Undocumented(service.name().to_owned()));
            }
            for (j, method) in service.method.iter().enumerate() {
                if docs.get(&[2, i32::try_from(j).unwrap_or(i32::MAX)]).is_none() {
                    missing.push(Undocumented(format!("{}.{}", service.name(), method.name())));
                }
            }
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::FILE_DESCRIPTOR_SET;

    #[test]
    fn every_field_of_the_json_form_is_described_and_documented() {
        let (schemas, undocumented) = json_schemas(FILE_DESCRIPTOR_SET).unwrap();
        assert!(undocumented.is_empty(), "undocumented: {undocumented:#?}");
        for root in JSON_ROOTS {
            assert!(schemas.contains_key(*root), "{root}");
        }
        // Every field the serialiser writes is in the schema, required.
        let event = serde_json::to_value(crate::v1::OomEvent::default()).unwrap();
        let fields: Vec<&String> = event.as_object().unwrap().keys().collect();
        let required = schemas["OomEvent"]["required"].as_array().unwrap();
        assert_eq!(fields.len(), required.len());
        for field in fields {
            assert!(required.contains(&Value::from(field.as_str())), "{field}");
        }
    }

    #[test]
    fn every_message_field_value_and_method_of_the_contract_is_documented() {
        let missing = undocumented(FILE_DESCRIPTOR_SET).unwrap();
        assert!(
            missing.is_empty(),
            "undocumented in proto/oomlens/v1: {missing:#?}"
        );
    }

    #[test]
    fn types_follow_the_json_form() {
        let (schemas, _) = json_schemas(FILE_DESCRIPTOR_SET).unwrap();
        let event = &schemas["OomEvent"]["properties"];
        assert_eq!(event["scope"]["anyOf"][0]["enum"][1], "pod_limit");
        assert_eq!(event["time"]["anyOf"][0]["format"], "date-time");
        assert_eq!(event["victim"]["anyOf"][0]["$ref"], "#/components/schemas/Victim");
        let breakdown = &schemas["MemoryBreakdown"]["properties"];
        assert_eq!(breakdown["anon_bytes"]["anyOf"][0]["type"], "integer");
        assert_eq!(breakdown["anon_bytes"]["anyOf"][1]["type"], "null");
    }

    #[test]
    fn comments_become_paragraphs() {
        assert_eq!(clean_comment(" a\n b\n\n c\n"), "a b\n\nc");
    }
}
