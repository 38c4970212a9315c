//! The outbox: one task that posts and edits the run's messages in order,
//! within Discord's rate limits (see `rest`), retrying delivery a bounded
//! number of times.
//!
//! Keeping every message operation in one task gives a single owner for
//! "which request has which message": an edit can never overtake the post
//! it edits. Jobs still queued are coalesced: a request settled before its
//! message went out is posted directly in its final state (no buttons to
//! click on a request that can no longer be answered), and when many
//! requests wait to be posted at once (parallel subagents) they go out as
//! one group message instead of a burst that would hit the rate limit
//! (questions excepted: each is posted on its own, with its own options).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use reqwest::Method;
use serde_json::Value;
use tokio::sync::mpsc;

use super::clicks::Nonce;
use super::render;
use super::rest::{Body, Rest, Retry};
use super::RunInfo;
use crate::approval::messages::{Decider, RunReport};
use crate::approval::{Progress, Settlement, Shown};
use crate::config::Ping;
use crate::console::Console;
use crate::redact::Redactor;

/// From this many open requests waiting to be posted, they are grouped.
pub const GROUP_THRESHOLD: usize = 4;
/// At most this many requests per group message (Discord's embed limit of
/// 6000 characters in total bounds it).
pub const GROUP_MAX: usize = 10;

/// Group id (its first request's number) → the numbers in it. Written by
/// the outbox when a group is posted, read by the click handlers; the lock
/// is only held for a lookup or an insert.
pub type Groups = Arc<Mutex<HashMap<u32, Vec<u32>>>>;

/// What the outbox is asked to do. Sent by `Discord::serve`.
#[derive(Debug)]
pub enum Job {
    Show(Shown),
    Settled {
        number: u32,
        settlement: Settlement,
        at: SystemTime,
    },
    /// The run is over (`None`: the notices ended without a report): post
    /// the summary, edit the start message, stop.
    Finish(Option<RunReport>),
    /// These requests still wait (number, wall-clock deadline): remind the
    /// pinged people, in one reply.
    Remind(Vec<(u32, SystemTime)>),
    /// One more approver of a request that needs several.
    Progress(Progress),
}

/// A queued job after coalescing.
enum Queued {
    Post {
        /// Boxed: a request is far larger than the other variants.
        request: Box<Shown>,
        settled: Option<(Settlement, SystemTime)>,
    },
    Edit {
        number: u32,
        settlement: Settlement,
        at: SystemTime,
    },
    Finish(Option<RunReport>),
    Remind(Vec<(u32, SystemTime)>),
    Progress(Progress),
}

/// Where a posted request is shown.
enum Placement {
    /// Boxed: a request is far larger than a group id.
    Single {
        message_id: u64,
        request: Box<Shown>,
    },
    InGroup(u32),
}

struct Group {
    message_id: u64,
    requests: Vec<Shown>,
    states: BTreeMap<u32, (Settlement, SystemTime)>,
}

pub struct Outbox {
    pub rest: Arc<Rest>,
    pub redactor: Redactor,
    pub nonce: Nonce,
    pub info: RunInfo,
    pub channel_id: u64,
    pub start_message_id: u64,
    pub thread_id: u64,
    /// Told about requests whose message could not be posted.
    pub decider: Decider,
    /// Where delivery failures are reported.
    pub console: Console,
    /// Whom waiting requests ping; these users are added to the thread.
    pub ping: Ping,
    /// For links to request messages, when Discord said.
    pub guild_id: Option<u64>,
    pub groups: Groups,
}

/// The outbox task's own state.
struct Run {
    outbox: Outbox,
    shown: HashMap<u32, Placement>,
    groups: HashMap<u32, Group>,
}

impl Outbox {
    /// Runs until a `Finish` job is done or `jobs` closes (its sender is
    /// held by `Discord::serve`).
    pub async fn run(self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        self.add_thread_members().await;
        let mut run = Run {
            outbox: self,
            shown: HashMap::new(),
            groups: HashMap::new(),
        };
        let mut queue = VecDeque::new();
        loop {
            while let Ok(job) = jobs.try_recv() {
                enqueue(&mut queue, job);
            }
            let Some(next) = queue.pop_front() else {
                match jobs.recv().await {
                    Some(job) => {
                        enqueue(&mut queue, job);
                        continue;
                    }
                    None => return,
                }
            };
            match next {
                Queued::Post {
                    request,
                    settled: None,
                } if !request.ask.is_question()
                    && open_posts_ahead(&queue) + 1 >= GROUP_THRESHOLD =>
                {
                    let mut requests = vec![*request];
                    while requests.len() < GROUP_MAX {
                        match queue.front() {
                            Some(Queued::Post {
                                settled: None,
                                request,
                            }) if !request.ask.is_question() => {}
                            _ => break,
                        }
                        if let Some(Queued::Post { request, .. }) = queue.pop_front() {
                            requests.push(*request);
                        }
                    }
                    run.post_group(requests).await;
                }
                Queued::Post { request, settled } => run.post(*request, settled).await,
                Queued::Edit {
                    number,
                    settlement,
                    at,
                } => run.edit(number, settlement, at, &mut queue).await,
                Queued::Finish(report) => {
                    run.outbox.finish(report.as_ref()).await;
                    return;
                }
                Queued::Remind(waiting) => run.remind(&waiting).await,
                Queued::Progress(progress) => run.progress(&progress).await,
            }
        }
    }

    /// A call about the run's thread (its rate-limit bucket).
    async fn send(
        &self,
        what: &'static str,
        method: Method,
        path: &str,
        body: Body<'_>,
    ) -> Result<Value, String> {
        self.send_in(self.thread_id, what, method, path, body).await
    }

    /// A call about channel `channel` (its rate-limit bucket), retried
    /// until delivered; the error as the text to report.
    async fn send_in(
        &self,
        channel: u64,
        what: &'static str,
        method: Method,
        path: &str,
        body: Body<'_>,
    ) -> Result<Value, String> {
        let bucket = format!("{method}:{channel}");
        self.rest
            .send(what, &bucket, method, path, body, Retry::DELIVERY)
            .await
            .map_err(|e| e.to_string())
    }

    /// Edit the message of request `number`; a failure is reported and
    /// changes nothing else (the decision stands either way).
    async fn edit_request(&self, message_id: u64, number: u32, payload: &Value) {
        let path = format!("/channels/{}/messages/{message_id}", self.thread_id);
        if let Err(e) = self
            .send(
                "edit a request message",
                Method::PATCH,
                &path,
                Body::Json(payload),
            )
            .await
        {
            self.console.error(&format!(
                "discord: could not update the message of request #{number}: {e}"
            ));
        }
    }

    /// Thread messages notify only the thread's members and those
    /// mentioned: the pinged users join it, so later messages reach them
    /// too. A failure is reported and changes nothing else.
    async fn add_thread_members(&self) {
        for user in &self.ping.users {
            let path = format!("/channels/{}/thread-members/{user}", self.thread_id);
            if let Err(e) = self
                .send("add a thread member", Method::PUT, &path, Body::Empty)
                .await
            {
                self.console.error(&format!(
                    "discord: could not add user {user} to the run's thread: {e}"
                ));
            }
        }
    }

    /// The summary in the thread and the run-start message's final state go
    /// out together: they are independent, and the exit waits for both.
    async fn finish(&self, report: Option<&RunReport>) {
        let Some(report) = report else {
            return;
        };
        let summary = render::run_summary(report);
        let summary_path = format!("/channels/{}/messages", self.thread_id);
        let edit = render::run_start_final(&self.info, &self.redactor, report);
        let edit_path = format!(
            "/channels/{}/messages/{}",
            self.channel_id, self.start_message_id
        );
        let (posted, edited) = tokio::join!(
            self.send(
                "post the run summary",
                Method::POST,
                &summary_path,
                Body::Json(&summary),
            ),
            self.send_in(
                self.channel_id,
                "edit the run-start message",
                Method::PATCH,
                &edit_path,
                Body::Json(&edit),
            ),
        );
        for failed in [posted.err(), edited.err()].into_iter().flatten() {
            self.console.error(&format!("discord: {failed}"));
        }
    }
}

impl Run {
    /// One reply for every request still waiting in `waiting`, to the
    /// message of the first; nothing if all were settled meanwhile.
    async fn remind(&self, waiting: &[(u32, SystemTime)]) {
        let message_of = |number: u32| match self.shown.get(&number)? {
            Placement::Single { message_id, .. } => Some(*message_id),
            Placement::InGroup(group) => self.groups.get(group).map(|g| g.message_id),
        };
        let Some(reply_to) = waiting.iter().find_map(|(n, _)| message_of(*n)) else {
            return;
        };
        let o = &self.outbox;
        let linked: Vec<(u32, SystemTime, Option<String>)> = waiting
            .iter()
            .map(|(n, deadline)| {
                let link = o.guild_id.zip(message_of(*n)).map(|(guild, message)| {
                    format!(
                        "https://discord.com/channels/{guild}/{}/{message}",
                        o.thread_id
                    )
                });
                (*n, *deadline, link)
            })
            .collect();
        let payload = render::reminder(&linked, &o.ping, reply_to);
        let path = format!("/channels/{}/messages", o.thread_id);
        if let Err(e) = o
            .send("post a reminder", Method::POST, &path, Body::Json(&payload))
            .await
        {
            o.console
                .error(&format!("discord: could not post a reminder: {e}"));
        }
    }

    async fn post(&mut self, request: Shown, settled: Option<(Settlement, SystemTime)>) {
        let o = &self.outbox;
        let mut rendered = render::request_message(
            &request,
            &o.redactor,
            &o.nonce,
            settled.as_ref().map(|(s, at)| (s, *at)),
        );
        if settled.is_none() {
            render::ping(&mut rendered.payload, &o.ping);
        }
        let path = format!("/channels/{}/messages", o.thread_id);
        let body = if rendered.files.is_empty() {
            Body::Json(&rendered.payload)
        } else {
            Body::Multipart(&rendered.payload, &rendered.files)
        };
        match o
            .send("post a request message", Method::POST, &path, body)
            .await
        {
            Ok(v) => {
                if let Some(message_id) = id_of(&v) {
                    self.shown.insert(
                        request.number,
                        Placement::Single {
                            message_id,
                            request: Box::new(request),
                        },
                    );
                }
            }
            // Fail closed: a request nobody can see is denied.
            Err(e) if settled.is_none() => {
                o.console.error(&format!(
                    "discord: request #{} could not be posted, so it is denied: {e}",
                    request.number
                ));
                o.decider.channel_failed(request.number, e).await;
            }
            Err(e) => o.console.error(&format!(
                "discord: could not show the final state of request #{}: {e}",
                request.number
            )),
        }
    }

    async fn post_group(&mut self, requests: Vec<Shown>) {
        let o = &self.outbox;
        let group = requests[0].number;
        let numbers: Vec<u32> = requests.iter().map(|r| r.number).collect();
        // Registered before posting, so a fast click finds the group.
        if let Ok(mut groups) = o.groups.lock() {
            groups.insert(group, numbers.clone());
        }
        let mut rendered =
            render::group_message(group, &requests, &BTreeMap::new(), &o.redactor, &o.nonce);
        // Once per message, not once per request.
        render::ping(&mut rendered.payload, &o.ping);
        let path = format!("/channels/{}/messages", o.thread_id);
        let body = Body::Multipart(&rendered.payload, &rendered.files);
        match o
            .send("post a group of requests", Method::POST, &path, body)
            .await
        {
            Ok(v) => {
                if let Some(message_id) = id_of(&v) {
                    for n in &numbers {
                        self.shown.insert(*n, Placement::InGroup(group));
                    }
                    self.groups.insert(
                        group,
                        Group {
                            message_id,
                            requests,
                            states: BTreeMap::new(),
                        },
                    );
                }
            }
            Err(e) => {
                o.console.error(&format!(
                    "discord: requests #{}–#{} could not be posted, so they are denied: {e}",
                    numbers[0],
                    numbers[numbers.len() - 1]
                ));
                for n in numbers {
                    o.decider.channel_failed(n, e.clone()).await;
                }
            }
        }
    }

    /// A request that needs several approvers is never grouped (see
    /// `open_posts_ahead`), so its message is its own.
    async fn progress(&self, progress: &Progress) {
        let Some(Placement::Single {
            message_id,
            request,
        }) = self.shown.get(&progress.number)
        else {
            return;
        };
        let o = &self.outbox;
        let payload = render::request_progress_edit(request, progress, &o.redactor, &o.nonce);
        o.edit_request(*message_id, progress.number, &payload).await;
    }

    async fn edit(
        &mut self,
        number: u32,
        settlement: Settlement,
        at: SystemTime,
        queue: &mut VecDeque<Queued>,
    ) {
        // No message: it was never posted (and so already denied as a
        // channel failure) — nothing to update.
        match self.shown.get(&number) {
            None => {}
            Some(Placement::Single {
                message_id,
                request,
            }) => {
                let o = &self.outbox;
                let payload =
                    render::request_final_edit(request, &o.redactor, &o.nonce, &settlement, at);
                o.edit_request(*message_id, number, &payload).await;
            }
            Some(Placement::InGroup(group)) => {
                let group = *group;
                let Some(g) = self.groups.get_mut(&group) else {
                    return;
                };
                g.states.insert(number, (settlement, at));
                // Fold every queued settlement of the same group into this
                // one edit.
                let members: Vec<u32> = g.requests.iter().map(|r| r.number).collect();
                queue.retain_mut(|q| match q {
                    Queued::Edit {
                        number,
                        settlement,
                        at,
                    } if members.contains(number) => {
                        g.states.insert(*number, (settlement.clone(), *at));
                        false
                    }
                    _ => true,
                });
                let o = &self.outbox;
                let payload =
                    render::group_edit(group, &g.requests, &g.states, &o.redactor, &o.nonce);
                let path = format!("/channels/{}/messages/{}", o.thread_id, g.message_id);
                if let Err(e) = o
                    .send(
                        "edit a group message",
                        Method::PATCH,
                        &path,
                        Body::Json(&payload),
                    )
                    .await
                {
                    o.console.error(&format!(
                        "discord: could not update the group of request #{number}: {e}"
                    ));
                }
            }
        }
    }
}

/// How many open (unsettled) permission requests wait to be posted at the
/// front of the queue. Questions are never grouped: a group message only
/// approves or denies, and a question needs its own answer.
fn open_posts_ahead(queue: &VecDeque<Queued>) -> usize {
    queue
        .iter()
        .take_while(
            |q| matches!(q, Queued::Post { settled: None, request } if !request.ask.is_question() && request.needs.approvals <= 1),
        )
        .count()
}

/// Adds `job` to the queue, folding a settlement into its request's
/// still-queued post.
fn enqueue(queue: &mut VecDeque<Queued>, job: Job) {
    match job {
        Job::Show(request) => queue.push_back(Queued::Post {
            request: Box::new(request),
            settled: None,
        }),
        Job::Settled {
            number,
            settlement,
            at,
        } => {
            let queued_post = queue.iter_mut().find_map(|q| match q {
                Queued::Post { request, settled } if request.number == number => Some(settled),
                _ => None,
            });
            match queued_post {
                Some(settled) => *settled = Some((settlement, at)),
                None => queue.push_back(Queued::Edit {
                    number,
                    settlement,
                    at,
                }),
            }
        }
        Job::Finish(report) => queue.push_back(Queued::Finish(report)),
        Job::Remind(waiting) => queue.push_back(Queued::Remind(waiting)),
        Job::Progress(progress) => queue.push_back(Queued::Progress(progress)),
    }
}

/// A snowflake id from a Discord JSON object (ids are strings).
pub fn id_of(v: &Value) -> Option<u64> {
    v.get("id")?.as_str()?.parse().ok()
}
