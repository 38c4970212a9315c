//! The safety rules for text shown in Discord, readable alone: agent text
//! is redacted and cleaned of what can disguise it, escaped (markdown
//! outside code blocks, fence breakout inside them) and bounded to
//! Discord's limits; whatever does not fit goes into an attached file.

use serde_json::Value;

use crate::redact::{terminal_safe_bounded, Redactor};

/// What fits inline in the description's code block before the content is
/// moved to an attachment (the description limit is 4096 in total).
pub(super) const INLINE_SUBJECT: usize = 1500;
pub(super) const INLINE_DIFF: usize = 2000;
/// Embed field value limit.
pub(super) const FIELD: usize = 1024;
/// Embed field name limit.
pub(super) const FIELD_NAME: usize = 256;
/// Embed description limit.
pub(super) const DESCRIPTION: usize = 4096;
/// Discord's limit on all the text of one embed together (title,
/// description, field names and values).
pub(super) const EMBED_TOTAL: usize = 6000;
/// Upper bound of what is kept from any single agent text at all (the
/// attachment included): a runaway diff must not become a huge upload.
pub(super) const MAX_TEXT_BYTES: usize = 512 * 1024;

/// Removes what can disguise text (controls, bidi, zero-width) after
/// redacting secrets; bounded.
pub(super) fn clean(redactor: &Redactor, text: &str, max_bytes: usize) -> String {
    redactor.shown(text, max_bytes)
}

/// Escapes Discord markdown and neutralises mentions in text shown outside
/// a code block.
#[must_use]
pub fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '<' | '#' | '-' | '[' | ']' | '(' | ')'
            | ':' => {
                out.push('\\');
                out.push(c);
            }
            '@' => out.push_str("@\u{200b}"),
            _ => out.push(c),
        }
    }
    out
}

/// Text inside a code block: no backtick run can close the fence.
pub(super) fn fence_safe(text: &str) -> String {
    text.replace('`', "`\u{200b}")
}

/// A fenced code block with a language tag.
pub(super) fn code_block(lang: &str, text: &str) -> String {
    format!("```{lang}\n{}\n```", fence_safe(text))
}

/// The first `max` characters of `text` and whether it was cut.
pub(super) fn truncate(text: &str, max: usize) -> (String, bool) {
    match text.char_indices().nth(max) {
        None => (text.to_owned(), false),
        Some((i, _)) => (format!("{}…", &text[..i]), true),
    }
}

/// `text` escaped and bounded for an embed field. Stripped first: besides
/// agent text, it shows reasons typed by people and error details.
pub(super) fn field_text(text: &str) -> String {
    let (cut, _) = truncate(&terminal_safe_bounded(text, 4 * FIELD), 900);
    let escaped = escape_markdown(&cut);
    truncate(&escaped, FIELD - 1).0
}

/// An embed field within Discord's limits: a name of 1–256 and a value of
/// 1–1024 characters (Discord refuses the whole message otherwise, and a
/// request that cannot be posted is denied). Text that cleaned up to
/// nothing is shown as such.
pub(super) fn field(name: &str, value: String, inline: bool) -> Value {
    let name = if name.trim().is_empty() {
        "\u{2014}"
    } else {
        name
    };
    let value = if value.trim().is_empty() {
        "*(empty)*".to_owned()
    } else if value.chars().count() <= FIELD {
        value
    } else {
        truncate(&value, FIELD - 1).0
    };
    let mut map = serde_json::Map::new();
    map.insert("name".into(), Value::from(truncate(name, FIELD_NAME - 1).0));
    map.insert("value".into(), Value::String(value));
    map.insert("inline".into(), Value::Bool(inline));
    Value::Object(map)
}

/// Agent text for a component label (labels show no markdown and ping
/// nobody): cleaned, on one line, bounded, never empty.
pub(super) fn label_text(redactor: &Redactor, text: &str, max: usize, fallback: &str) -> String {
    let one_line = clean(redactor, text, 4 * max).replace(['\n', '\t'], " ");
    let shown = truncate(one_line.trim(), max - 1).0;
    if shown.trim().is_empty() {
        fallback.to_owned()
    } else {
        shown
    }
}
