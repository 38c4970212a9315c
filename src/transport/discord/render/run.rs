//! The run's own messages: the run-start message (and its thread), its
//! final state, and the summary at the end.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::super::RunInfo;
use super::text::{clean, field, field_text, truncate};
use super::{no_mentions, unix, APPROVED, DENIED, PENDING};
use crate::approval::messages::RunReport;
use crate::config::Ping;
use crate::redact::Redactor;

pub(super) fn run_fields(info: &RunInfo, redactor: &Redactor) -> Vec<Value> {
    let mut fields = vec![
        field(
            "Workspace",
            field_text(&clean(redactor, &info.workspace, 1024)),
            true,
        ),
        field("Host", field_text(&clean(redactor, &info.host, 256)), true),
    ];
    if let Some(model) = &info.model {
        fields.push(field(
            "Model",
            field_text(&clean(redactor, model, 256)),
            true,
        ));
    }
    if let Some(version) = &info.opencode_version {
        fields.push(field(
            "OpenCode",
            field_text(&clean(redactor, version, 64)),
            true,
        ));
    }
    if let Some((file, uncommitted)) = &info.policy {
        let mut text = field_text(&clean(redactor, file, 256));
        if *uncommitted {
            text.push_str("\n⚠️ **uncommitted changes: these are not the reviewed rules**");
        }
        fields.push(field("Policy", text, false));
    }
    if !info.caveats.is_empty() {
        let text: Vec<String> = info
            .caveats
            .iter()
            .map(|c| format!("⚠️ {}", field_text(&clean(redactor, c, 300))))
            .collect();
        fields.push(field("Caveats", truncate(&text.join("\n"), 1000).0, false));
    }
    if let Some(ci) = &info.ci {
        // A URL stays clickable: it is not escaped, only cleaned and bounded.
        fields.push(field(
            "CI",
            truncate(&clean(redactor, ci, 1000), 1000).0,
            false,
        ));
    }
    fields
}

pub(super) fn run_title(info: &RunInfo, redactor: &Redactor) -> String {
    truncate(
        &format!("gatekeep run: {}", clean(redactor, &info.title, 1024)),
        250,
    )
    .0
}

/// The run-start message in the configured channel; the run's thread hangs
/// off it.
#[must_use]
pub fn run_start(info: &RunInfo, redactor: &Redactor, started: SystemTime, ping: &Ping) -> Value {
    let mut description = format!(
        "Started <t:{}:R>. Approval requests follow in the thread.",
        unix(started)
    );
    if ping.is_empty() {
        description.push_str("\nNo one will be notified; set --mention.");
    }
    json!({
        "embeds": [{
            "title": run_title(info, redactor),
            "description": description,
            "color": PENDING,
            "fields": run_fields(info, redactor),
        }],
        "allowed_mentions": no_mentions(),
    })
}

/// Thread name from the run title (Discord allows 1–100 characters).
#[must_use]
pub fn thread_name(info: &RunInfo, redactor: &Redactor) -> String {
    let cleaned = clean(redactor, &info.title, 400).replace('\n', " ");
    let name = truncate(cleaned.trim(), 90).0;
    if name.is_empty() {
        "gatekeep run".to_owned()
    } else {
        name
    }
}

pub(super) fn counts(report: &RunReport) -> String {
    format!(
        "{} approved, {} denied · exit code {} · took {}",
        report.approved,
        report.denied,
        report.exit_code,
        humantime::format_duration(Duration::from_secs(report.duration.as_secs()))
    )
}

/// The run-start message once the run is over: outcome, duration, counts.
#[must_use]
pub fn run_start_final(info: &RunInfo, redactor: &Redactor, report: &RunReport) -> Value {
    let colour = if report.exit_code == 0 {
        APPROVED
    } else {
        DENIED
    };
    json!({
        "embeds": [{
            "title": run_title(info, redactor),
            "description": format!("Run {}.\n{}", field_text(&report.outcome), counts(report)),
            "color": colour,
            "fields": run_fields(info, redactor),
        }],
        "allowed_mentions": no_mentions(),
    })
}

/// The last message in the thread.
#[must_use]
pub fn run_summary(report: &RunReport) -> Value {
    json!({
        "content": format!("**Run {}.** {}", field_text(&report.outcome), counts(report)),
        "allowed_mentions": no_mentions(),
    })
}
