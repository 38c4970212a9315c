//! The run's session tree: the root session and every child (subagent)
//! session below it, with a label for each child.
//!
//! The server is private to this run, so every request on it was caused by
//! this run; still, only requests of sessions in this tree are relayed, and
//! the tree is refreshed from `GET /session` before a stranger is denied.

use std::collections::HashMap;

use crate::opencode::wire::SessionInfo;

/// The sessions of this run: the root and every child (subagent) session,
/// with a label for each child.
#[derive(Debug)]
pub(super) struct Sessions {
    root: String,
    /// Child session id → label (agent or title).
    children: HashMap<String, String>,
}

impl Sessions {
    /// A tree of the root session alone; children are learnt as they appear.
    pub(super) fn new(root: String) -> Self {
        Self {
            root,
            children: HashMap::new(),
        }
    }

    pub(super) fn root(&self) -> &str {
        &self.root
    }

    pub(super) fn is_root(&self, id: &str) -> bool {
        self.root == id
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.is_root(id) || self.children.contains_key(id)
    }

    /// `None` for the root session, the child's label otherwise.
    pub(super) fn label(&self, id: &str) -> Option<String> {
        self.children.get(id).cloned()
    }

    /// Learn a session if its parent is ours. Returns whether it is new.
    pub(super) fn learn(&mut self, info: &SessionInfo) -> bool {
        let Some(parent) = &info.parent_id else {
            return false;
        };
        if !self.contains(parent) || self.is_root(&info.id) {
            return false;
        }
        let label = info
            .agent
            .clone()
            .or_else(|| info.title.clone())
            .unwrap_or_else(|| "subagent".to_owned());
        self.children.insert(info.id.clone(), label).is_none()
    }

    /// Learn every descendant of the root from a full session list (parents
    /// may be listed after their children).
    pub(super) fn learn_all(&mut self, all: &[SessionInfo]) {
        loop {
            let mut grew = false;
            for s in all {
                grew |= self.learn(s);
            }
            if !grew {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str, parent: Option<&str>, agent: Option<&str>) -> SessionInfo {
        serde_json::from_value(serde_json::json!({
            "id": id,
            "parentID": parent,
            "agent": agent,
        }))
        .expect("session info")
    }

    #[test]
    fn a_child_of_the_root_is_learnt_with_its_agent_as_label() {
        let mut tree = Sessions::new("ses_root".to_owned());
        assert!(tree.learn(&session("ses_a", Some("ses_root"), Some("explore"))));
        assert!(tree.contains("ses_a"));
        assert_eq!(tree.label("ses_a").as_deref(), Some("explore"));
        assert_eq!(tree.label("ses_root"), None, "the root has no label");
        assert!(
            !tree.learn(&session("ses_a", Some("ses_root"), None)),
            "not new"
        );
    }

    #[test]
    fn a_session_of_another_tree_is_not_learnt() {
        let mut tree = Sessions::new("ses_root".to_owned());
        assert!(!tree.learn(&session("ses_x", Some("ses_other"), None)));
        assert!(!tree.learn(&session("ses_y", None, None)));
        assert!(!tree.contains("ses_x") && !tree.contains("ses_y"));
    }

    #[test]
    fn grandchildren_listed_before_their_parents_are_learnt_from_a_full_list() {
        let mut tree = Sessions::new("ses_root".to_owned());
        tree.learn_all(&[
            session("ses_grandchild", Some("ses_child"), None),
            session("ses_child", Some("ses_root"), Some("general")),
            session("ses_stranger", Some("ses_nobody"), None),
        ]);
        assert!(tree.contains("ses_child"));
        assert!(tree.contains("ses_grandchild"));
        assert_eq!(tree.label("ses_grandchild").as_deref(), Some("subagent"));
        assert!(!tree.contains("ses_stranger"));
    }
}
