//! Client ids and topics as JetStream KV keys, reversibly.
//!
//! A KV key may hold only `A-Z a-z 0-9 - _ / = .`, must not be empty and must
//! not start or end with `.` (`.` separates subject tokens). Client ids and
//! topics are any UTF-8 text, so:
//! - `A-Z a-z 0-9 - _ /` stay as they are (`/`, the topic level separator,
//!   is valid in a key and keeps keys readable: `sensors/room1/temp`);
//! - every other byte of the UTF-8 text, `=` and `.` included, becomes `=`
//!   followed by two upper-case hex digits (`$SYS/x` → `=24SYS/x`,
//!   `a.b` → `a=2Eb`, `a b` → `a=20b`, `é` → `=C3=A9`);
//! - the empty text becomes `=` alone (which no escape can produce).
//!
//! Escapes always have two hex digits after `=`, so decoding is unambiguous
//! and `decode(encode(t)) == t` for every text; two different texts never
//! share a key. A key no encoder made (a bad escape, bytes that are not
//! UTF-8) decodes to `None`.

use std::fmt::Write;

/// The KV key of `text` (a client id or a topic).
pub(crate) fn encode(text: &str) -> String {
    if text.is_empty() {
        return "=".to_string();
    }
    let mut key = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'/') {
            key.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(key, "={byte:02X}");
        }
    }
    key
}

/// The text a key was made from; `None` for a key `encode` never makes.
pub(crate) fn decode(key: &str) -> Option<String> {
    if key == "=" {
        return Some(String::new());
    }
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'=' {
            let hex = key.get(i + 1..i + 3)?;
            if !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
            {
                return None;
            }
            let escaped = u8::from_str_radix(hex, 16).ok()?;
            if escaped.is_ascii_alphanumeric() || matches!(escaped, b'-' | b'_' | b'/') {
                return None; // never escaped: another spelling of the same text
            }
            out.push(escaped);
            i += 3;
        } else if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'/') {
            out.push(byte);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the KV accepts (async-nats' check: `[-/_=.a-zA-Z0-9]+`, no `.` at either end).
    fn is_valid_kv_key(key: &str) -> bool {
        !key.is_empty()
            && !key.starts_with('.')
            && !key.ends_with('.')
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
    }

    #[test]
    fn plain_names_and_levels_stay_as_they_are() {
        assert_eq!(encode("sensor-01_a"), "sensor-01_a");
        assert_eq!(encode("sensors/room1/temp"), "sensors/room1/temp");
    }

    #[test]
    fn dots_dollars_spaces_wildcards_and_equals_are_escaped() {
        assert_eq!(encode("a.b"), "a=2Eb");
        assert_eq!(encode("$SYS/x"), "=24SYS/x");
        assert_eq!(encode("a b"), "a=20b");
        assert_eq!(encode("a=b"), "a=3Db");
        assert_eq!(encode("*>+#"), "=2A=3E=2B=23");
        assert_eq!(encode(".a."), "=2Ea=2E");
    }

    #[test]
    fn empty_levels_and_non_ascii_text() {
        assert_eq!(encode("/a//b/"), "/a//b/");
        assert_eq!(encode("é"), "=C3=A9");
        assert_eq!(decode("=C3=A9").as_deref(), Some("é"));
    }

    #[test]
    fn the_empty_text_is_a_lone_equals_sign() {
        assert_eq!(encode(""), "=");
        assert_eq!(decode("=").as_deref(), Some(""));
    }

    #[test]
    fn keys_no_encoder_makes_are_refused() {
        assert_eq!(decode("a=2"), None, "short escape");
        assert_eq!(decode("a=2e"), None, "lower-case hex");
        assert_eq!(decode("=41"), None, "an escaped letter");
        assert_eq!(decode("a.b"), None, "a raw dot");
        assert_eq!(decode("=FF"), None, "not UTF-8");
    }

    proptest! {
        #[test]
        fn any_text_round_trips_into_a_valid_key(text in any::<String>()) {
            let key = encode(&text);
            prop_assert!(is_valid_kv_key(&key), "{key:?}");
            prop_assert_eq!(decode(&key), Some(text));
        }

        #[test]
        fn different_texts_get_different_keys(a in any::<String>(), b in any::<String>()) {
            prop_assume!(a != b);
            prop_assert_ne!(encode(&a), encode(&b));
        }
    }
}
