//! One compiled schema and the check of one payload against it: JSON Schema
//! through `jsonschema` (built without its remote-reference features: a
//! `$ref` to another document is refused, nothing is fetched), Avro through
//! `apache-avro` (a binary datum, with or without the Confluent header).

use std::io::Cursor;

use apache_avro::reader::datum::GenericDatumReader;
use serde::Serialize;

use super::settings::SchemaKind;

/// Violations reported for one message at most (the rest are not looked for).
const MAX_VIOLATIONS: usize = 8;

/// Characters of one violation's message kept: the message quotes the
/// offending value, which may be most of a large payload.
const MAX_MESSAGE_CHARS: usize = 200;

/// The Confluent wire format: magic byte 0, then a 4-byte schema id.
const CONFLUENT_HEADER: usize = 5;

/// A schema ready to check payloads, compiled once.
pub enum Validator {
    Json(Box<jsonschema::Validator>),
    Avro(Box<apache_avro::Schema>),
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Validator::Json(_) => f.write_str("Validator::Json"),
            Validator::Avro(_) => f.write_str("Validator::Avro"),
        }
    }
}

/// One way a payload fails its schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Where in the payload (a JSON pointer; empty for the whole payload).
    pub path: String,
    /// The schema rule that failed (a JSON pointer into the schema, or
    /// `json` / `avro` when the payload could not be read at all).
    pub rule: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        write!(f, "at {path}: {} (rule {})", self.message, self.rule)
    }
}

impl Validator {
    /// Compiles `text` (the schema document) as `kind`; the error says why not.
    pub fn compile(kind: SchemaKind, text: &str) -> Result<Validator, String> {
        match kind {
            SchemaKind::JsonSchema => {
                let schema: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
                let validator = jsonschema::validator_for(&schema)
                    .map_err(|e| format!("not a valid JSON Schema: {e}"))?;
                Ok(Validator::Json(Box::new(validator)))
            }
            SchemaKind::Avro => {
                let schema = apache_avro::Schema::parse_str(text)
                    .map_err(|e| format!("not a valid Avro schema: {e}"))?;
                Ok(Validator::Avro(Box::new(schema)))
            }
        }
    }

    /// Checks one payload. Valid: the JSON value it was parsed into (JSON
    /// Schema), for whoever looks at the payload next, or None (Avro).
    pub fn check(&self, payload: &[u8]) -> Result<Option<serde_json::Value>, Vec<Violation>> {
        match self {
            Validator::Json(validator) => {
                let value: serde_json::Value = serde_json::from_slice(payload).map_err(|e| {
                    vec![Violation {
                        path: String::new(),
                        rule: "json".into(),
                        message: format!("the payload is not JSON: {e}"),
                    }]
                })?;
                let violations: Vec<Violation> = validator
                    .iter_errors(&value)
                    .take(MAX_VIOLATIONS)
                    .map(|error| Violation {
                        path: error.instance_path().to_string(),
                        rule: error.schema_path().to_string(),
                        message: shortened(error.to_string()),
                    })
                    .collect();
                if violations.is_empty() {
                    Ok(Some(value))
                } else {
                    Err(violations)
                }
            }
            Validator::Avro(schema) => check_avro(schema, payload).map(|()| None),
        }
    }
}

fn shortened(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(MAX_MESSAGE_CHARS) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// A payload is valid when it decodes as one datum of `schema` with no byte
/// left over, as it is or after a Confluent header (magic 0 + schema id; the
/// id is not checked: Tern keeps no registry of ids).
fn check_avro(schema: &apache_avro::Schema, payload: &[u8]) -> Result<(), Vec<Violation>> {
    let plain = decode_whole(schema, payload);
    if plain.is_ok() {
        return Ok(());
    }
    if payload.len() >= CONFLUENT_HEADER && payload[0] == 0 {
        if let Some(datum) = payload.get(CONFLUENT_HEADER..) {
            if decode_whole(schema, datum).is_ok() {
                return Ok(());
            }
        }
    }
    Err(vec![Violation {
        path: String::new(),
        rule: "avro".into(),
        message: shortened(plain.err().unwrap_or_default()),
    }])
}

fn decode_whole(schema: &apache_avro::Schema, bytes: &[u8]) -> Result<(), String> {
    let reader = GenericDatumReader::builder(schema)
        .build()
        .map_err(|e| e.to_string())?;
    let mut cursor = Cursor::new(bytes);
    reader
        .read_value(&mut cursor)
        .map_err(|e| format!("not an Avro datum of the schema: {e}"))?;
    let left = bytes.len() as u64 - cursor.position().min(bytes.len() as u64);
    if left > 0 {
        return Err(format!(
            "not an Avro datum of the schema: {left} bytes left after the datum"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPERATURE: &str = r#"{
        "type": "object",
        "required": ["temp"],
        "properties": { "temp": { "type": "number" } }
    }"#;

    const READING: &str = r#"{"type": "record", "name": "Reading", "fields": [
        {"name": "id", "type": "string"}, {"name": "temp", "type": "double"}]}"#;

    fn avro_reading(id: &str, temp: f64) -> Vec<u8> {
        // Avro binary: a string is a zigzag length then bytes; a double 8 bytes LE.
        let mut bytes = vec![(id.len() as u8) << 1];
        bytes.extend_from_slice(id.as_bytes());
        bytes.extend_from_slice(&temp.to_le_bytes());
        bytes
    }

    #[test]
    fn a_json_payload_that_matches_is_valid_and_handed_on_parsed() {
        let validator = Validator::compile(SchemaKind::JsonSchema, TEMPERATURE).unwrap();
        let parsed = validator.check(br#"{"temp": 21.5}"#).unwrap();
        assert_eq!(parsed, Some(serde_json::json!({"temp": 21.5})));
    }

    #[test]
    fn a_json_violation_names_the_path_and_the_rule() {
        let validator = Validator::compile(SchemaKind::JsonSchema, TEMPERATURE).unwrap();
        let violations = validator.check(br#"{"temp": "hot"}"#).unwrap_err();
        assert_eq!(violations[0].path, "/temp");
        assert_eq!(violations[0].rule, "/properties/temp/type");
        let violations = validator.check(b"not json").unwrap_err();
        assert_eq!(violations[0].rule, "json");
    }

    #[test]
    fn a_violation_quoting_a_large_value_is_shortened() {
        let validator = Validator::compile(SchemaKind::JsonSchema, TEMPERATURE).unwrap();
        let large = format!(r#"{{"temp": "{}"}}"#, "x".repeat(10_000));
        let violations = validator.check(large.as_bytes()).unwrap_err();
        assert!(violations[0].message.chars().count() <= MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn a_schema_that_does_not_compile_says_why() {
        assert!(Validator::compile(SchemaKind::JsonSchema, "{").is_err());
        assert!(Validator::compile(SchemaKind::JsonSchema, r#"{"type": 12}"#).is_err());
        assert!(Validator::compile(SchemaKind::Avro, r#"{"type": "nope"}"#).is_err());
    }

    #[test]
    fn a_remote_reference_is_refused_not_fetched() {
        let remote = r#"{"$ref": "https://example.invalid/schema.json"}"#;
        assert!(Validator::compile(SchemaKind::JsonSchema, remote).is_err());
    }

    #[test]
    fn an_avro_datum_is_valid_with_or_without_the_confluent_header() {
        let validator = Validator::compile(SchemaKind::Avro, READING).unwrap();
        let datum = avro_reading("s1", 21.5);
        assert_eq!(validator.check(&datum), Ok(None));
        let mut framed = vec![0, 0, 0, 0, 7];
        framed.extend_from_slice(&datum);
        assert_eq!(validator.check(&framed), Ok(None));
    }

    #[test]
    fn a_truncated_or_overlong_avro_datum_is_invalid() {
        let validator = Validator::compile(SchemaKind::Avro, READING).unwrap();
        let datum = avro_reading("s1", 21.5);
        assert!(validator.check(&datum[..datum.len() - 1]).is_err());
        let mut longer = datum.clone();
        longer.push(1);
        let violations = validator.check(&longer).unwrap_err();
        assert_eq!(violations[0].rule, "avro");
    }
}
