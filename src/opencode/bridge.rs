//! The bridge between OpenCode's words and the approval side's types, both
//! ways: what OpenCode asks becomes an [`Ask`], what it echoes becomes an
//! [`Echo`], and the approval task's [`Reply`] goes out through
//! [`OpenCodeReplier`]. Nothing outside `opencode/` knows OpenCode's JSON,
//! and nothing in `approval/` knows OpenCode at all.

use crate::approval::registry::Reply;
use crate::approval::task::{Replier, ReplyError};
use crate::approval::{Ask, Echo, Permission, Question};

use super::api::{self, Api, ApiError};
use super::wire::{PermissionRequest, QuestionInfo, ReplyKind};

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
