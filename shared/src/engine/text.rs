//! Text Postgres can store: it refuses the NUL character in `text` and
//! `jsonb` ("invalid byte sequence for encoding UTF8: 0x00"). No platform
//! sends one in earnest, so ids holding it are refused and text loses it.

use std::borrow::Cow;

use serde_json::Value;

/// Whether `s` can be stored as it is.
pub fn storable(s: &str) -> bool {
    !s.contains('\0')
}

/// `s` without NUL characters.
pub fn without_nul(s: &str) -> Cow<'_, str> {
    if storable(s) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.replace('\0', ""))
    }
}

/// `s` without NUL characters, reusing it when it has none.
pub fn into_storable(s: String) -> String {
    if storable(&s) { s } else { s.replace('\0', "") }
}

/// Whether some string of `value` (or some key) holds a NUL character.
pub fn json_holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => !storable(s),
        Value::Array(items) => items.iter().any(json_holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| !storable(k) || json_holds_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// Removes NUL characters from every string and key of `value`.
pub fn strip_nul(value: &mut Value) {
    match value {
        Value::String(s) if !storable(s) => *s = s.replace('\0', ""),
        Value::Array(items) => items.iter_mut().for_each(strip_nul),
        Value::Object(map) if map.keys().any(|k| !storable(k)) => {
            *map = std::mem::take(map)
                .into_iter()
                .map(|(k, mut v)| {
                    strip_nul(&mut v);
                    (k.replace('\0', ""), v)
                })
                .collect();
        }
        Value::Object(map) => map.values_mut().for_each(strip_nul),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nul_characters_are_found_and_removed_anywhere_in_text_and_json() {
        assert!(storable("Kvittering æøå 🧾"));
        assert!(!storable("C1\0"));
        assert_eq!(without_nul("a\0b\0"), "ab");
        assert_eq!(into_storable("\0x".to_owned()), "x");
        assert!(matches!(without_nul("ab"), Cow::Borrowed("ab")));
        let mut value = json!({"lines": [{"description": "Adobe\u{0}"}], "k\u{0}": ["x", 1, null]});
        assert!(json_holds_nul(&value));
        strip_nul(&mut value);
        assert_eq!(
            value,
            json!({"lines": [{"description": "Adobe"}], "k": ["x", 1, null]})
        );
        assert!(!json_holds_nul(&value));
    }
}
