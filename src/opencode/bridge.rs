//! The bridge between OpenCode's words and the approval side's types, both
//! ways: what OpenCode asks becomes an [`Ask`], what it echoes becomes an
//! [`Echo`], and the approval task's [`Reply`] goes out through
//! [`OpenCodeReplier`]. Nothing outside `opencode/` knows OpenCode's JSON,
//! and nothing in `approval/` knows OpenCode at all.

use crate::approval::registry::Reply;
use crate::approval::task::{Replier, ReplyError};
use crate::approval::{Ask, Echo, Permission, Question};

use super::api::{self, Api, ApiError};
use super::wire::{PermissionRequest, QuestionInfo, ReplyKind, SessionInfo};
use crate::records::summary::{TokenCache, Tokens, Usage};

/// A `permission.asked` (or an entry of `GET /permission`) as an [`Ask`].
/// `agent` labels a subagent's session; `None` for the root session.
#[must_use]
pub fn permission_ask(request: PermissionRequest, agent: Option<String>) -> Ask {
    let meta = request.metadata;
    Ask {
        agent,
        ..Ask::permission_request(
            request.id,
            request.session_id,
            Permission {
                kind: request.permission,
                patterns: request.patterns,
                command: meta.command,
                path: meta.filepath,
                diff: meta.diff,
                description: meta.description,
            },
        )
    }
}

/// A `question.asked` as an [`Ask`]; `None` when it has no questions (it is
/// then dismissed, never relayed empty).
#[must_use]
pub fn question_ask(
    id: String,
    session_id: String,
    questions: Vec<QuestionInfo>,
    agent: Option<String>,
) -> Option<Ask> {
    if questions.is_empty() {
        return None;
    }
    let questions = questions
        .into_iter()
        .map(|q| Question {
            header: q.header,
            text: q.question,
            options: q
                .options
                .into_iter()
                .map(|o| (o.label, o.description))
                .collect(),
            multiple: q.multiple,
            custom: q.custom,
        })
        .collect();
    Some(Ask {
        agent,
        ..Ask::question(id, session_id, questions)
    })
}

/// `permission.replied`'s reply word as an [`Echo`]. `always` is an
/// approval too (gatekeep never sends it; another client may have).
#[must_use]
pub fn permission_echo(reply: ReplyKind) -> Echo {
    match reply {
        ReplyKind::Once => Echo::Approved { always: false },
        ReplyKind::Always => Echo::Approved { always: true },
        ReplyKind::Reject => Echo::Rejected,
        ReplyKind::Unknown(word) => Echo::Unknown(word),
    }
}

/// Take what a `session.created`/`session.updated` of the root session
/// reports into the run's usage; a field it leaves out keeps its last value.
pub fn update_usage(usage: &mut Usage, info: &SessionInfo) {
    usage.session_id = Some(info.id.clone());
    if let Some(model) = &info.model {
        usage.model = Some(format!("{}/{}", model.provider_id, model.id));
    }
    if let Some(t) = info.tokens {
        usage.tokens = Some(Tokens {
            input: t.input,
            output: t.output,
            reasoning: t.reasoning,
            cache: TokenCache {
                read: t.cache.read,
                write: t.cache.write,
            },
        });
    }
    if info.cost.is_some() {
        usage.cost = info.cost;
    }
}

/// The approval task's way to OpenCode.
pub struct OpenCodeReplier(Api);

impl OpenCodeReplier {
    #[must_use]
    pub fn new(api: Api) -> Self {
        Self(api)
    }
}

impl Replier for OpenCodeReplier {
    async fn reply(&self, request_id: &str, reply: &Reply) -> Result<(), ReplyError> {
        let result = match reply {
            Reply::Once => self.0.reply_permission(request_id, &api::Reply::Once).await,
            Reply::Reject { message } => {
                let reply = api::Reply::Reject {
                    message: Some(message.clone()),
                };
                self.0.reply_permission(request_id, &reply).await
            }
            Reply::Answer { answers } => self.0.reply_question(request_id, answers).await,
            Reply::Dismiss => self.0.reject_question(request_id).await,
        };
        result.map_err(|e| match e {
            ApiError::PermissionNotFound(_) | ApiError::QuestionNotFound(_) => ReplyError::NotFound,
            other => ReplyError::Failed(other.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_keeps_the_last_reported_values() {
        let mut usage = Usage::default();
        let info: SessionInfo = serde_json::from_value(serde_json::json!({
            "id": "ses_1",
            "model": {"id": "m", "providerID": "p"},
            "cost": 0.5,
            "tokens": {"input": 3, "output": 4, "reasoning": 0, "cache": {"read": 1, "write": 2}}
        }))
        .expect("parses");
        update_usage(&mut usage, &info);
        let later: SessionInfo =
            serde_json::from_value(serde_json::json!({"id": "ses_1", "tokens": "weird"}))
                .expect("a strange shape is read as absent");
        update_usage(&mut usage, &later);
        assert_eq!(usage.model.as_deref(), Some("p/m"));
        assert_eq!(usage.cost, Some(0.5));
        assert_eq!(usage.tokens.map(|t| (t.input, t.cache.write)), Some((3, 2)));
    }

    #[test]
    fn every_approval_word_is_an_approval_and_an_unknown_word_is_never_a_rejection() {
        assert_eq!(
            permission_echo(ReplyKind::Once),
            Echo::Approved { always: false }
        );
        assert_eq!(
            permission_echo(ReplyKind::Always),
            Echo::Approved { always: true }
        );
        assert_eq!(permission_echo(ReplyKind::Reject), Echo::Rejected);
        let odd = permission_echo(ReplyKind::Unknown("maybe".to_owned()));
        assert_eq!(odd, Echo::Unknown("maybe".to_owned()));
        assert!(!odd.lets_agent_proceed());
    }

    #[test]
    fn a_question_without_questions_is_not_relayed() {
        assert!(question_ask("que_1".into(), "ses_1".into(), Vec::new(), None).is_none());
    }
}
