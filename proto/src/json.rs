//! The JSON form of events, as documented in `event.proto`: snake_case field
//! names, unknown values as null, enums as lowercase words, timestamps as
//! RFC 3339. The CLI's `--output json` prints one event per line in this form,
//! and scripts rely on it.

use crate::v1::{BreakdownSource, ContainerState, OomEvent, StatusMatch, Verdict};
use crate::v1::{Constraint, ContainerRole, IdentitySource, QosClass, Runtime, Scope};

/// Errors reading the JSON form.
#[derive(Debug, thiserror::Error)]
#[error("invalid oomlens event JSON: {0}")]
pub struct JsonError(#[from] serde_json::Error);

/// One event as a single line of JSON (no trailing newline).
pub fn event_to_json_line(event: &OomEvent) -> String {
    // Serialising plain structs with string keys into a String cannot fail.
    serde_json::to_string(event).unwrap_or_else(|e| unreachable!("event JSON: {e}"))
}

/// Reads one event from its JSON form.
pub fn event_from_json(text: &str) -> Result<OomEvent, JsonError> {
    Ok(serde_json::from_str(text)?)
}

/// A protobuf enum that prints in JSON as a lowercase word.
pub trait JsonEnum: Sized + Copy + Into<i32> + TryFrom<i32> {
    /// The prefix of the proto value names, e.g. `SCOPE_`.
    const PREFIX: &'static str;
    /// The proto value name, e.g. `SCOPE_POD_LIMIT`.
    fn proto_name(self) -> &'static str;
    /// The value of a proto value name.
    fn from_proto_name(name: &str) -> Option<Self>;

    /// The JSON word (`pod_limit`), or None for the UNSPECIFIED value.
    fn word(self) -> Option<String> {
        let name = self.proto_name();
        let word = name.strip_prefix(Self::PREFIX).unwrap_or(name);
        (self.into() != 0).then(|| word.to_ascii_lowercase())
    }

    /// The value of a JSON word.
    fn from_word(word: &str) -> Option<Self> {
        if word.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let value = Self::from_proto_name(&format!("{}{}", Self::PREFIX, word.to_ascii_uppercase()))?;
        (value.into() != 0).then_some(value)
    }
}

macro_rules! json_enum {
    ($module:ident, $ty:ident, $prefix:literal) => {
        impl JsonEnum for $ty {
            const PREFIX: &'static str = $prefix;
            fn proto_name(self) -> &'static str {
                self.as_str_name()
            }
            fn from_proto_name(name: &str) -> Option<Self> {
                Self::from_str_name(name)
            }
        }

        #[doc = concat!("serde for an `i32` field holding a `", stringify!($ty), "`.")]
        pub mod $module {
            pub fn serialize<S: serde::Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
                super::serialize_enum::<crate::v1::$ty, S>(*value, s)
            }
            pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
                super::deserialize_enum::<crate::v1::$ty, D>(d)
            }
        }
    };
}

json_enum!(constraint, Constraint, "CONSTRAINT_");
json_enum!(scope, Scope, "SCOPE_");
json_enum!(qos_class, QosClass, "QOS_CLASS_");
json_enum!(runtime, Runtime, "RUNTIME_");
json_enum!(container_role, ContainerRole, "CONTAINER_ROLE_");
json_enum!(identity_source, IdentitySource, "IDENTITY_SOURCE_");
json_enum!(verdict, Verdict, "VERDICT_");
json_enum!(breakdown_source, BreakdownSource, "BREAKDOWN_SOURCE_");
json_enum!(container_state, ContainerState, "CONTAINER_STATE_");
json_enum!(status_match, StatusMatch, "STATUS_MATCH_");

fn serialize_enum<E: JsonEnum, S: serde::Serializer>(value: i32, s: S) -> Result<S::Ok, S::Error> {
    match E::try_from(value) {
        Ok(known) => match known.word() {
            Some(word) => s.serialize_str(&word),
            None => s.serialize_none(),
        },
        // A value from a newer contract: keep the number rather than guess.
        Err(_) => s.serialize_i32(value),
    }
}

fn deserialize_enum<'de, E: JsonEnum, D: serde::Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    use serde::Deserialize as _;
    use serde::de::Error as _;

    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Word(String),
        Number(i32),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(0),
        Some(Raw::Number(n)) => Ok(n),
        Some(Raw::Word(word)) => E::from_word(&word).map(Into::into).ok_or_else(|| {
            D::Error::custom(format!(
                "unknown {} value {word:?}",
                E::PREFIX.trim_end_matches('_').to_ascii_lowercase()
            ))
        }),
    }
}

/// serde for `Option<prost_types::Timestamp>` as an RFC 3339 string or null.
pub mod timestamp {
    use prost_types::Timestamp;
    use serde::Deserialize as _;
    use serde::de::Error as _;

    pub fn serialize<S: serde::Serializer>(value: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(ts) => {
                let nanos = u32::try_from(ts.nanos).map_err(|_| {
                    serde::ser::Error::custom(format!("timestamp nanos out of range: {}", ts.nanos))
                })?;
                s.serialize_str(&crate::time::format_rfc3339(ts.seconds, nanos))
            }
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        let (seconds, nanos) = crate::time::parse_rfc3339(&text)
            .ok_or_else(|| D::Error::custom(format!("invalid RFC 3339 timestamp {text:?}")))?;
        // parse_rfc3339 keeps nanos below 10^9: never an error.
        let nanos = i32::try_from(nanos)
            .map_err(|_| D::Error::custom(format!("timestamp nanos out of range: {nanos}")))?;
        Ok(Some(Timestamp { seconds, nanos }))
    }
}
