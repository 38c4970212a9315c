//! The event loop: reads OpenCode's events until something ends the run.
//!
//! Each event is handled by one method: what OpenCode asks goes to the
//! approval task (translated by [`crate::opencode::bridge`]), the agent's
//! text and tool progress go to the console, and a finished, failed or
//! vanished root session is the reason the run ends. A broken stream is
//! reopened and reconciled with what OpenCode waits on now.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::sync::mpsc;

use super::sessions::Sessions;
use super::watch::{Breach, Watch};
use super::{Clock, End, DEATH_GRACE, RECONNECT_ATTEMPTS, STREAM_SILENCE, SUBSCRIBE_TIMEOUT};
use crate::approval::messages::{Input, Notice};
use crate::approval::{Ask, Echo, EndReason};
use crate::console::Console;
use crate::opencode::api::{self, Api};
use crate::opencode::bridge;
use crate::opencode::events::{self, EventStream, EventsError};
use crate::opencode::server::Server;
use crate::opencode::wire::{
    Event, LastMessage, MalformedPermission, Part, PermissionRequest, QuestionInfo, SessionStatus,
    ToolStatus,
};
use crate::records::summary::Usage;
use crate::signals::Signals;

/// The event loop's state.
pub(super) struct EventLoop {
    console: Console,
    api: Api,
    pub(super) sessions: Sessions,
    /// The approval task's input; the task holds the other end.
    approvals: mpsc::Sender<Input>,
    /// Text parts already printed, so an update does not print twice.
    printed_parts: HashSet<String>,
    /// Last shown status of each tool part.
    tool_states: HashMap<String, ToolStatus>,
    /// Messages written by the user (the prompt), whose text is not echoed.
    user_messages: HashSet<String>,
    /// The root session's latest model, tokens and cost.
    pub(super) usage: Usage,
    /// Relay the agent's questions to the approval channel (else dismiss
    /// them: `--no-questions`).
    pub(super) relay_questions: bool,
    /// Frames skipped because they could not be read.
    pub(super) unreadable: u64,
    /// The policy surface and every gated call (see [`Watch`]).
    watch: Watch,
}

/// How often the policy surface is compared with its state at the prompt,
/// besides after every tool call.
const SURFACE_CHECK: Duration = Duration::from_secs(1);

impl EventLoop {
    pub(super) fn new(
        console: Console,
        api: Api,
        root: String,
        approvals: mpsc::Sender<Input>,
        watch: Watch,
    ) -> Self {
        Self {
            console,
            api,
            sessions: Sessions::new(root),
            approvals,
            printed_parts: HashSet::new(),
            tool_states: HashMap::new(),
            user_messages: HashSet::new(),
            usage: Usage::default(),
            relay_questions: true,
            unreadable: 0,
            watch,
        }
    }

    /// With `-v`: how many frames the run skipped (see `on_unreadable`).
    pub(super) fn report_skipped(&self) {
        if self.unreadable > 0 {
            self.console.detail(&format!(
                "{} OpenCode event(s) skipped: gatekeep could not read them",
                self.unreadable
            ));
        }
    }

    /// Read events until something ends the run. Whatever ended it, a
    /// change of the policy surface found at the end makes it an intrusion.
    pub(super) async fn until_end(
        &mut self,
        stream: EventStream,
        server: &mut Server,
        signals: &mut Signals,
        clock: &Clock,
        alarms: &mut mpsc::UnboundedReceiver<Notice>,
    ) -> End {
        let end = self
            .read_until_end(stream, server, signals, clock, alarms)
            .await;
        // Checked (and recorded for the next run) whatever ended the run.
        match (self.watch.check(), end.reason) {
            (Some(breach), EndReason::Intruded) => End::new(
                EndReason::Intruded,
                format!("{}; and {}", end.detail.unwrap_or_default(), breach.detail),
            ),
            (Some(breach), _) => intruded(breach),
            (None, _) => end,
        }
    }

    /// Once the server has stopped (and with it the box): a change made
    /// after the last check is still written down for the next run.
    pub(super) fn last_check(&mut self) {
        if let Some(late) = self.watch.check() {
            self.console
                .error(&format!("after the run: {}", late.detail));
        }
    }

    async fn read_until_end(
        &mut self,
        mut stream: EventStream,
        server: &mut Server,
        signals: &mut Signals,
        clock: &Clock,
        alarms: &mut mpsc::UnboundedReceiver<Notice>,
    ) -> End {
        let mut heard = tokio::time::Instant::now();
        let mut surface = tokio::time::interval(SURFACE_CHECK);
        surface.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = tokio::select! {
                event = stream.next() => {
                    heard = tokio::time::Instant::now();
                    event
                }
                // A stream that went quiet is reopened like a broken one.
                () = tokio::time::sleep_until(heard + STREAM_SILENCE) => {
                    heard = tokio::time::Instant::now();
                    Some(Err(EventsError::Silent(STREAM_SILENCE)))
                }
                Some(notice) = alarms.recv() => match intrusion_end(&notice) {
                    Some(end) => return end,
                    None => continue,
                },
                _ = surface.tick() => match self.watch.check() {
                    Some(breach) => return intruded(breach),
                    None => continue,
                },
                reason = signals.recv() => return End::new(reason, None),
                () = clock.expired() => return End::new(EndReason::TimedOut, None),
                status = server.exited() => {
                    return End::new(EndReason::OpenCodeDied, format!("OpenCode exited during the run ({status})"));
                }
            };
            let end = match next {
                Some(Ok(event)) => self.on_event(event).await,
                // One frame that does not read: the stream is fine. Skip it,
                // and catch up in case it was about a decision.
                Some(Err(err)) if !err.is_fatal() => self.on_unreadable(&err).await,
                Some(Err(err)) => match self.reconnect(server, err).await {
                    Ok(fresh) => {
                        stream = fresh;
                        heard = tokio::time::Instant::now();
                        self.reconcile().await
                    }
                    Err(end) => Some(end),
                },
                None => Some(
                    stream_lost(
                        server,
                        "OpenCode's event stream ended before the run finished".to_owned(),
                    )
                    .await,
                ),
            };
            if let Some(end) = end {
                return end;
            }
        }
    }

    /// The stream broke while OpenCode may still live: subscribe again, then
    /// catch up with what happened during the gap.
    async fn reconnect(
        &mut self,
        server: &mut Server,
        err: EventsError,
    ) -> Result<EventStream, End> {
        if server.has_exited() {
            return Err(
                stream_lost(server, format!("OpenCode's event stream failed: {err}")).await,
            );
        }
        self.console
            .status(&format!("event stream lost ({err}); reconnecting"));
        let mut last = err.to_string();
        for attempt in 0..RECONNECT_ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(100) * 2u32.pow(attempt)).await;
            match events::subscribe_within(&self.api, SUBSCRIBE_TIMEOUT).await {
                Ok(stream) => {
                    self.resync().await?;
                    self.console.status("event stream back");
                    return Ok(stream);
                }
                Err(e) => last = e.to_string(),
            }
            if server.has_exited() {
                break;
            }
        }
        Err(stream_lost(
            server,
            format!("could not reconnect to OpenCode's event stream: {last}"),
        )
        .await)
    }

    /// A frame that could not be read (shown with `-v`, counted): what
    /// OpenCode waits on and the root's state are read again instead, so
    /// nothing a decision depends on is lost with it, and the stream is
    /// never reopened for it.
    async fn on_unreadable(&mut self, err: &EventsError) -> Option<End> {
        self.unreadable += 1;
        self.console
            .detail(&format!("skipped an event gatekeep cannot read ({err})"));
        if let Err(end) = self.resync().await {
            return Some(end);
        }
        self.reconcile().await
    }

    /// After a gap: did the run end while gatekeep was not listening? The
    /// root's status (OpenCode drops idle sessions from the list) and, if
    /// it is not working, its last message say: complete → finished, an
    /// error → failed. Anything unreadable or unclear keeps the run going
    /// (the watchdog or `--timeout` still bound it).
    async fn reconcile(&self) -> Option<End> {
        let root = self.sessions.root();
        match self.api.session_status(root).await {
            Ok(None | Some(SessionStatus::Idle)) => {}
            Ok(Some(_)) | Err(_) => return None,
        }
        match self.api.last_message(root).await.ok()? {
            LastMessage::Completed => {
                self.console
                    .status("the run finished while the event stream was down");
                Some(End::new(EndReason::Finished, None))
            }
            LastMessage::Failed { name, message } => self.on_error(Some(root), name, message),
            LastMessage::Open => None,
        }
    }

    /// After a gap: learn child sessions created meanwhile, then hand the
    /// approval task everything OpenCode waits on now.
    async fn resync(&mut self) -> Result<(), End> {
        if let Ok(all) = self.api.list_sessions().await {
            self.sessions.learn_all(&all);
        }
        let pending = self
            .api
            .list_permissions()
            .await
            .map_err(|e| End::opencode("could not list pending permissions", &e))?;
        let mut ours = Vec::new();
        for request in pending {
            self.watch.asked(&request);
            if self.sessions.contains(&request.session_id) {
                ours.push(self.ask_of(request));
            } else {
                self.deny_stranger(&request.id).await;
            }
        }
        self.send(Input::Resync(ours)).await
    }

    async fn send(&self, input: Input) -> Result<(), End> {
        // The task only ends after close, which happens after this loop.
        self.approvals.send(input).await.map_err(|_| {
            End::new(
                EndReason::InternalError,
                "the approval task stopped (this is a bug)".to_owned(),
            )
        })
    }

    async fn on_event(&mut self, event: Event) -> Option<End> {
        let result = match event {
            Event::SessionCreated(info) | Event::SessionUpdated(info) => {
                if self.sessions.is_root(&info.id) {
                    bridge::update_usage(&mut self.usage, &info);
                }
                if self.sessions.learn(&info) {
                    self.console.detail(&format!(
                        "subagent session started: {}",
                        self.sessions.label(&info.id).unwrap_or_default()
                    ));
                }
                Ok(())
            }
            Event::PermissionAsked(request) => {
                self.watch.asked(&request);
                self.on_permission(request).await
            }
            Event::PermissionMalformed(bad) => self.on_malformed(&bad).await,
            Event::PermissionReplied {
                session_id,
                request_id,
                reply,
            } => {
                self.watch.replied(&request_id, &reply);
                let echo = bridge::permission_echo(reply);
                self.replied(session_id, request_id, echo).await
            }
            Event::QuestionAsked {
                id: Some(id),
                session_id,
                questions,
            } => self.on_question(id, session_id, questions).await,
            Event::QuestionReplied {
                session_id,
                request_id,
            } => self.replied(session_id, request_id, Echo::Answered).await,
            Event::QuestionRejected {
                session_id,
                request_id,
            } => self.replied(session_id, request_id, Echo::Dismissed).await,
            Event::SessionIdle { session_id } if self.sessions.is_root(&session_id) => {
                return Some(End::new(EndReason::Finished, None));
            }
            Event::SessionStatus { session_id, status } => {
                return self.on_status(&session_id, status)
            }
            Event::SessionError {
                session_id,
                name,
                message,
            } => {
                return self.on_error(session_id.as_deref(), name, message);
            }
            Event::MessageUpdated {
                message_id, role, ..
            } if role == "user" => {
                self.user_messages.insert(message_id);
                Ok(())
            }
            Event::PartUpdated(part) => return self.on_part(part).map(intruded),
            Event::InstanceDisposed { .. } => Err(End::new(
                EndReason::Failed,
                "OpenCode shut its instance down before the run finished".to_owned(),
            )),
            Event::Unreadable { kind, reason } => {
                // Display only: the run goes on without it (shown with -v).
                self.unreadable += 1;
                self.console.detail(&format!(
                    "skipped a {kind} event of an unexpected shape: {reason}"
                ));
                Ok(())
            }
            _ => Ok(()),
        };
        result.err()
    }

    /// A `permission.asked` that could not be read: OpenCode waits on it
    /// all the same, so it must not be lost.
    async fn on_malformed(&mut self, bad: &MalformedPermission) -> Result<(), End> {
        self.console.error(&format!(
            "a permission request could not be read: {}",
            bad.reason
        ));
        match &bad.request_id {
            // Fail closed: deny it by id.
            Some(id) => {
                self.reject(id, "denied by gatekeep: the request could not be read")
                    .await;
                Ok(())
            }
            // No id to deny it by: OpenCode's own list of what waits shows
            // it (or, if that cannot be read either, the run ends and the
            // teardown denies everything).
            None => self.resync().await,
        }
    }

    /// A permission request: ours goes to the approval task; one of a session
    /// outside the run's tree is looked up once more, then denied.
    async fn on_permission(&mut self, request: PermissionRequest) -> Result<(), End> {
        if !self.sessions.contains(&request.session_id) {
            if let Ok(all) = self.api.list_sessions().await {
                self.sessions.learn_all(&all);
            }
        }
        if self.sessions.contains(&request.session_id) {
            let request = self.ask_of(request);
            return self.send(Input::Asked(request)).await;
        }
        self.deny_stranger(&request.id).await;
        Ok(())
    }

    async fn deny_stranger(&self, request_id: &str) {
        self.console.detail(&format!(
            "denying {request_id}: its session is not part of this run"
        ));
        self.reject(
            request_id,
            "denied by gatekeep: not part of the supervised run",
        )
        .await;
    }

    async fn reject(&self, request_id: &str, message: &str) {
        let reply = api::Reply::Reject {
            message: Some(message.to_owned()),
        };
        let _ = self.api.reply_permission(request_id, &reply).await;
    }

    fn on_status(&self, session_id: &str, status: SessionStatus) -> Option<End> {
        match status {
            SessionStatus::Idle if self.sessions.is_root(session_id) => {
                Some(End::new(EndReason::Finished, None))
            }
            SessionStatus::Retry { message, .. } if self.sessions.contains(session_id) => {
                self.console.status(&format!(
                    "OpenCode is retrying the model call: {}",
                    message.unwrap_or_default()
                ));
                None
            }
            _ => None,
        }
    }

    fn on_error(
        &self,
        session_id: Option<&str>,
        name: String,
        message: Option<String>,
    ) -> Option<End> {
        let detail = match message {
            Some(m) => format!("{name}: {m}"),
            None => name,
        };
        match session_id {
            Some(id) if self.sessions.is_root(id) => {
                return Some(End::new(EndReason::Failed, detail))
            }
            Some(id) if self.sessions.contains(id) => {
                self.console.status(&format!("subagent error: {detail}"));
            }
            _ => self.console.detail(&format!("OpenCode error: {detail}")),
        }
        None
    }

    /// Show the agent's text and tool progress; a tool part of the run's
    /// sessions also goes to the watch.
    fn on_part(&mut self, part: Part) -> Option<Breach> {
        match part {
            Part::Text {
                session_id,
                message_id,
                part_id,
                text,
                ended,
            } => {
                if ended
                    && self.sessions.is_root(&session_id)
                    && !self.user_messages.contains(&message_id)
                    && self.printed_parts.insert(part_id)
                {
                    self.console.agent_text(&text);
                }
            }
            Part::Tool {
                session_id,
                part_id,
                tool,
                call_id,
                status,
                title,
                error,
                command,
                ..
            } => {
                if !self.sessions.contains(&session_id)
                    || self.tool_states.get(&part_id) == Some(&status)
                {
                    return None;
                }
                let breach = self
                    .watch
                    .tool(&tool, &call_id, &status, command.as_deref());
                let who = self
                    .sessions
                    .label(&session_id)
                    .map(|l| format!("[{l}] "))
                    .unwrap_or_default();
                match &status {
                    ToolStatus::Running => self.console.tool(&format!("{who}→ {tool}")),
                    ToolStatus::Completed => self
                        .console
                        .tool(&format!("{who}✓ {tool}: {}", title.unwrap_or_default())),
                    ToolStatus::Error => self
                        .console
                        .tool(&format!("{who}✗ {tool}: {}", error.unwrap_or_default())),
                    ToolStatus::Pending | ToolStatus::Unknown(_) => {}
                }
                self.tool_states.insert(part_id, status);
                return breach;
            }
            Part::Other { .. } => {}
        }
        None
    }

    /// A question of the agent's `question` tool: OpenCode waits for it
    /// forever, so it is relayed like a permission request (same deadlines,
    /// same teardown), or dismissed at once with `--no-questions`, when it
    /// cannot be read, or when it is not the run's.
    async fn on_question(
        &mut self,
        id: String,
        session_id: Option<String>,
        questions: Option<Vec<QuestionInfo>>,
    ) -> Result<(), End> {
        let session_id = session_id.unwrap_or_default();
        let ours = self.relay_questions && self.sessions.contains(&session_id);
        let agent = self.sessions.label(&session_id);
        match questions.filter(|_| ours) {
            Some(questions) => match bridge::question_ask(id.clone(), session_id, questions, agent)
            {
                Some(ask) => return self.send(Input::Asked(ask)).await,
                None => self.dismiss_question(&id).await,
            },
            None => self.dismiss_question(&id).await,
        }
        Ok(())
    }

    async fn dismiss_question(&self, id: &str) {
        self.console
            .status("the agent asked a question; dismissing it");
        let _ = self.api.reject_question(id).await;
    }

    /// OpenCode's echo of a reply, whoever sent it.
    async fn replied(&self, session_id: String, request_id: String, echo: Echo) -> Result<(), End> {
        self.send(Input::Replied {
            session_id,
            request_id,
            echo,
        })
        .await
    }

    /// What OpenCode asks, with the label of the subagent that asked.
    fn ask_of(&self, request: PermissionRequest) -> Ask {
        let agent = self.sessions.label(&request.session_id);
        bridge::permission_ask(request, agent)
    }
}

/// The approval task saw a request approved or answered by something other
/// than gatekeep: the run ends at once (docs/design.md, "Nothing but
/// gatekeep answers").
fn intrusion_end(notice: &Notice) -> Option<End> {
    let Notice::Intruded(intrusion) = notice else {
        return None;
    };
    let which = intrusion
        .number
        .map_or_else(|| intrusion.request_id.clone(), |n| format!("#{n}"));
    Some(End::new(
        EndReason::Intruded,
        format!(
            "request {which} was {} by something other than gatekeep",
            intrusion.echo
        ),
    ))
}

/// What the watch found ends the run at once, as an intrusion.
fn intruded(breach: Breach) -> End {
    End::new(EndReason::Intruded, breach.detail)
}

/// The event stream is gone for good: if the server died too, say so.
async fn stream_lost(server: &mut Server, detail: String) -> End {
    match tokio::time::timeout(DEATH_GRACE, server.exited()).await {
        Ok(status) => End::new(
            EndReason::OpenCodeDied,
            format!("OpenCode exited during the run ({status})"),
        ),
        Err(_) => End::new(EndReason::Failed, detail),
    }
}
