//! The outbox: one task that posts and edits the run's messages in order,
//! within Discord's rate limits (see `rest`), retrying delivery a bounded
//! number of times.
//!
//! Keeping every message operation in one task gives a single owner for
//! "which request has which message": an edit can never overtake the post
//! it edits. Jobs still queued are coalesced: a request settled before its
//! message went out is posted directly in its final state (no buttons to
//! click on a request that can no longer be answered).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use reqwest::Method;
use serde_json::Value;
use tokio::sync::mpsc;

use super::clicks::Nonce;
use super::render;
use super::rest::{Body, Rest, Retry};
use super::RunInfo;
use crate::approval::{Request, Settlement};
use crate::redact::Redactor;
use crate::transport::{Decider, RunReport};

/// What the outbox is asked to do. Sent by `Discord::serve`.
#[derive(Debug)]
pub enum Job {
    Show(Request),
    Settled {
        number: u32,
        settlement: Settlement,
        at: SystemTime,
    },
    /// The run is over (`None`: the notices ended without a report): post
    /// the summary, edit the start message, stop.
    Finish(Option<RunReport>),
}

/// A queued job after coalescing.
enum Queued {
    Post {
        request: Request,
        settled: Option<(Settlement, SystemTime)>,
    },
    Edit {
        number: u32,
        settlement: Settlement,
        at: SystemTime,
    },
    Finish(Option<RunReport>),
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
    /// Posted request messages: number → (message id, request).
    pub posted: HashMap<u32, (u64, Request)>,
}

impl Outbox {
    /// Runs until a `Finish` job is done or `jobs` closes (its sender is
    /// held by `Discord::serve`).
    pub async fn run(mut self, mut jobs: mpsc::UnboundedReceiver<Job>) {
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
                Queued::Post { request, settled } => self.post(request, settled).await,
                Queued::Edit {
                    number,
                    settlement,
                    at,
                } => self.edit(number, &settlement, at).await,
                Queued::Finish(report) => {
                    self.finish(report.as_ref()).await;
                    return;
                }
            }
        }
    }

    async fn post(&mut self, request: Request, settled: Option<(Settlement, SystemTime)>) {
        let rendered = render::request_message(
            &request,
            &self.redactor,
            &self.nonce,
            settled.as_ref().map(|(s, at)| (s, *at)),
        );
        let path = format!("/channels/{}/messages", self.thread_id);
        let body = if rendered.files.is_empty() {
            Body::Json(&rendered.payload)
        } else {
            Body::Multipart(&rendered.payload, &rendered.files)
        };
        let bucket = format!("post:{}", self.thread_id);
        match self
            .rest
            .send(
                "post a request message",
                &bucket,
                Method::POST,
                &path,
                body,
                Retry::DELIVERY,
            )
            .await
        {
            Ok(v) => {
                if let Some(id) = id_of(&v) {
                    self.posted.insert(request.number, (id, request));
                }
            }
            Err(e) if settled.is_none() => {
                // Fail closed: a request nobody can see is denied.
                self.decider
                    .channel_failed(request.number, e.to_string())
                    .await;
            }
            Err(e) => eprintln!(
                "gatekeep: discord: could not show the final state of request #{}: {e}",
                request.number
            ),
        }
    }

    async fn edit(&mut self, number: u32, settlement: &Settlement, at: SystemTime) {
        // No message: it was never posted (and so already denied as a
        // channel failure) — nothing to update.
        let Some((message_id, request)) = self.posted.get(&number) else {
            return;
        };
        let payload =
            render::request_final_edit(request, &self.redactor, &self.nonce, settlement, at);
        let path = format!("/channels/{}/messages/{message_id}", self.thread_id);
        let bucket = format!("patch:{}", self.thread_id);
        if let Err(e) = self
            .rest
            .send(
                "edit a request message",
                &bucket,
                Method::PATCH,
                &path,
                Body::Json(&payload),
                Retry::DELIVERY,
            )
            .await
        {
            eprintln!("gatekeep: discord: could not update the message of request #{number}: {e}");
        }
    }

    async fn finish(&mut self, report: Option<&RunReport>) {
        let Some(report) = report else {
            return;
        };
        let summary = render::run_summary(report);
        let path = format!("/channels/{}/messages", self.thread_id);
        let bucket = format!("post:{}", self.thread_id);
        if let Err(e) = self
            .rest
            .send(
                "post the run summary",
                &bucket,
                Method::POST,
                &path,
                Body::Json(&summary),
                Retry::DELIVERY,
            )
            .await
        {
            eprintln!("gatekeep: discord: {e}");
        }
        let edit = render::run_start_final(&self.info, &self.redactor, report);
        let path = format!(
            "/channels/{}/messages/{}",
            self.channel_id, self.start_message_id
        );
        let bucket = format!("patch:{}", self.channel_id);
        if let Err(e) = self
            .rest
            .send(
                "edit the run-start message",
                &bucket,
                Method::PATCH,
                &path,
                Body::Json(&edit),
                Retry::DELIVERY,
            )
            .await
        {
            eprintln!("gatekeep: discord: {e}");
        }
    }
}

/// Adds `job` to the queue, folding a settlement into its request's
/// still-queued post.
fn enqueue(queue: &mut VecDeque<Queued>, job: Job) {
    match job {
        Job::Show(request) => queue.push_back(Queued::Post {
            request,
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
    }
}

/// A snowflake id from a Discord JSON object (ids are strings).
pub fn id_of(v: &Value) -> Option<u64> {
    v.get("id")?.as_str()?.parse().ok()
}
