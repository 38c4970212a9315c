//! Clicks: every `INTERACTION_CREATE` of the gateway goes through here. A
//! click without this run's nonce is another run's: neither acknowledged
//! nor answered. Ours is acknowledged first (Discord's 3 s), then
//! authorized from the payload, then decided through the [`Decider`]; the
//! clicker is told the outcome privately.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use reqwest::Method;
use serenity::all::{ActionRowComponent, ComponentInteractionDataKind, Interaction};
use tokio::sync::mpsc;

use super::clicks::{self, Action, Approvers, Clicker, Nonce, Refusal};
use super::outbox::Groups;
use super::render;
use super::rest::{Body, Rest, RestError, Retry};
use crate::approval::messages::{DecideOutcome, Decider};
use crate::approval::{Actor, Channel, Settlement, Shown, Verdict};
use crate::console::Console;
use crate::redact::Redactor;

/// What the click handlers share. `settled` is written by `serve` (on
/// `Notice::Settled`) and read by handlers; the lock is only held for a
/// lookup or insert, never across an await.
pub(super) struct ClickContext {
    pub(super) rest: Arc<Rest>,
    pub(super) nonce: Nonce,
    pub(super) thread_id: u64,
    pub(super) approvers: Approvers,
    pub(super) application_id: u64,
    pub(super) decider: Decider,
    pub(super) settled: Mutex<HashMap<u32, Settlement>>,
    /// Group messages: group id → request numbers (written by the outbox).
    pub(super) groups: Groups,
    /// Open questions, by number: where an answer's labels come from
    /// (never from the click payload).
    pub(super) questions: Mutex<HashMap<u32, Shown>>,
    /// For the answer modal, which repeats agent text.
    pub(super) redactor: Redactor,
    /// Where failures to answer a click are reported.
    pub(super) console: Console,
}

impl ClickContext {
    pub(super) fn mark_settled(&self, number: u32, settlement: &Settlement) {
        if let Ok(mut map) = self.settled.lock() {
            map.insert(number, settlement.clone());
        }
    }

    fn group_members(&self, group: u32) -> Vec<u32> {
        self.groups
            .lock()
            .ok()
            .and_then(|map| map.get(&group).cloned())
            .unwrap_or_default()
    }

    pub(super) fn remember_question(&self, request: &Shown) {
        if let Ok(mut map) = self.questions.lock() {
            map.insert(request.number, request.clone());
        }
    }

    pub(super) fn forget_question(&self, number: u32) {
        if let Ok(mut map) = self.questions.lock() {
            map.remove(&number);
        }
    }

    fn question(&self, number: u32) -> Option<Shown> {
        self.questions
            .lock()
            .ok()
            .and_then(|map| map.get(&number).cloned())
    }

    fn settlement_of(&self, number: u32) -> Option<Settlement> {
        self.settled
            .lock()
            .ok()
            .and_then(|map| map.get(&number).cloned())
    }
}

/// One of this run's clicks (or modal submissions), taken from the payload.
#[derive(Debug)]
struct Click {
    interaction_id: u64,
    token: String,
    number: u32,
    action: Action,
    clicker: Clicker,
    actor: Actor,
    reason: Option<String>,
    /// The values chosen in a select menu: request numbers in a group
    /// message, option indexes in a question.
    selected: Vec<u32>,
    /// A submitted modal's `(input id, value)` pairs.
    texts: Vec<(String, String)>,
}

/// Receives every interaction the bot gets, drops those of other runs
/// without answering, and handles each of ours in its own task so a slow
/// decision never delays another click's acknowledgement.
pub(super) async fn dispatch_clicks(
    ctx: Arc<ClickContext>,
    mut interactions: mpsc::UnboundedReceiver<Interaction>,
) {
    while let Some(interaction) = interactions.recv().await {
        if let Some(click) = parse_click(&ctx.nonce, &interaction) {
            tokio::spawn(handle_click(Arc::clone(&ctx), click));
        }
    }
}

fn parse_click(nonce: &Nonce, interaction: &Interaction) -> Option<Click> {
    let mut selected = Vec::new();
    let mut texts = Vec::new();
    let (id, token, custom_id, member, user, channel_id, reason) = match interaction {
        Interaction::Component(c) => {
            if let ComponentInteractionDataKind::StringSelect { values } = &c.data.kind {
                selected = values.iter().filter_map(|v| v.parse().ok()).collect();
            }
            (
                c.id,
                &c.token,
                &c.data.custom_id,
                c.member.as_ref(),
                &c.user,
                c.channel_id,
                None,
            )
        }
        Interaction::Modal(m) => {
            texts = m
                .data
                .components
                .iter()
                .flat_map(|row| row.components.iter())
                .filter_map(|c| match c {
                    ActionRowComponent::InputText(t) => {
                        Some((t.custom_id.clone(), t.value.clone()?))
                    }
                    _ => None,
                })
                .collect::<Vec<_>>();
            let reason = texts
                .iter()
                .find(|(id, _)| id == "reason")
                .map(|(_, v)| v.clone());
            (
                m.id,
                &m.token,
                &m.data.custom_id,
                m.member.as_ref(),
                &m.user,
                m.channel_id,
                reason,
            )
        }
        _ => return None,
    };
    let (number, action) = clicks::decode(nonce, custom_id)?;
    let is_modal = matches!(interaction, Interaction::Modal(_));
    if is_modal != action.is_modal_submission() {
        return None;
    }
    let name = member
        .and_then(|m| m.nick.clone())
        .or_else(|| user.global_name.clone())
        .unwrap_or_else(|| user.name.clone());
    Some(Click {
        interaction_id: id.get(),
        token: token.clone(),
        number,
        action,
        clicker: Clicker {
            user_id: user.id.get(),
            roles: member.map(|m| m.roles.iter().map(|r| r.get()).collect()),
            permissions: member.and_then(|m| m.permissions).map(|p| p.bits()),
            channel_id: channel_id.get(),
        },
        actor: Actor {
            channel: Channel::Discord,
            id: user.id.get().to_string(),
            name,
        },
        reason,
        selected,
        texts,
    })
}

/// Acknowledges first (Discord's 3 s), then acts. Authorization needs only
/// the payload, so the acknowledgement already carries the answer for
/// refused and settled clicks.
async fn handle_click(ctx: Arc<ClickContext>, click: Click) {
    let callback = format!(
        "/interactions/{}/{}/callback",
        click.interaction_id, click.token
    );
    // Interaction callbacks are not limited per bot: one bucket each, so a
    // 429 on one click never delays another's acknowledgement.
    let bucket = format!("interaction:{}", click.interaction_id);
    let ack = |payload: serde_json::Value| {
        let ctx = Arc::clone(&ctx);
        let callback = callback.clone();
        let bucket = bucket.clone();
        async move {
            ctx.rest
                .send(
                    "acknowledge a click",
                    &bucket,
                    Method::POST,
                    &callback,
                    Body::Json(&payload),
                    Retry::ACK,
                )
                .await
        }
    };
    if let Err(refusal) = clicks::authorize(&ctx.approvers, ctx.thread_id, &click.clicker) {
        let text = match refusal {
            Refusal::WrongChannel => "Not authorized: this button is not in this run's thread.",
            Refusal::NotApprover => "Not authorized: you are not an approver for this run.",
        };
        report_ack(&ctx.console, ack(render::ephemeral(text)).await);
        refused(&ctx, &click, text).await;
        return;
    }
    if click.action.is_for_question() {
        answer_question(&ctx, &click, ack).await;
        return;
    }
    let single = match click.action {
        Action::ApproveSelected | Action::ApproveAll => Some((Verdict::Approve, true)),
        Action::DenySelected | Action::DenyAll => Some((Verdict::Deny { reason: None }, true)),
        Action::Approve => Some((Verdict::Approve, false)),
        Action::ApproveAndTrust => Some((Verdict::ApproveAndTrust, false)),
        Action::Deny => Some((Verdict::Deny { reason: None }, false)),
        Action::ReasonSubmitted => Some((
            Verdict::Deny {
                reason: click
                    .reason
                    .clone()
                    .map(|r| r.trim().to_owned())
                    .filter(|r| !r.is_empty()),
            },
            false,
        )),
        Action::DenyWithReason
        | Action::Pick(_)
        | Action::PickSelected
        | Action::AnswerInWords
        | Action::AnswerSubmitted
        | Action::Dismiss => None,
    };
    let Some((verdict, is_group)) = single else {
        // "Deny with reason…": the modal is the acknowledgement.
        let answer = match ctx.settlement_of(click.number) {
            Some(settlement) => render::ephemeral(&already_decided(&settlement)),
            None => render::reason_modal(&ctx.nonce, click.number),
        };
        report_ack(&ctx.console, ack(answer).await);
        return;
    };
    if is_group {
        if !proven(&ctx.console, ack(render::deferred_ephemeral()).await) {
            return;
        }
        let text = decide_group(&ctx, &click, verdict).await;
        followup(&ctx, &click, &text).await;
        return;
    }
    if let Some(settlement) = ctx.settlement_of(click.number) {
        report_ack(
            &ctx.console,
            ack(render::ephemeral(&already_decided(&settlement))).await,
        );
        return;
    }
    // A failed acknowledgement does not void the human's decision (the
    // approval message shows the outcome either way), unless Discord says
    // it never issued this click.
    if !proven(&ctx.console, ack(render::deferred_ephemeral()).await) {
        return;
    }
    let outcome = ctx
        .decider
        .decide(click.number, verdict, click.actor.clone())
        .await;
    if let DecideOutcome::Accepted(settlement) = &outcome {
        ctx.mark_settled(click.number, settlement);
    }
    followup(&ctx, &click, &outcome_text(&outcome)).await;
}

/// A click on a question (an option, the select menu, the answer modal,
/// Dismiss), already authorized. The answer's labels come from the pending
/// request; one that does not fit is refused privately and consumes
/// nothing.
async fn answer_question<F, Fut>(ctx: &ClickContext, click: &Click, ack: F)
where
    F: Fn(serde_json::Value) -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value, RestError>>,
{
    if let Some(settlement) = ctx.settlement_of(click.number) {
        report_ack(
            &ctx.console,
            ack(render::ephemeral(&already_decided(&settlement))).await,
        );
        return;
    }
    let Some(request) = ctx.question(click.number) else {
        // Not an open question of this run: a permission request (whose
        // decision a question's answer can never be), or unknown.
        report_ack(
            &ctx.console,
            ack(render::ephemeral(&outcome_text(&DecideOutcome::WrongKind))).await,
        );
        return;
    };
    let verdict = match click.action {
        Action::AnswerInWords => {
            // The modal is the acknowledgement.
            report_ack(
                &ctx.console,
                ack(render::answer_modal(&request, &ctx.redactor, &ctx.nonce)).await,
            );
            return;
        }
        Action::Dismiss => Verdict::Deny { reason: None },
        action => {
            let Some(answers) = clicks::answer_of(&request, action, &click.selected, &click.texts)
            else {
                let text = "That answer does not fit the question: nothing was sent. Choose one of its options, or type an answer it accepts.";
                report_ack(&ctx.console, ack(render::ephemeral(text)).await);
                return;
            };
            Verdict::Answer { answers }
        }
    };
    if !proven(&ctx.console, ack(render::deferred_ephemeral()).await) {
        return;
    }
    let outcome = ctx
        .decider
        .decide(click.number, verdict, click.actor.clone())
        .await;
    let text = match &outcome {
        DecideOutcome::Accepted(settlement) => {
            ctx.mark_settled(click.number, settlement);
            if click.action == Action::Dismiss {
                "Dismissed: the agent was told no answer is coming.".to_owned()
            } else {
                outcome_text(&outcome)
            }
        }
        _ => outcome_text(&outcome),
    };
    followup(ctx, click, &text).await;
}

/// Replaces the deferred private answer with `text`.
async fn followup(ctx: &ClickContext, click: &Click, text: &str) {
    let path = format!(
        "/webhooks/{}/{}/messages/@original",
        ctx.application_id, click.token
    );
    // Webhook limits are per interaction token; the bucket is named by the
    // interaction id so no token is kept around.
    let bucket = format!("webhook:{}", click.interaction_id);
    if let Err(e) = ctx
        .rest
        .send(
            "answer a click",
            &bucket,
            Method::PATCH,
            &path,
            Body::Json(&render::followup_edit(text)),
            Retry::DELIVERY,
        )
        .await
    {
        ctx.console.error(&format!("discord: {e}"));
    }
}

/// Decides the chosen (or all open) requests of a group, one after the
/// other; returns the clicker's private summary.
async fn decide_group(ctx: &ClickContext, click: &Click, verdict: Verdict) -> String {
    let members = ctx.group_members(click.number);
    let numbers: Vec<u32> = match click.action {
        Action::ApproveAll | Action::DenyAll => members
            .iter()
            .copied()
            .filter(|n| ctx.settlement_of(*n).is_none())
            .collect(),
        _ => click
            .selected
            .iter()
            .copied()
            .filter(|n| members.contains(n))
            .collect(),
    };
    if numbers.is_empty() {
        return "Nothing left to decide in this group.".into();
    }
    let mut lines = Vec::new();
    for number in numbers {
        let outcome = match ctx.settlement_of(number) {
            Some(settlement) => DecideOutcome::AlreadyDecided(settlement),
            None => {
                ctx.decider
                    .decide(number, verdict.clone(), click.actor.clone())
                    .await
            }
        };
        if let DecideOutcome::Accepted(settlement) = &outcome {
            ctx.mark_settled(number, settlement);
        }
        lines.push(format!("#{number}: {}", outcome_text(&outcome)));
    }
    lines.join("\n")
}

/// A click from someone who may not decide: recorded for the audit log;
/// changes nothing.
async fn refused(ctx: &ClickContext, click: &Click, text: &str) {
    let number = match click.action {
        Action::ApproveSelected | Action::DenySelected | Action::ApproveAll | Action::DenyAll => {
            None
        }
        _ => Some(click.number),
    };
    ctx.decider
        .refused(number, click.actor.clone(), text.to_owned())
        .await;
}

/// Whether a click may decide: its acknowledgement went through, or failed
/// for a reason other than Discord not knowing the interaction. A click
/// Discord refuses to acknowledge as unknown (401/404: "Unknown
/// interaction") was never a human's, or came too late to count: made up
/// by whatever delivered it (a hub is a local process; see
/// docs/design.md, "Many runs, one bot"). It decides nothing.
fn proven(console: &Console, result: Result<serde_json::Value, RestError>) -> bool {
    if let Err(RestError::Status {
        status: 401 | 404, ..
    }) = &result
    {
        console.error(
            "discord: a click Discord does not know (its acknowledgement was refused) was ignored; \
             nothing was decided",
        );
        return false;
    }
    report_ack(console, result);
    true
}

fn report_ack(console: &Console, result: Result<serde_json::Value, RestError>) {
    if let Err(e) = result {
        console.error(&format!("discord: {e}"));
    }
}

fn already_decided(settlement: &Settlement) -> String {
    format!(
        "Already decided: {}",
        render::escape_markdown(&settlement.to_string())
    )
}

/// The clicker's private answer after a decision was sent.
fn outcome_text(outcome: &DecideOutcome) -> String {
    match outcome {
        DecideOutcome::Accepted(Settlement::ApprovedAndTrusted { .. }) => {
            "Approved, and trusted for the rest of this run: OpenCode was told to go ahead.".into()
        }
        DecideOutcome::Accepted(Settlement::Answered { .. }) => {
            "Answered: the agent received your answer.".into()
        }
        DecideOutcome::Accepted(s) if s.is_approved() => {
            "Approved: OpenCode was told to go ahead.".into()
        }
        DecideOutcome::Accepted(_) => "Denied: OpenCode was told no.".into(),
        DecideOutcome::AlreadyDecided(s) => already_decided(s),
        DecideOutcome::InProgress => {
            "Another decision on this request is being sent right now.".into()
        }
        DecideOutcome::Unknown => "This request is not known to this run.".into(),
        DecideOutcome::RunEnded => {
            "The run is ending: nothing more is forwarded to OpenCode.".into()
        }
        DecideOutcome::WrongKind => {
            "That answer does not fit this request (a question is answered, a permission approved or denied).".into()
        }
        DecideOutcome::Counted(p) => format!(
            "Your approval counts: {} of {} approvals. OpenCode hears nothing until another approver agrees.",
            p.by.len(),
            p.needed
        ),
        DecideOutcome::SameApprover(p) => format!(
            "You approved this already ({} of {} approvals): another person must approve it too.",
            p.by.len(),
            p.needed
        ),
        DecideOutcome::Failed(e) => format!(
            "Could not deliver the decision to OpenCode: {}",
            render::escape_markdown(e)
        ),
    }
}
