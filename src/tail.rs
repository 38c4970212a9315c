//! The `opencode run …` words after `--`, read as a description of the run.
//!
//! gatekeep never executes `opencode run` (it auto-rejects every permission
//! in about 20 ms; docs/design.md): it performs the run itself against
//! `opencode serve`. So the tail is parsed here, strictly: flags that would
//! bypass approvals or change how the run is driven are refused with an
//! explanation, unknown flags are refused by name, and nothing is started
//! when anything is off.

use std::path::PathBuf;

/// What the user asked `opencode run` to do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunSpec {
    /// The OpenCode executable (first word of the tail), as given.
    pub opencode: PathBuf,
    pub model: Option<Model>,
    pub agent: Option<String>,
    pub files: Vec<PathBuf>,
    pub title: Option<String>,
    pub variant: Option<String>,
    /// `-c/--continue`: continue the most recent root session.
    pub continue_last: bool,
    /// `-s/--session`: continue this session.
    pub session: Option<String>,
    /// `--fork`: fork the continued session instead of adding to it.
    pub fork: bool,
    /// `--command`: run this slash command, with the message as arguments.
    pub command: Option<String>,
    /// `--dir`: the workspace, when given in the tail.
    pub dir: Option<PathBuf>,
    /// The message words joined by spaces (may be empty with `--command` or
    /// when stdin supplies it).
    pub message: String,
}

/// `provider/model`, split at the first slash as OpenCode does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub provider: String,
    pub model: String,
}

impl std::fmt::Display for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TailError {
    #[error(
        "missing the OpenCode command after `--`: expected `-- opencode run [FLAGS] <MESSAGE>`"
    )]
    Empty,
    #[error("expected `{opencode} run …` after `--`, found `{found}`: gatekeep only supervises `opencode run`")]
    NotRun { opencode: String, found: String },
    #[error("`{flag}` would let the agent act without approval, which is what gatekeep exists to prevent; remove it")]
    Bypass { flag: String },
    #[error("`{flag}` is not supported under gatekeep: {instead}")]
    Unsupported { flag: String, instead: &'static str },
    #[error("unknown `opencode run` flag `{flag}`; supported: -m/--model, --agent, -f/--file, --title, --variant, -c/--continue, -s/--session, --fork, --command, --dir")]
    Unknown { flag: String },
    #[error("`{flag}` needs a value")]
    MissingValue { flag: String },
    #[error("`{flag}` takes no value, got `{value}`")]
    UnexpectedValue { flag: String, value: String },
    #[error(
        "invalid model `{value}`: expected `provider/model`, e.g. `anthropic/claude-sonnet-4`"
    )]
    BadModel { value: String },
    #[error("`--fork` needs `--continue` or `--session`")]
    ForkWithoutSession,
    #[error("`--continue` and `--session` cannot be used together")]
    ContinueAndSession,
}

/// Flags that hand the agent a blanket yes.
const BYPASS: &[&str] = &["--auto", "--yolo", "--dangerously-skip-permissions"];

/// Flags that change how the run is driven, and what to use instead.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "--attach",
        "gatekeep starts and owns its own OpenCode server so that only it can answer permissions; drop `--attach`",
    ),
    (
        "--port",
        "gatekeep picks a free loopback port for the server it starts; drop `--port`",
    ),
    (
        "--format",
        "gatekeep prints the agent's text to stdout and status to stderr; use `--summary-json` for machine-readable output",
    ),
    (
        "-i",
        "an interactive session cannot be supervised; give the message on the command line or on stdin",
    ),
    (
        "--interactive",
        "an interactive session cannot be supervised; give the message on the command line or on stdin",
    ),
];

/// Parse the words after `--`.
pub fn parse(words: &[String]) -> Result<RunSpec, TailError> {
    let (opencode, rest) = words.split_first().ok_or(TailError::Empty)?;
    let mut spec = RunSpec {
        opencode: PathBuf::from(opencode),
        ..RunSpec::default()
    };
    match rest.first() {
        Some(word) if word == "run" => {}
        other => {
            return Err(TailError::NotRun {
                opencode: opencode.clone(),
                found: other.cloned().unwrap_or_default(),
            })
        }
    }

    let mut message = Vec::new();
    let mut words = rest[1..].iter();
    let mut only_message = false;
    while let Some(word) = words.next() {
        if only_message || !word.starts_with('-') || word == "-" {
            message.push(word.clone());
            continue;
        }
        if word == "--" {
            only_message = true;
            continue;
        }
        let (flag, inline) = match word.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (word.as_str(), None),
        };
        if BYPASS.contains(&flag) {
            return Err(TailError::Bypass {
                flag: flag.to_owned(),
            });
        }
        if let Some((_, instead)) = UNSUPPORTED.iter().find(|(f, _)| *f == flag) {
            return Err(TailError::Unsupported {
                flag: flag.to_owned(),
                instead,
            });
        }
        let mut value = || -> Result<String, TailError> {
            if let Some(v) = &inline {
                return Ok(v.clone());
            }
            let next = words.next().ok_or_else(|| TailError::MissingValue {
                flag: flag.to_owned(),
            })?;
            // `--title --yolo` is a title to us but yolo mode to OpenCode's
            // own parser: refuse rather than guess.
            let name = next.split_once('=').map_or(next.as_str(), |(f, _)| f);
            if BYPASS.contains(&name) {
                return Err(TailError::Bypass {
                    flag: name.to_owned(),
                });
            }
            Ok(next.clone())
        };
        match flag {
            "-m" | "--model" => spec.model = Some(parse_model(&value()?)?),
            "--agent" => spec.agent = Some(value()?),
            "-f" | "--file" => spec.files.push(PathBuf::from(value()?)),
            "--title" => spec.title = Some(value()?),
            "--variant" => spec.variant = Some(value()?),
            "-s" | "--session" => spec.session = Some(value()?),
            "--command" => spec.command = Some(value()?),
            "--dir" => spec.dir = Some(PathBuf::from(value()?)),
            "-c" | "--continue" | "--fork" => {
                if let Some(v) = inline {
                    return Err(TailError::UnexpectedValue {
                        flag: flag.to_owned(),
                        value: v,
                    });
                }
                if flag == "--fork" {
                    spec.fork = true;
                } else {
                    spec.continue_last = true;
                }
            }
            _ => {
                return Err(TailError::Unknown {
                    flag: flag.to_owned(),
                })
            }
        }
    }
    if spec.continue_last && spec.session.is_some() {
        return Err(TailError::ContinueAndSession);
    }
    if spec.fork && !spec.continue_last && spec.session.is_none() {
        return Err(TailError::ForkWithoutSession);
    }
    spec.message = message.join(" ");
    Ok(spec)
}

fn parse_model(value: &str) -> Result<Model, TailError> {
    match value.split_once('/') {
        Some((provider, model)) if !provider.is_empty() && !model.is_empty() => Ok(Model {
            provider: provider.to_owned(),
            model: model.to_owned(),
        }),
        _ => Err(TailError::BadModel {
            value: value.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn reads_every_supported_flag() {
        let spec = parse(&words(
            "/opt/oc run -m p/m/x --agent plan -f a.rs --file=b.rs --title T --variant high -s ses_1 --fork --command review --dir /w fix the test",
        ))
        .expect("valid");
        assert_eq!(spec.opencode, PathBuf::from("/opt/oc"));
        assert_eq!(
            spec.model,
            Some(Model {
                provider: "p".into(),
                model: "m/x".into()
            })
        );
        assert_eq!(spec.agent.as_deref(), Some("plan"));
        assert_eq!(
            spec.files,
            vec![PathBuf::from("a.rs"), PathBuf::from("b.rs")]
        );
        assert_eq!(spec.title.as_deref(), Some("T"));
        assert_eq!(spec.variant.as_deref(), Some("high"));
        assert_eq!(spec.session.as_deref(), Some("ses_1"));
        assert!(spec.fork);
        assert_eq!(spec.command.as_deref(), Some("review"));
        assert_eq!(spec.dir, Some(PathBuf::from("/w")));
        assert_eq!(spec.message, "fix the test");
    }

    #[test]
    fn message_words_may_surround_flags_and_follow_a_double_dash() {
        let spec = parse(&words("opencode run fix -c it -- --not-a-flag")).expect("valid");
        assert!(spec.continue_last);
        assert_eq!(spec.message, "fix it --not-a-flag");
    }

    #[test]
    fn refuses_flags_that_bypass_approvals() {
        for flag in BYPASS {
            let err = parse(&words(&format!("opencode run {flag} hi"))).expect_err("refused");
            assert_eq!(
                err,
                TailError::Bypass {
                    flag: (*flag).to_owned()
                }
            );
        }
    }

    #[test]
    fn refuses_flags_that_change_how_the_run_is_driven() {
        for (flag, _) in UNSUPPORTED {
            let err = parse(&words(&format!("opencode run {flag} x hi"))).expect_err("refused");
            assert!(matches!(err, TailError::Unsupported { flag: f, .. } if f == *flag));
        }
        let err = parse(&words("opencode run --attach=http://x hi")).expect_err("refused");
        assert!(matches!(err, TailError::Unsupported { flag, .. } if flag == "--attach"));
    }

    #[test]
    fn refuses_unknown_flags_by_name() {
        assert_eq!(
            parse(&words("opencode run --frobnicate hi")),
            Err(TailError::Unknown {
                flag: "--frobnicate".into()
            })
        );
    }

    #[test]
    fn requires_run_as_the_second_word() {
        assert!(matches!(
            parse(&words("opencode serve")),
            Err(TailError::NotRun { .. })
        ));
        assert!(matches!(
            parse(&words("opencode")),
            Err(TailError::NotRun { .. })
        ));
        assert_eq!(parse(&[]), Err(TailError::Empty));
    }

    #[test]
    fn checks_values() {
        assert!(matches!(
            parse(&words("opencode run -m nomodel hi")),
            Err(TailError::BadModel { .. })
        ));
        assert!(matches!(
            parse(&words("opencode run --agent")),
            Err(TailError::MissingValue { .. })
        ));
        assert!(matches!(
            parse(&words("opencode run --fork hi")),
            Err(TailError::ForkWithoutSession)
        ));
        assert!(matches!(
            parse(&words("opencode run -c -s ses hi")),
            Err(TailError::ContinueAndSession)
        ));
        assert!(matches!(
            parse(&words("opencode run --continue=yes hi")),
            Err(TailError::UnexpectedValue { .. })
        ));
    }
}

/// Hostile tails: whatever words follow `--`, parsing never panics, and a
/// flag that would bypass approvals is refused wherever it stands.
#[cfg(test)]
mod prop_tests {
    use proptest::prelude::*;

    use super::*;

    /// Words a tail is made of: every known flag (with and without an
    /// inline value), values, message words and arbitrary text.
    fn word() -> impl Strategy<Value = String> {
        const FLAGS: &[&str] = &[
            "-m",
            "--model",
            "--agent",
            "-f",
            "--file",
            "--title",
            "--variant",
            "-c",
            "--continue",
            "-s",
            "--session",
            "--fork",
            "--command",
            "--dir",
            "--attach",
            "--port",
            "--format",
            "-i",
            "--interactive",
            "--",
            "-",
            "--auto",
            "--yolo",
            "--dangerously-skip-permissions",
        ];
        prop_oneof![
            3 => prop::sample::select(FLAGS).prop_map(str::to_owned),
            1 => (prop::sample::select(FLAGS), ".{0,8}").prop_map(|(f, v)| format!("{f}={v}")),
            2 => "[a-z/]{1,8}",
            1 => ".{0,12}",
        ]
    }

    /// `opencode run` followed by `words`.
    fn tail(words: &[String]) -> Vec<String> {
        let mut all = vec!["opencode".to_owned(), "run".to_owned()];
        all.extend_from_slice(words);
        all
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn any_tail_parses_or_is_refused(words in prop::collection::vec(word(), 0..12)) {
            let _ = parse(&tail(&words));
            let _ = parse(&words);
        }

        /// A bypass flag placed anywhere before a `--` that ends the flags
        /// (also as the would-be value of another flag, and in its
        /// `--flag=value` form) is always refused.
        #[test]
        fn a_bypass_flag_is_always_refused(
            before in prop::collection::vec(word(), 0..8),
            after in prop::collection::vec(word(), 0..8),
            bypass in prop::sample::select(BYPASS),
            inline in prop_oneof![Just(String::new()), "=.{0,6}"],
        ) {
            prop_assume!(!before.iter().any(|w| w == "--"));
            let mut words = before;
            words.push(format!("{bypass}{inline}"));
            words.extend(after);
            let parsed = parse(&tail(&words));
            prop_assert!(parsed.is_err(), "accepted {words:?} as {parsed:?}");
        }

        /// After a `--` every word is message text, bypass flags included
        /// (`explain what --yolo does`): they reach nobody as flags.
        #[test]
        fn words_after_a_double_dash_are_the_message(
            words in prop::collection::vec(word(), 0..8),
        ) {
            let mut all = vec!["--".to_owned()];
            all.extend(words.iter().cloned());
            let spec = parse(&tail(&all)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(spec.message, words.join(" "));
        }
    }

    /// Regression: `--title --yolo` used to read `--yolo` as the title.
    #[test]
    fn a_bypass_flag_in_a_flags_value_position_is_refused() {
        let words: Vec<String> = "opencode run --title --yolo fix it"
            .split(' ')
            .map(str::to_owned)
            .collect();
        assert_eq!(
            parse(&words),
            Err(TailError::Bypass {
                flag: "--yolo".into()
            })
        );
    }
}
