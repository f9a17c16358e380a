//! A validator for the subset of JSON Schema that skills use.
//!
//! Invariants:
//! - A [`Schema`] is compiled once, when its skill is registered. Compiling
//!   rejects every keyword outside the subset below, so a schema never
//!   promises a check that is not made.
//! - Every (sub)schema is an object naming exactly one `type`: `object`,
//!   `array`, `string`, `integer`, `number` or `boolean`. Keywords must fit
//!   the type: `properties`, `required` and `additionalProperties` (a
//!   boolean) for objects, `items` for arrays, `minimum` and `maximum` for
//!   integers and numbers; `enum`, `description` and `title` for any type.
//!   Every name in `required` must appear in `properties`, and every value
//!   of `enum` must itself match the type.
//! - `integer` means a JSON number written without a fraction or exponent
//!   that fits an `i64` or `u64` (`3`, not `3.0`).
//! - Validation stops at the first error and names the offending field by
//!   its path from the arguments object: `args[2]`, `options.mode`, or
//!   `arguments` for the object itself.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};

/// Keywords every type accepts. `description` and `title` are annotations
/// for the planner; they constrain nothing.
const COMMON_KEYWORDS: [&str; 4] = ["type", "enum", "description", "title"];

/// A compiled schema.
#[derive(Debug)]
pub(crate) struct Schema {
    kind: Kind,
    /// The allowed values, when the schema has an `enum`.
    allowed: Option<Vec<Value>>,
}

#[derive(Debug)]
enum Kind {
    Object {
        properties: BTreeMap<String, Schema>,
        required: Vec<String>,
        additional: bool,
    },
    Array {
        items: Option<Box<Schema>>,
    },
    String,
    Integer(Bounds),
    Number(Bounds),
    Boolean,
}

/// Inclusive numeric bounds.
#[derive(Debug, Default)]
struct Bounds {
    minimum: Option<f64>,
    maximum: Option<f64>,
}

/// One step of a path into the arguments.
#[derive(Debug)]
enum Step {
    Field(String),
    Index(usize),
}

/// A validation failure: the path is built innermost step first as the
/// error travels up.
#[derive(Debug)]
struct Invalid {
    reversed_path: Vec<Step>,
    message: String,
}

impl Invalid {
    fn new(message: String) -> Invalid {
        Invalid {
            reversed_path: Vec::new(),
            message,
        }
    }

    fn at(mut self, step: Step) -> Invalid {
        self.reversed_path.push(step);
        self
    }

    fn render(self) -> String {
        let mut path = String::new();
        for step in self.reversed_path.iter().rev() {
            match step {
                Step::Field(name) if path.is_empty() => path.push_str(name),
                Step::Field(name) => {
                    let _ = write!(path, ".{name}");
                }
                Step::Index(index) => {
                    let _ = write!(path, "[{index}]");
                }
            }
        }
        if path.is_empty() {
            path.push_str("arguments");
        }
        format!("`{path}`: {}", self.message)
    }
}

impl Schema {
    /// Compiles `schema`, which must describe an object (a skill's
    /// arguments are always an object). The error says what is wrong and
    /// where, as a path of schema keywords.
    pub(crate) fn compile_arguments(schema: &Value) -> Result<Schema, String> {
        let compiled = Schema::compile(schema, "schema")?;
        match compiled.kind {
            Kind::Object { .. } => Ok(compiled),
            _ => Err("schema: the arguments must be described as `\"type\": \"object\"`".into()),
        }
    }

    fn compile(schema: &Value, at: &str) -> Result<Schema, String> {
        let Some(object) = schema.as_object() else {
            return Err(format!("{at}: a schema must be a JSON object"));
        };
        let Some(ty) = object.get("type").and_then(Value::as_str) else {
            return Err(format!("{at}: `type` must be a string naming one type"));
        };
        let own_keywords: &[&str] = match ty {
            "object" => &["properties", "required", "additionalProperties"],
            "array" => &["items"],
            "integer" | "number" => &["minimum", "maximum"],
            "string" | "boolean" => &[],
            other => return Err(format!("{at}: type `{other}` is not supported")),
        };
        if let Some(keyword) = object
            .keys()
            .find(|k| !COMMON_KEYWORDS.contains(&k.as_str()) && !own_keywords.contains(&k.as_str()))
        {
            return Err(format!(
                "{at}: keyword `{keyword}` is not supported for type `{ty}`"
            ));
        }
        let kind = match ty {
            "object" => compile_object(object, at)?,
            "array" => Kind::Array {
                items: match object.get("items") {
                    Some(items) => Some(Box::new(Schema::compile(items, &format!("{at}.items"))?)),
                    None => None,
                },
            },
            "integer" => Kind::Integer(compile_bounds(object, at)?),
            "number" => Kind::Number(compile_bounds(object, at)?),
            "string" => Kind::String,
            _ => Kind::Boolean,
        };
        let mut compiled = Schema {
            kind,
            allowed: None,
        };
        if let Some(values) = object.get("enum") {
            compiled.allowed = Some(compiled.compile_enum(values, at)?);
        }
        Ok(compiled)
    }

    fn compile_enum(&self, values: &Value, at: &str) -> Result<Vec<Value>, String> {
        let values = match values.as_array() {
            Some(values) if !values.is_empty() => values,
            _ => return Err(format!("{at}.enum: must be a non-empty array")),
        };
        for value in values {
            if let Err(invalid) = self.validate_value(value) {
                return Err(format!("{at}.enum: {value}: {}", invalid.message));
            }
        }
        Ok(values.clone())
    }

    /// Checks `value` against the schema; the error names the offending
    /// field.
    pub(crate) fn validate(&self, value: &Value) -> Result<(), String> {
        self.validate_value(value).map_err(Invalid::render)
    }

    fn validate_value(&self, value: &Value) -> Result<(), Invalid> {
        self.kind.validate(value)?;
        match &self.allowed {
            Some(allowed) if !allowed.contains(value) => Err(Invalid::new(format!(
                "must be one of {}, got {value}",
                Value::Array(allowed.clone())
            ))),
            _ => Ok(()),
        }
    }
}

fn compile_object(object: &Map<String, Value>, at: &str) -> Result<Kind, String> {
    let mut properties = BTreeMap::new();
    if let Some(declared) = object.get("properties") {
        let Some(declared) = declared.as_object() else {
            return Err(format!("{at}.properties: must be an object"));
        };
        for (name, schema) in declared {
            let compiled = Schema::compile(schema, &format!("{at}.properties.{name}"))?;
            properties.insert(name.clone(), compiled);
        }
    }
    let mut required = Vec::new();
    if let Some(names) = object.get("required") {
        let Some(names) = names.as_array() else {
            return Err(format!("{at}.required: must be an array of names"));
        };
        for name in names {
            match name.as_str() {
                Some(name) if properties.contains_key(name) => required.push(name.to_owned()),
                _ => {
                    return Err(format!(
                        "{at}.required: {name} is not a name in `properties`"
                    ));
                }
            }
        }
    }
    let additional = match object.get("additionalProperties") {
        None => true,
        Some(Value::Bool(allowed)) => *allowed,
        Some(_) => {
            return Err(format!(
                "{at}.additionalProperties: only `true` or `false` is supported"
            ));
        }
    };
    Ok(Kind::Object {
        properties,
        required,
        additional,
    })
}

fn compile_bounds(object: &Map<String, Value>, at: &str) -> Result<Bounds, String> {
    let bound = |keyword: &str| match object.get(keyword) {
        None => Ok(None),
        Some(value) => value
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("{at}.{keyword}: must be a number")),
    };
    Ok(Bounds {
        minimum: bound("minimum")?,
        maximum: bound("maximum")?,
    })
}

impl Kind {
    fn validate(&self, value: &Value) -> Result<(), Invalid> {
        match (self, value) {
            (
                Kind::Object {
                    properties,
                    required,
                    additional,
                },
                Value::Object(fields),
            ) => validate_object(properties, required, *additional, fields),
            (Kind::Array { items }, Value::Array(elements)) => {
                let Some(items) = items else { return Ok(()) };
                for (index, element) in elements.iter().enumerate() {
                    items
                        .validate_value(element)
                        .map_err(|e| e.at(Step::Index(index)))?;
                }
                Ok(())
            }
            (Kind::String, Value::String(_)) | (Kind::Boolean, Value::Bool(_)) => Ok(()),
            (Kind::Integer(bounds), Value::Number(n)) if n.is_i64() || n.is_u64() => {
                bounds.check(value)
            }
            (Kind::Number(bounds), Value::Number(_)) => bounds.check(value),
            _ => Err(Invalid::new(format!(
                "expected {}, got {}",
                self.name(),
                type_of(value)
            ))),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Kind::Object { .. } => "an object",
            Kind::Array { .. } => "an array",
            Kind::String => "a string",
            Kind::Integer(_) => "an integer",
            Kind::Number(_) => "a number",
            Kind::Boolean => "a boolean",
        }
    }
}

fn validate_object(
    properties: &BTreeMap<String, Schema>,
    required: &[String],
    additional: bool,
    fields: &Map<String, Value>,
) -> Result<(), Invalid> {
    if let Some(missing) = required.iter().find(|name| !fields.contains_key(*name)) {
        return Err(
            Invalid::new("required field is missing".into()).at(Step::Field(missing.clone()))
        );
    }
    for (name, value) in fields {
        match properties.get(name) {
            Some(schema) => schema
                .validate_value(value)
                .map_err(|e| e.at(Step::Field(name.clone())))?,
            None if additional => {}
            None => {
                let known: Vec<&str> = properties.keys().map(String::as_str).collect();
                return Err(Invalid::new(format!(
                    "unknown field (known fields: {})",
                    known.join(", ")
                ))
                .at(Step::Field(name.clone())));
            }
        }
    }
    Ok(())
}

impl Bounds {
    fn check(&self, value: &Value) -> Result<(), Invalid> {
        let Some(n) = value.as_f64() else {
            return Ok(());
        };
        if let Some(minimum) = self.minimum.filter(|&minimum| n < minimum) {
            return Err(Invalid::new(format!(
                "must be at least {minimum}, got {value}"
            )));
        }
        if let Some(maximum) = self.maximum.filter(|&maximum| n > maximum) {
            return Err(Invalid::new(format!(
                "must be at most {maximum}, got {value}"
            )));
        }
        Ok(())
    }
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::Schema;

    fn compile(schema: serde_json::Value) -> Result<Schema, String> {
        Schema::compile_arguments(&schema)
    }

    fn shell_like() -> Schema {
        compile(json!({
            "type": "object",
            "properties": {
                "program": {"type": "string", "description": "what to run"},
                "args": {"type": "array", "items": {"type": "string"}},
                "mode": {"type": "string", "enum": ["fast", "slow"]},
                "limits": {
                    "type": "object",
                    "properties": {"ms": {"type": "integer", "minimum": 0, "maximum": 100}},
                    "additionalProperties": false
                },
                "ratio": {"type": "number", "minimum": 0.5},
                "verbose": {"type": "boolean"}
            },
            "required": ["program"],
            "additionalProperties": false
        }))
        .unwrap()
    }

    fn error(value: serde_json::Value) -> String {
        shell_like().validate(&value).unwrap_err()
    }

    #[test]
    fn schema_accepts_valid_arguments() {
        let schema = shell_like();
        let ok = json!({
            "program": "git", "args": ["status", "-s"], "mode": "fast",
            "limits": {"ms": 100}, "ratio": 0.5, "verbose": true
        });
        assert_eq!(schema.validate(&ok), Ok(()));
        assert_eq!(schema.validate(&json!({"program": "ls"})), Ok(()));
    }

    #[test]
    fn schema_errors_name_the_field() {
        assert_eq!(error(json!({})), "`program`: required field is missing");
        assert_eq!(
            error(json!([])),
            "`arguments`: expected an object, got an array"
        );
        assert_eq!(
            error(json!({"program": "ls", "args": ["a", 3]})),
            "`args[1]`: expected a string, got an integer"
        );
        assert_eq!(
            error(json!({"program": "ls", "limits": {"ms": 101}})),
            "`limits.ms`: must be at most 100, got 101"
        );
        assert_eq!(
            error(json!({"program": "ls", "limits": {"ms": 1.5}})),
            "`limits.ms`: expected an integer, got a number"
        );
        assert_eq!(
            error(json!({"program": "ls", "ratio": 0.25})),
            "`ratio`: must be at least 0.5, got 0.25"
        );
        assert_eq!(
            error(json!({"program": "ls", "mode": "medium"})),
            "`mode`: must be one of [\"fast\",\"slow\"], got \"medium\""
        );
        assert!(error(json!({"program": "ls", "extra": 1})).starts_with("`extra`: unknown field"),);
        assert_eq!(
            error(json!({"program": "ls", "limits": {"other": 1}})),
            "`limits.other`: unknown field (known fields: ms)"
        );
    }

    #[test]
    fn schema_additional_properties_default_to_allowed() {
        let schema = compile(json!({"type": "object"})).unwrap();
        assert_eq!(schema.validate(&json!({"anything": [1, 2]})), Ok(()));
    }

    #[test]
    fn schema_unsupported_keywords_are_rejected() {
        let cases = [
            (
                json!({"type": "object", "patternProperties": {}}),
                "keyword `patternProperties`",
            ),
            (json!({"type": "string"}), "must be described as"),
            (json!({"properties": {}}), "`type` must be a string"),
            (
                json!({"type": ["object", "null"]}),
                "`type` must be a string",
            ),
            (
                json!({"type": "object", "properties": {"s": {"type": "string", "maxLength": 3}}}),
                "schema.properties.s: keyword `maxLength`",
            ),
            (
                json!({"type": "object", "properties": {"s": {"type": "string", "minimum": 3}}}),
                "keyword `minimum` is not supported for type `string`",
            ),
            (
                json!({"type": "object", "required": ["x"]}),
                "not a name in `properties`",
            ),
            (
                json!({"type": "object", "additionalProperties": {"type": "string"}}),
                "only `true` or `false`",
            ),
            (
                json!({"type": "object", "properties": {"n": {"type": "null"}}}),
                "type `null` is not supported",
            ),
            (
                json!({"type": "object", "properties": {"m": {"type": "string", "enum": ["a", 1]}}}),
                "schema.properties.m.enum: 1: expected a string",
            ),
        ];
        for (schema, expected) in cases {
            let error = compile(schema.clone()).unwrap_err();
            assert!(error.contains(expected), "{schema}: {error}");
        }
    }
}
