//! Secret redaction and neutralising of untrusted agent text.
//!
//! Everything a transport shows comes from the agent (commands, diffs, its
//! own descriptions), and the agent may have read secrets from the workspace
//! or the environment. Every channel runs text through [`Redactor::redact`]
//! before it leaves the process, and the terminal additionally through
//! [`terminal_safe`] so agent text cannot drive the terminal (escape
//! sequences, bidi overrides) or flood it.
//!
//! Redaction is best effort for *foreign* secrets (common token formats) and
//! exact for gatekeep's *own* secrets (bot token, OpenCode password), whose
//! values are known.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};

use regex::{Regex, RegexBuilder};

/// What every secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Secrets shorter than this are not redacted by value: redacting a
/// two-letter "secret" would shred all text while protecting nothing.
const MIN_SECRET_LEN: usize = 6;

/// Well-known token formats, each replaced whole.
static TOKEN_FORMATS: LazyLock<Regex> = LazyLock::new(|| {
    let patterns = [
        // Private key blocks, also when the end marker was cut off.
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----|[\s\S]*)",
        // JWTs (header and payload are base64url JSON objects).
        r"(?-u:\b)eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
        // Discord bot tokens: base64 user id, timestamp, HMAC.
        r"(?-u:\b)[A-Za-z0-9_-]{23,28}\.[A-Za-z0-9_-]{6,7}\.[A-Za-z0-9_-]{27,40}(?-u:\b)",
        // GitHub personal, OAuth, app and refresh tokens; fine-grained PATs.
        r"(?-u:\b)(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,255}(?-u:\b)",
        r"(?-u:\b)github_pat_[A-Za-z0-9_]{22,255}(?-u:\b)",
        // Slack tokens.
        r"(?-u:\b)xox[abposer]-[A-Za-z0-9-]{10,}",
        // AWS access key ids.
        r"(?-u:\b)(?:AKIA|ASIA|AGPA|AIDA|AROA)[A-Z0-9]{16}(?-u:\b)",
        // OpenAI (sk-, sk-proj-) and Anthropic (sk-ant-) keys.
        r"(?-u:\b)sk-[A-Za-z0-9_-]{20,}",
    ];
    Regex::new(&patterns.join("|")).expect("the token patterns are valid regexes")
});

/// HTTP bearer credentials; the scheme word is kept.
static BEARER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?-u:\b)(bearer)\s+[A-Za-z0-9._~+/-]{8,}=*")
        .expect("the bearer pattern is a valid regex")
});

/// `KEY=value`-style assignments whose key names a secret. The key is kept
/// (it tells the reader what was there), the value is replaced.
static ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)(?-u:\b)([A-Z0-9_.-]*(?:PASSWORD|PASSWD|TOKEN|SECRET|API[_-]?KEY|ACCESS[_-]?KEY|PRIVATE[_-]?KEY|CREDENTIALS?)[A-Z0-9_]*)(\s*[=:]\s*)("[^"\n]*"|'[^'\n]*'|[^\s"'&;,]+)"#,
    )
    .expect("the assignment pattern is a valid regex")
});

/// Replaces secrets in text with [`REDACTED`]. Cheap to clone (the compiled
/// patterns are shared).
#[derive(Debug, Clone)]
pub struct Redactor {
    /// The exact secrets, kept so more can be added ([`Redactor::with_secrets`]).
    secrets: Arc<[String]>,
    /// Exact values of gatekeep's own secrets, longest first, as one regex;
    /// `None` when there are none worth redacting.
    exact: Option<Arc<Regex>>,
}

impl Redactor {
    /// `extra_secrets` are exact values to redact wherever they appear (the
    /// bot token, the OpenCode password, …).
    #[must_use]
    pub fn new(extra_secrets: Vec<String>) -> Self {
        let mut secrets: Vec<String> = extra_secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect();
        // Longest first so a secret that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        let exact = if secrets.is_empty() {
            None
        } else {
            let alternation = secrets
                .iter()
                .map(|s| regex::escape(s))
                .collect::<Vec<_>>()
                .join("|");
            let regex = RegexBuilder::new(&alternation)
                .size_limit(64 << 20)
                .build()
                .expect("escaped literals always form a valid regex");
            Some(Arc::new(regex))
        };
        Self {
            secrets: secrets.into(),
            exact,
        }
    }

    /// This redactor plus more exact secrets (e.g. the Discord transport
    /// adds its bot token, whatever the caller configured).
    #[must_use]
    pub fn with_secrets(&self, more: impl IntoIterator<Item = String>) -> Self {
        let mut all: Vec<String> = self.secrets.to_vec();
        all.extend(more);
        Self::new(all)
    }

    /// `text` as it may be shown anywhere: stripped of escape sequences and
    /// invisible characters *first* (a secret split by a zero-width space
    /// or `ESC[0m` would slip past redaction and come back together when
    /// they were stripped afterwards), then redacted, then bounded to
    /// `max_bytes` (see [`terminal_safe_bounded`]).
    #[must_use]
    pub fn shown(&self, text: &str, max_bytes: usize) -> String {
        let stripped = terminal_safe_bounded(text, usize::MAX);
        terminal_safe_bounded(&self.redact(&stripped), max_bytes)
    }

    /// This redactor's exact secrets and `other`'s together.
    #[must_use]
    pub fn merged(&self, other: &Redactor) -> Self {
        self.with_secrets(other.secrets.iter().cloned())
    }

    /// `text` with every secret replaced; borrowed when nothing was found.
    #[must_use]
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        if let Some(exact) = &self.exact {
            if let Cow::Owned(s) = exact.replace_all(&out, REDACTED) {
                out = Cow::Owned(s);
            }
        }
        if let Cow::Owned(s) = TOKEN_FORMATS.replace_all(&out, REDACTED) {
            out = Cow::Owned(s);
        }
        if let Cow::Owned(s) = BEARER.replace_all(&out, "$1 [redacted]") {
            out = Cow::Owned(s);
        }
        let replaced = ASSIGNMENT.replace_all(&out, |caps: &regex::Captures<'_>| {
            if &caps[3] == REDACTED {
                caps[0].to_owned()
            } else {
                format!("{}{}{REDACTED}", &caps[1], &caps[2])
            }
        });
        if let Cow::Owned(s) = replaced {
            out = Cow::Owned(s);
        }
        out
    }
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

/// Default bound for [`terminal_safe`]: enough for any real command or
/// description, small enough that a runaway diff cannot flood the terminal.
pub const TERMINAL_MAX_BYTES: usize = 16 * 1024;

/// ANSI/VT escape sequences: CSI, OSC (ended by BEL or ST), and the short
/// two-byte forms.
static ANSI: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[P^_][^\x1b]*(?:\x1b\\)?|\x1b[ -/]+[0-~]?|\x1b[@-~]?|\x9b[0-?]*[ -/]*[@-~]")
        .expect("the ANSI pattern is a valid regex")
});

/// Characters that change how surrounding text is displayed without being
/// visible themselves: zero-width characters and bidi controls (the
/// "Trojan Source" trick).
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{200b}'..='\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}'
        | '\u{061c}'
        | '\u{feff}'
    )
}

/// `text` made safe to print on a terminal, bounded to
/// [`TERMINAL_MAX_BYTES`]. See [`terminal_safe_bounded`].
#[must_use]
pub fn terminal_safe(text: &str) -> String {
    terminal_safe_bounded(text, TERMINAL_MAX_BYTES)
}

/// `text` without escape sequences, control characters (except newline and
/// tab), zero-width and bidi characters, cut to at most `max_bytes` (on a
/// character boundary) followed by an explicit "… (N more bytes)" marker.
#[must_use]
pub fn terminal_safe_bounded(text: &str, max_bytes: usize) -> String {
    let stripped = ANSI.replace_all(text, "");
    let mut out = String::with_capacity(stripped.len().min(max_bytes) + 32);
    let mut rest = 0usize;
    for c in stripped.chars() {
        let keep = c == '\n' || c == '\t' || !(c.is_control() || is_invisible(c));
        if !keep {
            continue;
        }
        if rest > 0 || out.len() + c.len_utf8() > max_bytes {
            rest += c.len_utf8();
        } else {
            out.push(c);
        }
    }
    if rest > 0 {
        let _ = write!(out, "… ({rest} more bytes)");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn r(text: &str) -> String {
        Redactor::default().redact(text).into_owned()
    }

    #[test]
    fn clean_text_is_borrowed_and_unchanged() {
        let red = Redactor::new(vec!["hunter2-secret".into()]);
        let text = "cargo test --workspace && echo done";
        assert!(matches!(red.redact(text), Cow::Borrowed(_)));
    }

    #[test]
    fn discord_bot_token() {
        let t = "MTA4NzY1NDMyMTA5ODc2NTQzMg.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789AB";
        assert_eq!(
            r(&format!("curl -H 'Authorization: Bot {t}'")),
            "curl -H 'Authorization: Bot [redacted]'"
        );
    }

    #[test]
    fn github_tokens() {
        let classic = format!("ghp_{}", "a1B2".repeat(9));
        let oauth = format!("gho_{}", "Z9y8".repeat(9));
        let fine = format!("github_pat_11ABCDEFG0_{}", "x".repeat(59));
        let out = r(&format!(
            "git clone https://{classic}@github.com/o/r {oauth} {fine}"
        ));
        assert_eq!(
            out,
            "git clone https://[redacted]@github.com/o/r [redacted] [redacted]"
        );
    }

    #[test]
    fn slack_token() {
        assert_eq!(r("xoxb-1234567890-0987654321-AbCdEfGh"), "[redacted]");
    }

    #[test]
    fn aws_access_key_id() {
        assert_eq!(
            r("aws configure set key AKIAIOSFODNN7EXAMPLE now"),
            "aws configure set key [redacted] now"
        );
    }

    #[test]
    fn openai_and_anthropic_keys() {
        let out = r("sk-proj-abcdefghijklmnopqrstuvwx sk-ant-api03-abcdefghijklmnopqrstuvwxyz-AA");
        assert_eq!(out, "[redacted] [redacted]");
    }

    #[test]
    fn private_key_block_whole_and_cut_off() {
        let block = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----";
        assert_eq!(
            r(&format!("cat > id <<EOF\n{block}\nEOF")),
            "cat > id <<EOF\n[redacted]\nEOF"
        );
        assert_eq!(
            r("x -----BEGIN RSA PRIVATE KEY-----\nMIIEow"),
            "x [redacted]"
        );
    }

    #[test]
    fn jwt() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(r(&format!("token {jwt} end")), "token [redacted] end");
    }

    #[test]
    fn assignments_keep_the_key() {
        assert_eq!(
            r("PASSWORD=hunter2 make deploy"),
            "PASSWORD=[redacted] make deploy"
        );
        assert_eq!(r("export GH_TOKEN='abc def'"), "export GH_TOKEN=[redacted]");
        assert_eq!(r("DB_SECRET: \"s3cr3t\""), "DB_SECRET: [redacted]");
        assert_eq!(r("OPENAI_API_KEY=xyz123"), "OPENAI_API_KEY=[redacted]");
        assert_eq!(
            r("curl 'https://x/?api_key=abc&q=1'"),
            "curl 'https://x/?api_key=[redacted]&q=1'"
        );
    }

    #[test]
    fn bearer_header() {
        assert_eq!(
            r("-H 'Authorization: Bearer abcdefgh12345'"),
            "-H 'Authorization: Bearer [redacted]'"
        );
    }

    #[test]
    fn own_secrets_by_exact_value() {
        let red = Redactor::new(vec![
            "opencode-pw-Q7x".into(),
            "tiny".into(),
            "opencode-pw-Q7x-longer".into(),
        ]);
        assert_eq!(
            red.redact("a opencode-pw-Q7x-longer b opencode-pw-Q7x c tiny"),
            "a [redacted] b [redacted] c tiny"
        );
        let more = red.with_secrets(vec!["another-secret".into()]);
        assert_eq!(
            more.redact("opencode-pw-Q7x another-secret"),
            "[redacted] [redacted]"
        );
        // Regex metacharacters in a secret are literals.
        let red = Redactor::new(vec!["a.b*c(d)e".into()]);
        assert_eq!(red.redact("x a.b*c(d)e y aXbbc"), "x [redacted] y aXbbc");
    }

    #[test]
    fn one_megabyte_is_fast() {
        let red = Redactor::new(vec!["some-known-secret-value".into()]);
        let mut text =
            "ordinary words with = signs and eyJ partial tokens sk- short\n".repeat(20 * 1024);
        text.push_str("PASSWORD=tail");
        assert!(text.len() > 1_000_000);
        let start = Instant::now();
        let out = red.redact(&text);
        let safe = terminal_safe_bounded(&text, usize::MAX);
        let took = start.elapsed();
        assert!(out.ends_with("PASSWORD=[redacted]"));
        assert_eq!(safe.len(), text.len());
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }

    #[test]
    fn terminal_safe_strips_escapes_and_controls() {
        let text =
            "\x1b[31mred\x1b[0m \x1b]0;title\x07ok\r\x08\x00 tab\tnl\n\u{202e}evil\u{200b}!\x1bc";
        assert_eq!(terminal_safe(text), "red ok tab\tnl\nevil!");
    }

    #[test]
    fn terminal_safe_bounds_with_marker() {
        let out = terminal_safe_bounded("héllo world", 6);
        assert_eq!(out, "héllo… (6 more bytes)");
        assert_eq!(terminal_safe_bounded("short", 6), "short");
    }
}

/// A secret the run knows never survives into shown text, however the
/// agent disguises it (split by zero-width or bidi characters or escape
/// sequences, surrounded by anything), and nothing shown can drive a
/// terminal.
#[cfg(test)]
mod prop_tests {
    use proptest::prelude::*;

    use super::*;

    /// What an agent may slip between the characters of a secret.
    const SPLITTERS: &[&str] = &[
        "\u{200b}",
        "\u{200d}",
        "\u{202e}",
        "\u{2066}",
        "\u{feff}",
        "\u{1b}[0m",
        "\u{1b}[31m",
        "\u{1b}]0;x\u{7}",
        "\u{7}",
        "\u{0}",
    ];

    fn disguised(secret: &str, splits: &[(usize, usize)]) -> String {
        let mut out = String::new();
        for (i, c) in secret.chars().enumerate() {
            for (at, which) in splits {
                if *at % secret.len() == i {
                    out.push_str(SPLITTERS[which % SPLITTERS.len()]);
                }
            }
            out.push(c);
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn a_known_secret_is_never_shown(
            secret in "[A-Za-z0-9_-]{6,40}",
            before in ".{0,40}",
            after in ".{0,40}",
            splits in prop::collection::vec((any::<usize>(), any::<usize>()), 0..6),
            max in 16usize..4096,
        ) {
            let redactor = Redactor::new(vec![secret.clone()]);
            let text = format!("{before}{}{after} {secret}", disguised(&secret, &splits));
            let shown = redactor.shown(&text, max);
            prop_assert!(!shown.contains(&secret), "{text:?} -> {shown:?}");
            let escapes = shown.contains('\u{1b}') || shown.contains('\u{202e}');
            prop_assert!(!escapes, "{shown:?}");
        }
    }
}
