//! A JSON Schema checker for the keywords the constraint tests use, so outputs are validated
//! by something other than the engine that produced them. An unknown keyword is an error: a
//! test cannot pass on a schema the checker only pretends to read.

use serde_json::Value;

/// Whether `value` is valid under `schema` (`root` resolves `#/$defs/…` references); the
/// error names the path and the rule broken.
pub fn validate(schema: &Value, value: &Value, root: &Value) -> Result<(), String> {
    check(schema, value, root, "$")
}

fn check(schema: &Value, value: &Value, root: &Value, path: &str) -> Result<(), String> {
    let Some(rules) = schema.as_object() else {
        return match schema {
            Value::Bool(true) => Ok(()),
            _ => Err(format!("{path}: schema {schema} admits nothing")),
        };
    };
    for (keyword, rule) in rules {
        let fail = |why: String| Err(format!("{path}: {keyword}: {why} (value {value})"));
        let ok = match keyword.as_str() {
            "type" => type_matches(rule, value),
            "enum" => rule.as_array().is_some_and(|options| options.contains(value)),
            "const" => rule == value,
            "$ref" => {
                let target =
                    resolve(rule.as_str().unwrap_or(""), root).ok_or(format!("{path}: bad $ref {rule}"))?;
                check(target, value, root, path)?;
                true
            }
            "anyOf" => any_count(rule, value, root, path) >= 1,
            "oneOf" => any_count(rule, value, root, path) == 1,
            "allOf" => {
                for sub in rule.as_array().into_iter().flatten() {
                    check(sub, value, root, path)?;
                }
                true
            }
            "properties" | "required" | "additionalProperties" => {
                object_rule(keyword, rule, rules, value, root, path)?;
                true
            }
            "items" | "minItems" | "maxItems" => array_rule(keyword, rule, value, root, path)?,
            "minLength" | "maxLength" => match value.as_str() {
                Some(s) => {
                    let n = s.chars().count() as u64;
                    let bound = rule.as_u64().unwrap_or(0);
                    if keyword == "minLength" { n >= bound } else { n <= bound }
                }
                None => true,
            },
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => match value.as_f64() {
                Some(x) => {
                    let bound = rule.as_f64().unwrap_or(f64::NAN);
                    match keyword.as_str() {
                        "minimum" => x >= bound,
                        "maximum" => x <= bound,
                        "exclusiveMinimum" => x > bound,
                        _ => x < bound,
                    }
                }
                None => true,
            },
            "$defs" | "description" | "title" => true,
            other => return Err(format!("{path}: the checker does not know the keyword {other:?}")),
        };
        if !ok {
            return fail(format!("{rule} not met"));
        }
    }
    Ok(())
}

fn type_matches(rule: &Value, value: &Value) -> bool {
    let one = |t: &str| match t {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        _ => false,
    };
    match rule {
        Value::String(t) => one(t),
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(one),
        _ => false,
    }
}

fn resolve<'a>(reference: &str, root: &'a Value) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    root.pointer(pointer)
}

fn any_count(rule: &Value, value: &Value, root: &Value, path: &str) -> usize {
    rule.as_array().into_iter().flatten().filter(|sub| check(sub, value, root, path).is_ok()).count()
}

fn object_rule(
    keyword: &str,
    rule: &Value,
    rules: &serde_json::Map<String, Value>,
    value: &Value,
    root: &Value,
    path: &str,
) -> Result<(), String> {
    let Some(object) = value.as_object() else { return Ok(()) };
    match keyword {
        "properties" => {
            for (name, sub) in rule.as_object().into_iter().flatten() {
                if let Some(v) = object.get(name) {
                    check(sub, v, root, &format!("{path}.{name}"))?;
                }
            }
        }
        "required" => {
            for name in rule.as_array().into_iter().flatten().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    return Err(format!("{path}: required {name:?} missing in {value}"));
                }
            }
        }
        _ => {
            let declared = rules.get("properties").and_then(Value::as_object);
            for (name, v) in object {
                if declared.is_some_and(|d| d.contains_key(name)) {
                    continue;
                }
                match rule {
                    Value::Bool(false) => return Err(format!("{path}: extra key {name:?} in {value}")),
                    Value::Bool(true) => {}
                    sub => check(sub, v, root, &format!("{path}.{name}"))?,
                }
            }
        }
    }
    Ok(())
}

fn array_rule(keyword: &str, rule: &Value, value: &Value, root: &Value, path: &str) -> Result<bool, String> {
    let Some(items) = value.as_array() else { return Ok(true) };
    Ok(match keyword {
        "items" => {
            for (i, item) in items.iter().enumerate() {
                check(rule, item, root, &format!("{path}[{i}]"))?;
            }
            true
        }
        "minItems" => items.len() as u64 >= rule.as_u64().unwrap_or(0),
        _ => items.len() as u64 <= rule.as_u64().unwrap_or(u64::MAX),
    })
}
