//! `--gate KIND`: forcing a permission kind to `ask` for the whole run,
//! subagents included.
//!
//! Measured on OpenCode 1.18.33 (docs/opencode-facts.md): no single knob does
//! it. The per-session ruleset of `POST /session` covers the root session
//! only (a child session inherits only `deny` and `external_directory`
//! rules); `OPENCODE_PERMISSION` is merged into the config's top-level
//! `permission`, which an agent's own `permission` in the workspace config
//! overrides; `OPENCODE_CONFIG_CONTENT` is merged last and its
//! `agent.<name>.permission` wins. So gatekeep sets all three, and then
//! checks the merged rulesets that `GET /agent` reports: an agent that would
//! still allow a gated kind is a reason not to start the run.

use std::ffi::OsString;

use serde_json::{json, Map, Value};

use crate::opencode::api::AgentInfo;

/// The agents OpenCode 1.18.33 ships; overridden before anything is known
/// about the workspace's own agents.
pub const BUILT_IN_AGENTS: &[&str] = &["build", "plan", "general", "explore"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GateError {
    #[error(
        "OPENCODE_CONFIG_CONTENT is set but is not a JSON object, so --gate cannot add to it: {0}"
    )]
    ConfigContent(String),
    #[error(
        "--gate {kind}: agent `{agent}` would still run `{kind}` without asking (its permission \
         rules allow it after every ask); fix the agent's `permission` in the workspace config"
    )]
    StillAllowed { agent: String, kind: String },
}

/// The environment for `opencode serve` that makes every gated kind ask, for
/// the built-in agents and `extra_agents`, and loads `plugins` (gatekeep's
/// guard) besides the user's own. `existing` is the caller's own
/// `OPENCODE_CONFIG_CONTENT`, which is kept and added to.
pub fn server_env(
    gates: &[String],
    existing: Option<&str>,
    extra_agents: &[String],
    plugins: &[String],
) -> Result<Vec<(OsString, OsString)>, GateError> {
    if gates.is_empty() && plugins.is_empty() {
        return Ok(Vec::new());
    }
    let asks: Map<String, Value> = gates.iter().map(|g| (g.clone(), json!("ask"))).collect();

    let mut content = match existing.map(str::trim).filter(|s| !s.is_empty()) {
        Some(text) => match super::config::parse(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(GateError::ConfigContent("not an object".to_owned())),
            Err(e) => return Err(GateError::ConfigContent(e.to_string())),
        },
        None => Map::new(),
    };
    if !plugins.is_empty() {
        let list = content.entry("plugin").or_insert_with(|| json!([]));
        let list = list
            .as_array_mut()
            .ok_or_else(|| GateError::ConfigContent("`plugin` is not a list".to_owned()))?;
        list.extend(plugins.iter().map(|p| json!(p)));
    }
    if gates.is_empty() {
        return Ok(vec![(
            "OPENCODE_CONFIG_CONTENT".into(),
            Value::Object(content).to_string().into(),
        )]);
    }
    let agents = content
        .entry("agent")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| GateError::ConfigContent("`agent` is not an object".to_owned()))?;
    let names = BUILT_IN_AGENTS
        .iter()
        .map(|s| (*s).to_owned())
        .chain(extra_agents.iter().cloned());
    for name in names {
        let agent = agents
            .entry(name)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or_else(|| {
                GateError::ConfigContent("an agent entry is not an object".to_owned())
            })?;
        let permission = agent.entry("permission").or_insert_with(|| json!({}));
        if !permission.is_object() {
            *permission = json!({});
        }
        let permission = permission.as_object_mut().expect("just made an object");
        for (kind, action) in &asks {
            permission.insert(kind.clone(), action.clone());
        }
    }

    Ok(vec![
        (
            "OPENCODE_PERMISSION".into(),
            Value::Object(asks).to_string().into(),
        ),
        (
            "OPENCODE_CONFIG_CONTENT".into(),
            Value::Object(content).to_string().into(),
        ),
    ])
}

/// Agents whose merged ruleset would still allow a gated kind: after the
/// last rule that makes every pattern of the kind ask (or deny), some rule
/// allows it again, or no such rule exists at all.
#[must_use]
pub fn still_allowed(gates: &[String], agents: &[AgentInfo]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for agent in agents {
        for kind in gates {
            let applies = |p: &str| p == kind || p == "*";
            let last_catch_all = agent.permission.iter().rposition(|r| {
                applies(&r.permission)
                    && r.pattern == "*"
                    && (r.action == "ask" || r.action == "deny")
            });
            let allowed_after = match last_catch_all {
                Some(i) => agent.permission[i + 1..]
                    .iter()
                    .any(|r| applies(&r.permission) && r.action == "allow"),
                None => true,
            };
            if allowed_after {
                out.push((agent.name.clone(), kind.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opencode::api::RuleInfo;

    fn rule(permission: &str, pattern: &str, action: &str) -> RuleInfo {
        RuleInfo {
            permission: permission.to_owned(),
            pattern: pattern.to_owned(),
            action: action.to_owned(),
        }
    }

    fn env_map(env: &[(OsString, OsString)]) -> std::collections::HashMap<String, Value> {
        env.iter()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    serde_json::from_str(&v.to_string_lossy()).expect("json"),
                )
            })
            .collect()
    }

    #[test]
    fn no_gates_change_nothing() {
        assert_eq!(server_env(&[], Some("{broken"), &[], &[]), Ok(Vec::new()));
    }

    #[test]
    fn gates_ask_at_the_top_level_and_for_every_agent_keeping_the_users_content() {
        let gates = vec!["bash".to_owned()];
        let env = server_env(
            &gates,
            Some(r#"{"agent":{"build":{"temperature":0.1}},"share":"disabled"}"#),
            &["reviewer".to_owned()],
            &[],
        )
        .expect("valid");
        let env = env_map(&env);
        assert_eq!(env["OPENCODE_PERMISSION"], json!({"bash": "ask"}));
        let content = &env["OPENCODE_CONFIG_CONTENT"];
        assert_eq!(content["share"], "disabled");
        assert_eq!(content["agent"]["build"]["temperature"], 0.1);
        for agent in ["build", "plan", "general", "explore", "reviewer"] {
            assert_eq!(
                content["agent"][agent]["permission"]["bash"], "ask",
                "{agent}"
            );
        }
    }

    #[test]
    fn the_guard_plugin_is_loaded_besides_the_users_plugins() {
        let env = server_env(
            &[],
            Some(r#"{"plugin":["opencode-wakatime"]}"#),
            &[],
            &["file:///tmp/g/gatekeep-guard.js".to_owned()],
        )
        .expect("valid");
        let env = env_map(&env);
        assert_eq!(
            env["OPENCODE_CONFIG_CONTENT"]["plugin"],
            json!(["opencode-wakatime", "file:///tmp/g/gatekeep-guard.js"])
        );
        assert!(!env.contains_key("OPENCODE_PERMISSION"), "nothing gated");
    }

    #[test]
    fn unreadable_config_content_is_refused() {
        let gates = vec!["bash".to_owned()];
        assert!(matches!(
            server_env(&gates, Some("{not json"), &[], &[]),
            Err(GateError::ConfigContent(_))
        ));
        assert!(matches!(
            server_env(&gates, Some("[1]"), &[], &[]),
            Err(GateError::ConfigContent(_))
        ));
    }

    #[test]
    fn an_agent_that_allows_after_the_last_ask_is_reported() {
        let gates = vec!["bash".to_owned()];
        let agents = vec![
            AgentInfo {
                name: "build".to_owned(),
                permission: vec![rule("*", "*", "allow"), rule("bash", "*", "ask")],
            },
            AgentInfo {
                name: "sneaky".to_owned(),
                permission: vec![rule("bash", "*", "ask"), rule("bash", "git *", "allow")],
            },
            AgentInfo {
                name: "silent".to_owned(),
                permission: vec![rule("edit", "*", "ask")],
            },
            AgentInfo {
                name: "strict".to_owned(),
                permission: vec![rule("*", "*", "deny")],
            },
        ];
        assert_eq!(
            still_allowed(&gates, &agents),
            vec![
                ("sneaky".to_owned(), "bash".to_owned()),
                ("silent".to_owned(), "bash".to_owned())
            ]
        );
    }
}
