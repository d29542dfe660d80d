//! "Same shape" for golden fixtures: the same keys with the same JSON types, recursively. A `null` in a
//! fixture means "nullable": the sandbox may send null or a value.

use serde_json::Value;

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Differences between a fixture's shape and an actual body. `extra_ok` lists dotted paths the sandbox
/// may send although the fixture lacks them (documented newer or optional fields).
pub fn diff(fixture: &Value, actual: &Value, extra_ok: &[&str]) -> Vec<String> {
    let mut errs = Vec::new();
    walk(fixture, actual, "", extra_ok, &mut errs);
    errs
}

fn walk(f: &Value, a: &Value, path: &str, extra_ok: &[&str], errs: &mut Vec<String>) {
    match (f, a) {
        (Value::Null, _) => {}
        (Value::Object(fm), Value::Object(am)) => {
            for (k, fv) in fm {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match am.get(k) {
                    Some(av) => walk(fv, av, &p, extra_ok, errs),
                    None => errs.push(format!("missing {p}")),
                }
            }
            for k in am.keys() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if !fm.contains_key(k) && !extra_ok.contains(&p.as_str()) {
                    errs.push(format!("unexpected {p}"));
                }
            }
        }
        (Value::Array(fa), Value::Array(aa)) => {
            if let (Some(f0), Some(a0)) = (fa.first(), aa.first()) {
                for (i, av) in aa.iter().enumerate() {
                    walk(f0, av, &format!("{path}[{i}]"), extra_ok, errs);
                }
                let _ = a0;
            }
        }
        _ if kind(f) == kind(a) => {}
        _ => errs.push(format!(
            "{path}: fixture has {}, sandbox sent {}",
            kind(f),
            kind(a)
        )),
    }
}

#[test]
fn shapes_catch_missing_extra_and_mistyped_fields() {
    let f = serde_json::json!({"a": 1, "b": {"c": "x"}, "n": null, "l": [{"x": 1}]});
    assert!(
        diff(
            &f,
            &serde_json::json!({"a": 2, "b": {"c": "y"}, "n": "v", "l": [{"x": 3}]}),
            &[]
        )
        .is_empty()
    );
    assert_eq!(
        diff(
            &f,
            &serde_json::json!({"a": "2", "b": {"c": "y"}, "n": null, "l": []}),
            &[]
        ),
        vec!["a: fixture has number, sandbox sent string"]
    );
    assert_eq!(
        diff(
            &f,
            &serde_json::json!({"a": 2, "b": {}, "n": null, "l": [], "z": 1}),
            &[]
        ),
        vec!["missing b.c", "unexpected z"]
    );
}
