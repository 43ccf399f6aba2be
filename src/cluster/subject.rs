//! MQTT topic ⇄ NATS subject: how the fabric names a message on NATS and what
//! a node subscribes to for a filter. Pure functions; nats-server's own MQTT
//! mode maps `.` lossily (to `//`), this mapping is reversible and
//! collision-free.
//!
//! Rules, topic → subject:
//! 1. A topic whose first level starts with `$` goes under [`DOLLAR_PREFIX`]
//!    (`tern.d.`), every other topic under [`TOPIC_PREFIX`] (`tern.m.`), so a
//!    filter starting with a wildcard (subscribed under `tern.m.`) never
//!    matches a `$` topic, as MQTT wants.
//! 2. Each topic level is one subject token, in order (`/` becomes `.`).
//! 3. An empty level is the token `%` (a NATS token cannot be empty).
//! 4. In a level, `%`, `.`, `*`, `>`, ASCII whitespace and control characters
//!    (bytes below 0x21 and 0x7F) are written `%XX` (two upper-case hex
//!    digits); every other character, non-ASCII UTF-8 and `$` included, is
//!    kept as it is. `%` never stands alone or before something other than
//!    two hex digits except as rule 3's empty level, so decoding is
//!    unambiguous.
//!
//! Rules, filter → subjects (what a node subscribes to):
//! 5. Levels without wildcards are encoded as in rules 1-4 (a filter's first
//!    level that starts with `$` selects `tern.d.`; a first level `+` or `#`
//!    selects `tern.m.`).
//! 6. `+` becomes `*` (which matches any one token, `%` included: `+`
//!    matches an empty level).
//! 7. A trailing `#` becomes `>`, and the filter without it is subscribed
//!    too, because `a/#` also matches `a` while `a.>` needs one more token.
//!    A filter that is only `#` is `tern.m.>` alone (topics have one level
//!    at least).
//!
//! A subject longer than [`MAX_SUBJECT_LEN`] is not produced (NATS closes a
//! connection whose protocol line is too long): such a topic is not forwarded.

/// Subjects of topics whose first level does not start with `$`.
pub const TOPIC_PREFIX: &str = "tern.m.";
/// Subjects of topics whose first level starts with `$`.
pub const DOLLAR_PREFIX: &str = "tern.d.";
/// Longest subject the fabric publishes or subscribes to: under nats-server's
/// default `max_control_line` (4 KiB) with room for the rest of the line.
pub const MAX_SUBJECT_LEN: usize = 3_500;

/// A topic or filter that has no subject (too long once encoded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the NATS subject of this topic would be {0} bytes (at most {MAX_SUBJECT_LEN})")]
pub struct SubjectTooLong(pub usize);

/// The subject a message on `topic` (a valid MQTT topic name) is published on.
pub fn topic_to_subject(topic: &str) -> Result<String, SubjectTooLong> {
    let mut subject = String::with_capacity(TOPIC_PREFIX.len() + topic.len() + 8);
    subject.push_str(prefix_of(topic));
    for (i, level) in topic.split('/').enumerate() {
        if i > 0 {
            subject.push('.');
        }
        push_level(&mut subject, level);
    }
    checked(subject)
}

/// The topic of a subject made by [`topic_to_subject`]; None for any other subject.
pub fn subject_to_topic(subject: &str) -> Option<String> {
    let (dollar, rest) = if let Some(rest) = subject.strip_prefix(TOPIC_PREFIX) {
        (false, rest)
    } else {
        (true, subject.strip_prefix(DOLLAR_PREFIX)?)
    };
    let mut topic = String::with_capacity(rest.len());
    for (i, token) in rest.split('.').enumerate() {
        if i > 0 {
            topic.push('/');
        }
        decode_token(token, &mut topic)?;
    }
    // The prefix must agree with the topic (rule 1).
    (topic.starts_with('$') == dollar).then_some(topic)
}

/// The subjects a node subscribes to for `filter` (a valid MQTT topic filter
/// without a `$share/` prefix): one, or two for a filter ending in `/#`.
pub fn filter_to_subjects(filter: &str) -> Result<Vec<String>, SubjectTooLong> {
    if filter == "#" {
        return Ok(vec![format!("{TOPIC_PREFIX}>")]);
    }
    let mut subject = String::with_capacity(TOPIC_PREFIX.len() + filter.len() + 8);
    let first_is_wildcard = filter.starts_with('+') || filter.starts_with('#');
    subject.push_str(if first_is_wildcard {
        TOPIC_PREFIX
    } else {
        prefix_of(filter)
    });
    let (exact, multi) = match filter.strip_suffix("/#") {
        Some(head) => (head, true),
        None => (filter, false),
    };
    for (i, level) in exact.split('/').enumerate() {
        if i > 0 {
            subject.push('.');
        }
        if level == "+" {
            subject.push('*');
        } else {
            push_level(&mut subject, level);
        }
    }
    let mut subjects = Vec::with_capacity(2);
    if multi {
        let wide = format!("{subject}.>");
        subjects.push(checked(subject)?);
        subjects.push(checked(wide)?);
    } else {
        subjects.push(checked(subject)?);
    }
    Ok(subjects)
}

fn prefix_of(topic: &str) -> &'static str {
    if topic.starts_with('$') {
        DOLLAR_PREFIX
    } else {
        TOPIC_PREFIX
    }
}

fn checked(subject: String) -> Result<String, SubjectTooLong> {
    if subject.len() > MAX_SUBJECT_LEN {
        return Err(SubjectTooLong(subject.len()));
    }
    Ok(subject)
}

/// Rule 3 and 4: one level as one token.
fn push_level(out: &mut String, level: &str) {
    if level.is_empty() {
        out.push('%');
        return;
    }
    for c in level.chars() {
        if needs_escape(c) {
            // Only ASCII is escaped: one byte, two hex digits.
            let byte = c as u32 as u8;
            out.push('%');
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 0x0F)] as char);
        } else {
            out.push(c);
        }
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn needs_escape(c: char) -> bool {
    matches!(c, '%' | '.' | '*' | '>') || (c.is_ascii() && (c as u32 <= 0x20 || c as u32 == 0x7F))
}

/// Reverses [`push_level`]; None when the token is not one it makes.
fn decode_token(token: &str, out: &mut String) -> Option<()> {
    if token == "%" {
        return Some(());
    }
    if token.is_empty() {
        return None;
    }
    let mut rest = token;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let hex = rest.get(at + 1..at + 3)?;
        let byte = u8::from_str_radix(hex, 16).ok()?;
        // Upper-case digits only, and only what rule 4 escapes: one spelling per level.
        let c = char::from(byte);
        if !hex.bytes().all(|b| HEX.contains(&b)) || !needs_escape(c) {
            return None;
        }
        out.push(c);
        rest = &rest[at + 3..];
    }
    if rest.contains(['.', '*', '>']) || rest.chars().any(|c| c != '%' && needs_escape(c)) {
        return None;
    }
    out.push_str(rest);
    Some(())
}
