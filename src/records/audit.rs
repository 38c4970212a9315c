//! The audit log: `--audit-log <FILE>` and `gatekeep audit verify <FILE>`.
//!
//! One JSON line per decision, per refused decision attempt and per
//! automatic denial, appended as the approval task settles them. Each line
//! carries `prev`, the SHA-256 (hex) of the line before it (64 zeros for the
//! first line of the file), so changing, removing, inserting or reordering
//! lines breaks the chain where it happened. Cutting lines off the *end*
//! leaves a valid shorter chain: keep the hash `verify` prints (or the run
//! summary's) elsewhere if that matters.
//!
//! Several runs may append to the same file one after another (cron with
//! `flock`): a run continues the chain from the file's last line. Two runs
//! writing at the same moment would break it, which `verify` then shows.
//!
//! The writer is a task subscribed to the approval task's notices, exactly
//! like a transport; it never decides anything. Agent text is redacted and
//! shortened before it is written.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::approval::messages::Notice;
use crate::approval::{Actor, Settlement, Shown};
use crate::console::Console;
use crate::records::summary::{rfc3339, shorten};
use crate::redact::Redactor;

/// `prev` of a file's first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest request summary or reason kept in a line.
const MAX_TEXT: usize = 300;

/// How far from the end of an existing log its last line is looked for.
const TAIL_WINDOW: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(
        "cannot open the audit log (--audit-log) {path}: {source}; \
         point --audit-log at a writable file"
    )]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the audit log {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write to the audit log {path}: {source}; decisions are no longer recorded")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not encode an audit line (this is a bug): {0}")]
    Encode(#[from] serde_json::Error),
}

/// The hex SHA-256 of one line (without its newline).
#[must_use]
pub fn line_hash(line: &[u8]) -> String {
    let digest = Sha256::digest(line);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        use std::fmt::Write as _;
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// One line of the log. Field order is the serialization order, so lines
/// read the same everywhere; `prev` comes last.
#[derive(Debug, Serialize)]
struct Line<'a> {
    seq: u64,
    time: String,
    /// Which run wrote the line (its start and process id), so runs that
    /// share a log can be told apart.
    run: &'a str,
    /// `decision`, `automatic_denial`, `external_reply`, `refused`, `run_ended`.
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    number: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    by: Option<Who<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    prev: &'a str,
}

#[derive(Debug, Serialize)]
struct Who<'a> {
    id: &'a str,
    name: &'a str,
    channel: String,
}

impl<'a> Who<'a> {
    fn of(actor: &'a Actor) -> Self {
        Who {
            id: &actor.id,
            name: &actor.name,
            channel: actor.channel.to_string(),
        }
    }
}

impl Line<'_> {
    fn new(event: &'static str) -> Self {
        Line {
            seq: 0,
            time: rfc3339(SystemTime::now()),
            run: "",
            event,
            number: None,
            request_id: None,
            session_id: None,
            kind: None,
            summary: None,
            decision: None,
            by: None,
            reason: None,
            exit_code: None,
            prev: GENESIS,
        }
    }
}

/// Check before a run starts that the log can be opened for appending, so a
/// typo fails the run before anything reaches the agent.
pub fn check_writable(path: &Path) -> Result<(), AuditError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(drop)
        .map_err(|source| AuditError::Open {
            path: path.to_owned(),
            source,
        })
}

/// An open audit log, positioned to continue its chain.
pub struct AuditLog {
    path: PathBuf,
    file: tokio::fs::File,
    prev: String,
    seq: u64,
    /// This run's id in every line: `<start, RFC 3339>/<pid>/<random>`.
    run: String,
}

impl AuditLog {
    /// Open (or create) the log and find where its chain ends.
    pub async fn open(path: &Path) -> Result<Self, AuditError> {
        let path = path.to_owned();
        let tail = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || last_line(&path))
                .await
                .map_err(|e| AuditError::Read {
                    path: PathBuf::new(),
                    source: std::io::Error::other(e),
                })??
        };
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(|source| AuditError::Open {
                path: path.clone(),
                source,
            })?;
        let mut log = AuditLog {
            path,
            file,
            prev: GENESIS.to_owned(),
            seq: 0,
            run: format!(
                "{}/{}/{:08x}",
                rfc3339(SystemTime::now()),
                std::process::id(),
                rand::random::<u32>()
            ),
        };
        if let Some(Tail { line, complete }) = tail {
            if !complete {
                // A line cut off by a crash: end it, so ours start on their
                // own line; `verify` reports the damaged one.
                log.append_raw(b"\n").await?;
            }
            log.prev = line_hash(&line);
            log.seq = serde_json::from_slice::<Value>(&line)
                .ok()
                .and_then(|v| v.get("seq").and_then(Value::as_u64))
                .unwrap_or(0);
        }
        Ok(log)
    }

    async fn append_raw(&mut self, bytes: &[u8]) -> Result<(), AuditError> {
        let write = async {
            self.file.write_all(bytes).await?;
            self.file.flush().await
        };
        write.await.map_err(|source| AuditError::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// Append one line, chained to the previous one.
    async fn append(&mut self, mut line: Line<'_>) -> Result<(), AuditError> {
        self.seq += 1;
        line.seq = self.seq;
        let prev = self.prev.clone();
        line.prev = &prev;
        let run = self.run.clone();
        line.run = &run;
        let mut bytes = serde_json::to_vec(&line)?;
        let hash = line_hash(&bytes);
        bytes.push(b'\n');
        self.append_raw(&bytes).await?;
        self.prev = hash;
        Ok(())
    }

    /// Make sure everything written is on disk.
    async fn sync(&mut self) -> Result<(), AuditError> {
        self.file
            .sync_data()
            .await
            .map_err(|source| AuditError::Write {
                path: self.path.clone(),
                source,
            })
    }
}

/// The last line of a file and whether it ended with a newline; `None` for
/// an empty or missing file.
struct Tail {
    line: Vec<u8>,
    complete: bool,
}

fn last_line(path: &Path) -> Result<Option<Tail>, AuditError> {
    let read_err = |source| AuditError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let len = file.metadata().map_err(read_err)?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL_WINDOW)))
        .map_err(read_err)?;
    let mut buf = Vec::new();
    // Bounded: a device (`/dev/full`, `/dev/zero`) reports length 0 and
    // never ends, which would read until memory ran out.
    file.take(TAIL_WINDOW)
        .read_to_end(&mut buf)
        .map_err(read_err)?;
    let complete = buf.last() == Some(&b'\n');
    let body = if complete {
        &buf[..buf.len() - 1]
    } else {
        &buf[..]
    };
    if body.is_empty() {
        return Ok(None);
    }
    let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    Ok(Some(Tail {
        line: body[start..].to_vec(),
        complete,
    }))
}

/// The writer task: record every settlement and refusal until the run
/// ends, then flush to disk. Spawned by the supervisor next to the
/// transport and awaited before the process exits.
pub async fn record(
    path: PathBuf,
    mut notices: mpsc::UnboundedReceiver<Notice>,
    redactor: Redactor,
    console: Console,
) {
    let mut log = match AuditLog::open(&path).await {
        Ok(log) => log,
        Err(err) => {
            console.error(&err.to_string());
            return;
        }
    };
    let mut shown: HashMap<u32, Shown> = HashMap::new();
    let mut failed = false;
    while let Some(notice) = notices.recv().await {
        let ended = matches!(notice, Notice::RunEnded(_));
        let result = match notice {
            Notice::Show(request) => {
                shown.insert(request.number, request);
                continue;
            }
            Notice::Settled {
                number,
                request_id,
                settlement,
            } => {
                let request = shown.remove(&number);
                log.append(settled_line(
                    number,
                    &request_id,
                    request.as_ref(),
                    &settlement,
                    &redactor,
                ))
                .await
            }
            Notice::Decided {
                request,
                settlement,
            } => {
                log.append(settled_line(
                    request.number,
                    &request.ask.id,
                    Some(&request),
                    &settlement,
                    &redactor,
                ))
                .await
            }
            Notice::Refused { number, actor, why } => {
                let mut line = Line::new("refused");
                line.number = number;
                let request = number.and_then(|n| shown.get(&n));
                line.request_id = request.map(|r| r.ask.id.as_str());
                line.kind = request.map(|r| r.ask.kind());
                line.by = Some(Who::of(&actor));
                line.reason = Some(shorten(&redactor.redact(&why), MAX_TEXT));
                log.append(line).await
            }
            // An intrusion on a request gatekeep knew is the `Settled` line
            // of that request; one it never saw gets a line of its own.
            Notice::Intruded(intrusion) if intrusion.number.is_none() => {
                let mut line = Line::new("intrusion");
                line.request_id = Some(&intrusion.request_id);
                line.reason = Some(format!(
                    "{} by something other than gatekeep: the run was stopped",
                    intrusion.echo
                ));
                log.append(line).await
            }
            // One approver of several: recorded even if the others never come.
            Notice::Progress(progress) => {
                let mut line = Line::new("approval_counted");
                line.number = Some(progress.number);
                let request = shown.get(&progress.number);
                line.request_id = request.map(|r| r.ask.id.as_str());
                line.kind = request.map(|r| r.ask.kind());
                line.by = progress.by.last().map(Who::of);
                line.reason = Some(shorten(&redactor.redact(&progress.to_string()), MAX_TEXT));
                log.append(line).await
            }
            // Not a decision: the teardown's sweep denies it all the same.
            Notice::Intruded(_) | Notice::Undelivered { .. } | Notice::Closing(_) => continue,
            Notice::RunEnded(report) => {
                let mut line = Line::new("run_ended");
                line.reason = Some(shorten(&redactor.redact(&report.outcome), MAX_TEXT));
                line.exit_code = Some(report.exit_code);
                log.append(line).await
            }
        };
        if let Err(err) = result {
            // Report once; the run's safety does not depend on the log.
            if !failed {
                console.error(&err.to_string());
            }
            failed = true;
        }
        if ended {
            break;
        }
    }
    if let Err(err) = log.sync().await {
        if !failed {
            console.error(&err.to_string());
        }
    }
}

fn settled_line<'a>(
    number: u32,
    request_id: &'a str,
    request: Option<&'a Shown>,
    settlement: &'a Settlement,
    redactor: &Redactor,
) -> Line<'a> {
    let event = match settlement {
        Settlement::Approved { .. }
        | Settlement::ApprovedAndTrusted { .. }
        | Settlement::Answered { .. }
        | Settlement::Denied { .. } => "decision",
        Settlement::ApprovedByRule { .. } => "trust_rule_approval",
        Settlement::DeniedByRule { .. } => "deny_rule_denial",
        Settlement::RepliedElsewhere { .. } => "external_reply",
        Settlement::Intruded { .. } => "intrusion",
        Settlement::Expired
        | Settlement::DeniedWithRelated { .. }
        | Settlement::Superseded { .. }
        | Settlement::RunEnded(_)
        | Settlement::ChannelFailed { .. } => "automatic_denial",
    };
    let mut line = Line::new(event);
    line.number = Some(number);
    line.request_id = Some(request_id);
    line.session_id = request.map(|r| r.ask.session_id.as_str());
    line.kind = request.map(|r| r.ask.kind());
    line.summary = request.map(|r| shorten(&redactor.redact(r.ask.summary()), MAX_TEXT));
    line.decision = Some(settlement.name());
    match settlement {
        Settlement::Approved { by, also } => {
            line.by = Some(Who::of(by));
            // Several approvers (a `[[require]]` rule): every one is named.
            if !also.is_empty() {
                line.reason = Some(shorten(&redactor.redact(&settlement.to_string()), MAX_TEXT));
            }
        }
        Settlement::ApprovedAndTrusted { by } => {
            line.by = Some(Who::of(by));
        }
        Settlement::ApprovedByRule { by, .. } | Settlement::Answered { by, .. } => {
            line.by = Some(Who::of(by));
            line.reason = Some(shorten(&redactor.redact(&settlement.to_string()), MAX_TEXT));
        }
        Settlement::Denied { by, reason } => {
            line.by = Some(Who::of(by));
            line.reason = reason
                .as_deref()
                .map(|r| shorten(&redactor.redact(r), MAX_TEXT));
        }
        other => line.reason = Some(shorten(&redactor.redact(&other.to_string()), MAX_TEXT)),
    }
    line
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every line chains to the one before; `last` is the last line's hash.
    Intact { lines: usize, last: String },
    /// The chain breaks at `line` (1-based).
    Broken { line: usize, why: String },
}

/// Check the chain of the log at `path`.
pub fn verify(path: &Path) -> Result<Verdict, AuditError> {
    let bytes = std::fs::read(path).map_err(|source| AuditError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(verify_bytes(&bytes))
}

/// Check the chain of a log's contents.
#[must_use]
pub fn verify_bytes(bytes: &[u8]) -> Verdict {
    let mut prev = GENESIS.to_owned();
    let mut prev_seq: Option<u64> = None;
    let mut count = 0;
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if body.is_empty() {
        return Verdict::Intact {
            lines: 0,
            last: GENESIS.to_owned(),
        };
    }
    if !bytes.ends_with(b"\n") {
        let lines = body.split(|b| *b == b'\n').count();
        return Verdict::Broken {
            line: lines,
            why: "the last line is incomplete (no newline): it was cut off or edited".to_owned(),
        };
    }
    for (index, line) in body.split(|b| *b == b'\n').enumerate() {
        let number = index + 1;
        let broken = |why: String| Verdict::Broken { line: number, why };
        let Ok(value) = serde_json::from_slice::<Value>(line) else {
            return broken("not a JSON object: the line was edited or damaged".to_owned());
        };
        let Some(claimed) = value.get("prev").and_then(Value::as_str) else {
            return broken("no `prev` hash: not an audit line".to_owned());
        };
        if claimed != prev {
            let why = if index == 0 {
                "the first line does not start the chain: lines before it were removed".to_owned()
            } else {
                format!(
                    "`prev` does not match the hash of line {index}: a line before it was \
                     changed, removed or inserted"
                )
            };
            return broken(why);
        }
        let seq = value.get("seq").and_then(Value::as_u64);
        if let (Some(before), Some(now)) = (prev_seq, seq) {
            if now != before + 1 {
                return broken(format!("sequence number {now} follows {before}"));
            }
        }
        prev_seq = seq;
        prev = line_hash(line);
        count = number;
    }
    Verdict::Intact {
        lines: count,
        last: prev,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::approval::messages::RunReport;

    use crate::approval::{Channel, EndReason};
    use crate::config::Verbosity;

    fn request(number: u32, command: &str) -> Shown {
        crate::approval::test_requests::bash(number, command)
    }

    fn bob() -> Actor {
        Actor {
            channel: Channel::Discord,
            id: "7".to_owned(),
            name: "bob".to_owned(),
        }
    }

    async fn write_run(path: &Path, secret: &str) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(record(
            path.to_owned(),
            rx,
            Redactor::new(vec![secret.to_owned()]),
            Console::plain(Verbosity::Quiet),
        ));
        let send = |n: Notice| tx.send(n).expect("writer alive");
        send(Notice::Show(request(1, &format!("echo {secret}"))));
        send(Notice::Settled {
            number: 1,
            request_id: "per_1".to_owned(),
            settlement: Settlement::Approved {
                by: bob(),
                also: vec![],
            },
        });
        send(Notice::Refused {
            number: Some(1),
            actor: bob(),
            why: "not an approver".to_owned(),
        });
        send(Notice::Show(request(2, "rm -rf /")));
        send(Notice::Settled {
            number: 2,
            request_id: "per_2".to_owned(),
            settlement: Settlement::RunEnded(EndReason::Interrupted),
        });
        send(Notice::RunEnded(RunReport {
            outcome: "interrupted".to_owned(),
            exit_code: 130,
            duration: Duration::from_secs(3),
            approved: 1,
            denied: 1,
        }));
        task.await.expect("writer ends after the run");
    }

    #[tokio::test]
    async fn lines_chain_across_runs_and_secrets_are_redacted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        write_run(&path, "s3cr3t-value-xyz").await;
        write_run(&path, "s3cr3t-value-xyz").await;
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains("s3cr3t"), "{text}");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        let events: Vec<&str> = lines
            .iter()
            .map(|l| l["event"].as_str().expect("event"))
            .collect();
        assert_eq!(
            events[..4],
            ["decision", "refused", "automatic_denial", "run_ended"]
        );
        assert_eq!(lines.len(), 8);
        assert_eq!(lines[0]["by"]["name"], "bob");
        assert_eq!(lines[0]["decision"], "approved");
        assert_eq!(lines[2]["decision"], "run_ended");
        assert_eq!(lines[7]["seq"], 8, "the second run continues the sequence");
        assert_eq!(lines[0]["run"], lines[3]["run"]);
        assert_ne!(lines[0]["run"], lines[4]["run"], "each run names itself");
        assert_eq!(
            verify(&path).expect("readable"),
            Verdict::Intact {
                lines: 8,
                last: line_hash(text.lines().last().expect("a line").as_bytes())
            }
        );
    }

    fn sample() -> String {
        let mut out = String::new();
        let mut prev = GENESIS.to_owned();
        for seq in 1..=4 {
            let line = format!(r#"{{"seq":{seq},"event":"decision","prev":"{prev}"}}"#);
            prev = line_hash(line.as_bytes());
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    fn broken_at(text: &str) -> usize {
        match verify_bytes(text.as_bytes()) {
            Verdict::Broken { line, .. } => line,
            Verdict::Intact { .. } => panic!("tampering not detected:\n{text}"),
        }
    }

    #[test]
    fn edits_deletions_and_insertions_are_found_where_they_happen() {
        let good = sample();
        assert!(matches!(
            verify_bytes(good.as_bytes()),
            Verdict::Intact { lines: 4, .. }
        ));
        let lines: Vec<&str> = good.lines().collect();
        let join = |ls: &[&str]| ls.iter().fold(String::new(), |acc, l| acc + l + "\n");

        let edited = good.replacen(
            r#""seq":2,"event":"decision""#,
            r#""seq":2,"event":"decisioN""#,
            1,
        );
        assert_eq!(broken_at(&edited), 3, "an edit shows at the next line");
        assert_eq!(broken_at(&join(&[lines[0], lines[2], lines[3]])), 2);
        assert_eq!(broken_at(&join(&[lines[1], lines[2], lines[3]])), 1);
        assert_eq!(
            broken_at(&join(&[lines[0], lines[1], lines[1], lines[2]])),
            3
        );
        assert_eq!(broken_at(&good[..good.len() - 1]), 4, "a cut-off last line");
        assert_eq!(broken_at(&format!("{good}not json\n")), 5);
    }
}
