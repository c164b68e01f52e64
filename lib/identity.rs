//! A run's identity and its differ: the settings that define what a run or
//! an evaluation computes, compared field by field through serde, so a new
//! field is compared without anyone adding it to a hand-written list.
use serde::Serialize;
use serde_json::Value;

/// The fields in which `a` and `b` differ, as `path: a → b` lines (nested
/// fields joined with `.`), sorted by field name (serde_json's map order).
/// Empty when they agree.
///
/// Both are serialised with serde; a field present in one and absent in the
/// other is shown as `(absent)`.
pub fn differences<T: Serialize>(a: &T, b: &T) -> Vec<String> {
    let (a, b) = (to_value(a), to_value(b));
    let mut out = Vec::new();
    diff_values("", &a, &b, &mut out);
    out
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_else(|e| Value::String(format!("<unserialisable: {e}>")))
}

fn diff_values(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(ma), Value::Object(mb)) => {
            let mut keys: Vec<&String> = ma.keys().collect();
            keys.extend(mb.keys().filter(|k| !ma.contains_key(*k)));
            for key in keys {
                let sub = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let absent = Value::String("(absent)".into());
                diff_values(
                    &sub,
                    ma.get(key).unwrap_or(&absent),
                    mb.get(key).unwrap_or(&absent),
                    out,
                );
            }
        }
        _ if a != b => out.push(format!("{path}: {a} → {b}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Inner {
        eps: f64,
    }

    #[derive(Serialize)]
    struct Id {
        norm: String,
        threat: Inner,
        attacks: Vec<String>,
    }

    #[test]
    fn every_changed_field_is_listed_with_both_values_and_equal_ones_are_not() {
        let a = Id {
            norm: "linf".into(),
            threat: Inner { eps: 0.2 },
            attacks: vec!["aa".into()],
        };
        let b = Id {
            norm: "l2".into(),
            threat: Inner { eps: 0.05 },
            attacks: vec!["aa".into()],
        };
        assert_eq!(
            differences(&a, &b),
            vec![
                "norm: \"linf\" → \"l2\"".to_string(),
                "threat.eps: 0.2 → 0.05".to_string()
            ]
        );
        assert!(differences(&a, &a).is_empty());
    }
}
