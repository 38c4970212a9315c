//! The one reader of OpenCode's configuration as the user wrote it:
//! `opencode.json` / `opencode.jsonc` (global and workspace), and the
//! `OPENCODE_CONFIG_CONTENT` / `OPENCODE_PERMISSION` variables, in the order
//! OpenCode merges them. Used by `--gate` (which adds to
//! `OPENCODE_CONFIG_CONTENT`) and by `doctor` (which says what is gated).

use std::path::{Path, PathBuf};

use serde_json::Value;

/// What a configuration layer is: a file, or one of the two variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// `opencode.json[c]`: a whole config.
    File,
    /// `OPENCODE_CONFIG_CONTENT`: a whole config.
    ConfigContent,
    /// `OPENCODE_PERMISSION`: a `permission` value alone.
    Permission,
}

/// One layer of configuration that exists, read.
#[derive(Debug)]
pub struct Layer {
    /// The file's path or the variable's name, for messages.
    pub source: String,
    pub kind: LayerKind,
    /// The parsed value, or why it does not parse.
    pub value: Result<Value, serde_json::Error>,
}

/// Parse JSON with comments and trailing commas (OpenCode's `jsonc`).
pub fn parse(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str(&strip_jsonc(text))
}

/// Every layer that exists, in OpenCode's merge order (later wins): the
/// global config files, the workspace's, then `OPENCODE_CONFIG_CONTENT` and
/// `OPENCODE_PERMISSION` from this process's environment.
#[must_use]
pub fn layers(workspace: &Path) -> Vec<Layer> {
    let global = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("opencode"));
    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(global) = global {
        files.push(global.join("opencode.json"));
        files.push(global.join("opencode.jsonc"));
    }
    files.push(workspace.join("opencode.json"));
    files.push(workspace.join("opencode.jsonc"));
    let mut out: Vec<Layer> = files
        .into_iter()
        .filter_map(|file| {
            let text = std::fs::read_to_string(&file).ok()?;
            Some(Layer {
                source: file.display().to_string(),
                kind: LayerKind::File,
                value: parse(&text),
            })
        })
        .collect();
    for (var, kind) in [
        ("OPENCODE_CONFIG_CONTENT", LayerKind::ConfigContent),
        ("OPENCODE_PERMISSION", LayerKind::Permission),
    ] {
        if let Ok(text) = std::env::var(var) {
            out.push(Layer {
                source: var.to_owned(),
                kind,
                value: parse(&text),
            });
        }
    }
    out
}

/// Remove `//` and `/* */` comments and trailing commas outside strings,
/// so `opencode.jsonc` parses as JSON.
fn strip_jsonc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            _ => out.push(c),
        }
    }
    // Trailing commas: `,` followed by whitespace and a closing bracket.
    let trailing = regex::Regex::new(r",(\s*[}\]])").expect("a valid regex");
    trailing.replace_all(&out, "$1").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_trailing_commas_are_read_but_strings_are_left_alone() {
        let text = r#"{
            // a comment
            "permission": { "bash": "ask", /* inline */ },
            "url": "http://x//y", "glob": "/* not a comment */",
        }"#;
        let value = parse(text).expect("jsonc");
        assert_eq!(value["permission"]["bash"], "ask");
        assert_eq!(value["url"], "http://x//y");
        assert_eq!(value["glob"], "/* not a comment */");
    }
}
