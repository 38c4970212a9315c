//! What gatekeep prints about itself: the agent's text on stdout, status and
//! tool activity on stderr.
//!
//! Two shapes, chosen once from where stderr goes:
//!
//! - **live** (stderr is a terminal): one status line, redrawn in place
//!   (indicatif), saying what is happening now — starting OpenCode,
//!   connecting to Discord, running and the current tool, how many requests
//!   wait for approval and the time left. Finished tool calls, details and
//!   errors scroll above it.
//! - **plain** (CI, cron, a pipe): no spinner and no control characters;
//!   one timestamped line per state change, so a log reads top to bottom.
//!
//! `--quiet` keeps only errors and the agent's text (no status line at all);
//! `--verbose` adds details. `NO_COLOR` turns colour off; plain output never
//! has any.
//!
//! The terminal approval channel converses on the same terminal. It prints
//! through [`Console::prompt`] / [`Console::say`]: while a request waits for
//! an answer typed here the status line is taken down, so a redraw can never
//! erase the question or the half-typed answer.
//!
//! Everything that came from the agent passes through
//! [`crate::redact::terminal_safe_bounded`] first: agent text is untrusted and
//! may carry escape sequences meant for the terminal.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};
use tokio::sync::mpsc;

use crate::approval::messages::Notice;
use crate::config::Verbosity;
use crate::redact::{terminal_safe_bounded, Redactor};

/// Longest agent text printed in one piece to the terminal.
const MAX_TEXT: usize = 64 * 1024;
/// Longest tool line.
const MAX_TOOL: usize = 500;
/// How often the live line redraws (spinner, time left).
const TICK: Duration = Duration::from_millis(120);

/// gatekeep's own output. Cheap to clone; every clone shows the same line.
#[derive(Debug, Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    verbosity: Verbosity,
    live: bool,
    color: bool,
    /// When gatekeep started: the live line shows the time since, also
    /// after it was taken down and put back.
    started: Instant,
    /// Only short synchronous sections hold it (never across `.await`); the
    /// status line is redrawn under it so lines from different tasks never
    /// interleave with a redraw.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The live line, while it is up.
    bar: Option<ProgressBar>,
    /// What gatekeep is doing: "starting OpenCode in …", "running", …
    phase: String,
    /// The tool the agent is running right now, if any.
    tool: Option<String>,
    /// Requests waiting for a human, by number, with their deadlines.
    pending: BTreeMap<u32, SystemTime>,
    /// The terminal channel is asking here: the live line stays down.
    conversing: bool,
    /// The run is over; nothing more is drawn.
    finished: bool,
    /// Last plain status line, so a repeated state is not printed twice.
    last_plain: String,
    /// The run's secrets, replaced in everything printed.
    redactor: Redactor,
    /// Ring the terminal bell when a request starts waiting (`--no-bell`
    /// turns it off; never without a terminal).
    bell: bool,
}

impl Console {
    /// Live when stderr is a terminal, plain otherwise.
    #[must_use]
    pub fn new(verbosity: Verbosity) -> Self {
        if std::io::stderr().is_terminal() {
            Self::live(verbosity)
        } else {
            Self::plain(verbosity)
        }
    }

    /// Timestamped lines, no control characters (CI, cron, tests).
    #[must_use]
    pub fn plain(verbosity: Verbosity) -> Self {
        Self::build(verbosity, false, false)
    }

    /// A status line redrawn in place; colour unless `NO_COLOR` is set.
    #[must_use]
    pub fn live(verbosity: Verbosity) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self::build(verbosity, verbosity > Verbosity::Quiet, !no_color)
    }

    fn build(verbosity: Verbosity, live: bool, color: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                verbosity,
                live,
                color,
                started: Instant::now(),
                state: Mutex::new(State::default()),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while printing leaves nothing half-updated that matters.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn shows_status(&self) -> bool {
        self.inner.verbosity > Verbosity::Quiet
    }

    /// Ring the bell when a request starts waiting, if stderr is a terminal.
    pub fn ring_on_requests(&self, bell: bool) {
        self.state().bell = bell && std::io::stderr().is_terminal();
    }

    /// From now on, everything printed goes through `redactor` too: the
    /// run's secrets are known only once OpenCode started, and the agent
    /// (whose text and errors are printed) may have read them.
    pub fn redact_with(&self, redactor: Redactor) {
        self.state().redactor = redactor;
    }

    /// A state change: the live line says it; plain output gets one line.
    /// Hidden with `--quiet`; kept in the scrollback with `--verbose`.
    pub fn status(&self, line: &str) {
        if !self.shows_status() {
            return;
        }
        let mut state = self.state();
        state.phase = clean(&state.redactor.shown(line, MAX_TEXT), MAX_TOOL);
        if self.inner.live {
            if self.inner.verbosity >= Verbosity::Verbose {
                let text = self.prefixed(&state.phase);
                print_above(&state, &text);
            }
            self.redraw(&mut state);
        } else {
            let phase = state.phase.clone();
            Self::plain_status(&mut state, &phase);
        }
    }

    /// Detail for `--verbose`.
    pub fn detail(&self, line: &str) {
        if self.inner.verbosity < Verbosity::Verbose {
            return;
        }
        let state = self.state();
        let text = clean(&state.redactor.shown(line, MAX_TEXT), MAX_TOOL);
        if self.inner.live {
            print_above(&state, &self.prefixed(&text));
        } else {
            plain_line(&format!("gatekeep: {text}"));
        }
    }

    /// Something went wrong; always shown.
    pub fn error(&self, line: &str) {
        let state = self.state();
        let text = clean(&state.redactor.shown(line, MAX_TEXT), MAX_TEXT);
        if self.inner.live || (self.inner.color && std::io::stderr().is_terminal()) {
            let prefix = if self.inner.color {
                "\u{1b}[1;31mgatekeep:\u{1b}[0m"
            } else {
                "gatekeep:"
            };
            print_above(&state, &format!("{prefix} {text}"));
        } else {
            plain_line(&format!("gatekeep: {text}"));
        }
    }

    /// The agent's own words: stdout, sanitized.
    pub fn agent_text(&self, text: &str) {
        let state = self.state();
        let text = state.redactor.shown(text, MAX_TEXT);
        let write = || {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        };
        // stdout may be the same terminal as the live line.
        match &state.bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }

    /// Tool activity reported by OpenCode, sanitized. A line starting with
    /// `→` (or `[agent] →`) is a tool that started: the live line shows it
    /// as the current tool; other lines are results and scroll above.
    pub fn tool(&self, line: &str) {
        if !self.shows_status() {
            return;
        }
        let mut state = self.state();
        let text = clean(&state.redactor.shown(line, MAX_TEXT), MAX_TOOL);
        let started = text.contains('→');
        if self.inner.live {
            if started {
                state.tool = Some(text);
            } else {
                state.tool = None;
                print_above(&state, &format!("  {text}"));
            }
            self.redraw(&mut state);
        } else {
            plain_line(&format!("  {text}"));
        }
    }

    /// Requests waiting for a human and the deadline of each.
    pub fn pending(&self, pending: BTreeMap<u32, SystemTime>) {
        let mut state = self.state();
        let before = state.pending.len();
        state.pending = pending;
        if !self.shows_status() {
            return;
        }
        if self.inner.live {
            self.redraw(&mut state);
        } else if state.pending.len() != before {
            let line = pending_phrase(&state.pending, SystemTime::now())
                .unwrap_or_else(|| "no request waits for approval".to_owned());
            Self::plain_status(&mut state, &line);
        }
    }

    /// Print what the terminal channel shows (a request, a question) and
    /// keep the live line down until [`Console::prompts_done`]: the
    /// question and the answer being typed stay intact.
    pub fn prompt(&self, text: &str) {
        let mut state = self.state();
        state.conversing = true;
        if let Some(bar) = state.bar.take() {
            bar.finish_and_clear();
        }
        eprint!("{text}");
        let _ = std::io::stderr().flush();
    }

    /// Print a line of the terminal channel (outside a question).
    pub fn say(&self, text: &str) {
        let state = self.state();
        print_above(&state, text);
    }

    /// The terminal channel has nothing left to ask: the live line returns.
    pub fn prompts_done(&self) {
        let mut state = self.state();
        state.conversing = false;
        self.redraw(&mut state);
    }

    /// Run `f` with the live line taken down (for anything else that
    /// writes to the terminal).
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        let state = self.state();
        match &state.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// The run is over: take the live line down for good, so the final
    /// summary prints on a clean terminal.
    pub fn finish(&self) {
        let mut state = self.state();
        state.finished = true;
        if let Some(bar) = state.bar.take() {
            bar.finish_and_clear();
        }
    }

    /// Keep the pending count and time left up to date from the approval
    /// task's notices, until the run ends. The other end is held by the
    /// approval task's notifier.
    #[must_use = "abort the task when the run ends"]
    pub fn follow(
        &self,
        mut notices: mpsc::UnboundedReceiver<Notice>,
    ) -> tokio::task::JoinHandle<()> {
        let console = self.clone();
        tokio::spawn(async move {
            let mut pending: BTreeMap<u32, SystemTime> = BTreeMap::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    notice = notices.recv() => match notice {
                        Some(Notice::Show(request)) => {
                            if console.state().bell {
                                // BEL: a terminal left in the background
                                // flags the window, or makes a sound.
                                eprint!("\u{7}");
                            }
                            pending.insert(request.number, request.deadline.wall);
                            console.pending(pending.clone());
                        }
                        Some(Notice::Settled { number, .. }) => {
                            if pending.remove(&number).is_some() {
                                console.pending(pending.clone());
                            }
                        }
                        Some(Notice::Intruded(intrusion)) => {
                            let which = intrusion
                                .number
                                .map_or_else(|| intrusion.request_id.clone(), |n| format!("#{n}"));
                            console.error(&format!(
                                "SECURITY: request {which} was {} by something other than gatekeep; stopping the run",
                                intrusion.echo
                            ));
                        }
                        Some(Notice::Undelivered { number, detail }) => {
                            console.error(&format!("could not answer request #{number}: {detail}"));
                        }
                        Some(Notice::Progress(progress)) => {
                            console.status(&format!("request #{}: {progress}", progress.number));
                        }
                        Some(Notice::Refused { .. } | Notice::Decided { .. } | Notice::Closing(_)) => {}
                        Some(Notice::RunEnded(_)) | None => break,
                    },
                    // The time left counts down on the live line.
                    _ = tick.tick(), if !pending.is_empty() && console.inner.live => {
                        let mut state = console.state();
                        console.redraw(&mut state);
                    }
                }
            }
        })
    }

    fn prefixed(&self, text: &str) -> String {
        if self.inner.color {
            format!("\u{1b}[2mgatekeep:\u{1b}[0m {text}")
        } else {
            format!("gatekeep: {text}")
        }
    }

    /// Bring the live line up to date (or up at all).
    fn redraw(&self, state: &mut State) {
        if !self.inner.live || state.finished || state.conversing {
            return;
        }
        let message = live_message(state, SystemTime::now());
        let bar = state.bar.get_or_insert_with(|| {
            let template = if self.inner.color {
                "{spinner:.cyan} {wide_msg} {elapsed:.dim}"
            } else {
                "{spinner} {wide_msg} {elapsed}"
            };
            let style = ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
                .with_style(style)
                .with_elapsed(self.inner.started.elapsed())
                // Dropped on an early way out: gone, not left half-drawn
                // under the final summary.
                .with_finish(ProgressFinish::AndClear);
            bar.enable_steady_tick(TICK);
            bar
        });
        bar.set_message(message);
    }

    fn plain_status(state: &mut State, line: &str) {
        if state.last_plain != line {
            line.clone_into(&mut state.last_plain);
            plain_line(&format!("gatekeep: {line}"));
        }
    }
}

/// A line above the live line (or just a line when it is down).
fn print_above(state: &State, text: &str) {
    match &state.bar {
        Some(bar) => bar.suspend(|| eprintln!("{text}")),
        None => eprintln!("{text}"),
    }
}

/// One timestamped line (plain output).
fn plain_line(text: &str) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{now} {text}");
}

fn clean(text: &str, max: usize) -> String {
    // One line: a status line with a newline in it breaks the redraw.
    terminal_safe_bounded(text, max).replace(['\n', '\t'], " ")
}

/// The live line's text.
fn live_message(state: &State, now: SystemTime) -> String {
    let mut parts = vec![state.phase.clone()];
    if let Some(tool) = &state.tool {
        parts.push(tool.clone());
    }
    if let Some(pending) = pending_phrase(&state.pending, now) {
        parts.push(pending);
    }
    parts.retain(|p| !p.is_empty());
    parts.join(" · ")
}

/// "waiting for approval: 2 pending, 4m 10s left" (the soonest deadline).
fn pending_phrase(pending: &BTreeMap<u32, SystemTime>, now: SystemTime) -> Option<String> {
    let soonest = pending.values().min()?;
    let left = soonest.duration_since(now).unwrap_or_default();
    Some(format!(
        "waiting for approval: {} pending, {} left",
        pending.len(),
        humantime::format_duration(Duration::from_secs(left.as_secs()))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_line_says_phase_tool_and_what_waits() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut state = State {
            phase: "running".to_owned(),
            tool: Some("→ bash".to_owned()),
            ..State::default()
        };
        assert_eq!(live_message(&state, now), "running · → bash");
        state.pending.insert(1, now + Duration::from_secs(250));
        state.pending.insert(2, now + Duration::from_secs(70));
        assert_eq!(
            live_message(&state, now),
            "running · → bash · waiting for approval: 2 pending, 1m 10s left"
        );
    }

    #[test]
    fn status_text_is_one_line_without_control_characters() {
        assert_eq!(clean("a\u{1b}[2Jb\nc", 100), "ab c");
    }
}
