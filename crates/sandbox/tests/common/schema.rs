//! Schema checks against the providers' own descriptions (copied into `fixtures/schemas/`):
//! Google discovery documents (field names and JSON types; int64/uint64 are strings) and the Graph wire
//! property lists generated from msgraph-sdk.

use std::sync::OnceLock;

use serde_json::Value;

fn load(rel: &str) -> Value {
    let path = format!(
        "{}/../../fixtures/schemas/{rel}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        .unwrap()
}

pub fn gmail() -> &'static Value {
    static V: OnceLock<Value> = OnceLock::new();
    V.get_or_init(|| load("google/gmail.v1.json"))
}

pub fn calendar() -> &'static Value {
    static V: OnceLock<Value> = OnceLock::new();
    V.get_or_init(|| load("google/calendar.v3.json"))
}

pub fn graph_fields() -> &'static Value {
    static V: OnceLock<Value> = OnceLock::new();
    V.get_or_init(|| load("microsoft/graph-fields.json"))
}

/// Every field of `value` exists in discovery schema `schema` of `doc` with the right JSON type.
pub fn check_google(doc: &Value, schema: &str, value: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    let s = &doc["schemas"][schema];
    assert!(s.is_object(), "no schema {schema}");
    walk_google(doc, s, value, schema, &mut errs);
    errs
}

fn walk_google(doc: &Value, s: &Value, v: &Value, path: &str, errs: &mut Vec<String>) {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        return walk_google(doc, &doc["schemas"][r], v, path, errs);
    }
    let ty = s.get("type").and_then(Value::as_str).unwrap_or("any");
    let format = s.get("format").and_then(Value::as_str).unwrap_or("");
    let ok = match ty {
        "string" => v.is_string(),
        "integer" if format == "int64" || format == "uint64" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    };
    if !ok {
        errs.push(format!(
            "{path}: schema says {ty}{}, sandbox sent {v}",
            if format.is_empty() {
                String::new()
            } else {
                format!(" ({format})")
            }
        ));
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, fv) in m {
                if let Some(ps) = s.get("properties").and_then(|p| p.get(k)) {
                    walk_google(doc, ps, fv, &format!("{path}.{k}"), errs);
                } else if let Some(ap) = s.get("additionalProperties") {
                    walk_google(doc, ap, fv, &format!("{path}.{k}"), errs);
                } else {
                    errs.push(format!("{path}.{k}: not in the discovery schema"));
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for (i, it) in items.iter().enumerate() {
                    walk_google(doc, is, it, &format!("{path}[{i}]"), errs);
                }
            }
        }
        _ => {}
    }
}

/// OData annotations a Graph payload may carry at any level.
const ANNOTATIONS: &[&str] = &[
    "@odata.context",
    "@odata.nextLink",
    "@odata.deltaLink",
    "@odata.etag",
    "@odata.type",
    "@odata.id",
    "@removed",
];

/// Every top-level property of `value` is a wire property of Graph type `ty`.
pub fn check_graph(ty: &str, value: &Value) -> Vec<String> {
    let fields: Vec<&str> = graph_fields()[ty]
        .as_array()
        .unwrap_or_else(|| panic!("no Graph type {ty}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    value
        .as_object()
        .expect("object")
        .keys()
        .filter(|k| !fields.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()))
        .map(|k| format!("{ty}.{k}: not a Graph property"))
        .collect()
}

#[test]
fn the_checkers_reject_wrong_fields_and_types() {
    let bad = serde_json::json!({"emailAddress": "a@b", "historyId": 5, "nope": 1});
    let errs = check_google(gmail(), "Profile", &bad);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(
        check_graph(
            "user",
            &serde_json::json!({"displayName": "x", "displayname": "y"})
        )
        .len(),
        1
    );
}
