//! What the workspace's configuration makes OpenCode ask for, layer by
//! layer (read by [`crate::opencode::config`]), and which agents' own rules
//! would undo it.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::Report;
use crate::opencode::config::{self, LayerKind};

/// Permission kinds OpenCode allows unless configured otherwise (its
/// `build` agent asks only for `external_directory` and `doom_loop`).
const DANGEROUS_KINDS: &[&str] = &["bash", "edit", "webfetch"];
const DEFAULT_ASK: &[&str] = &["external_directory", "doom_loop"];

/// What the configuration layers say about one permission kind.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// `ask`, `allow` or `deny`; `mixed` when patterns differ.
    action: String,
    /// Which layer set it last.
    source: String,
}

/// The permission rules of every layer, later layers winning.
#[derive(Debug, Default)]
struct Permissions {
    /// Kind → rule; `*` for "every kind".
    kinds: BTreeMap<String, Rule>,
    /// (agent, kind) → rule, from `agent.<name>.permission`. These beat the
    /// top-level `permission` and `OPENCODE_PERMISSION` for that agent
    /// (docs/opencode-facts.md), so they can undo `--gate`.
    agents: BTreeMap<(String, String), Rule>,
    notes: Vec<String>,
}

impl Permissions {
    /// Merge a `permission` value from `source`.
    fn merge(&mut self, value: &Value, source: &str) {
        match value {
            Value::String(action) => {
                // One action for everything: it replaces every rule.
                self.kinds.clear();
                self.kinds.insert(
                    "*".to_owned(),
                    Rule {
                        action: action.clone(),
                        source: source.to_owned(),
                    },
                );
            }
            Value::Object(map) => {
                for (kind, rule) in map {
                    let action = match rule {
                        Value::String(a) => a.clone(),
                        Value::Object(patterns) => {
                            let mut actions: Vec<&str> =
                                patterns.values().filter_map(Value::as_str).collect();
                            actions.sort_unstable();
                            actions.dedup();
                            match actions.as_slice() {
                                [one] => (*one).to_owned(),
                                [] => continue,
                                _ if actions.contains(&"ask") => "ask (some patterns)".to_owned(),
                                _ => "mixed".to_owned(),
                            }
                        }
                        _ => continue,
                    };
                    self.kinds.insert(
                        kind.clone(),
                        Rule {
                            action,
                            source: source.to_owned(),
                        },
                    );
                }
            }
            _ => self.notes.push(format!(
                "{source}: `permission` is neither a string nor an object"
            )),
        }
    }

    /// Merge the `agent.<name>.permission` rules of a config from `source`.
    fn merge_agents(&mut self, config: &Value, source: &str) {
        let Some(agents) = config.get("agent").and_then(Value::as_object) else {
            return;
        };
        for (name, agent) in agents {
            let Some(permission) = agent.get("permission") else {
                continue;
            };
            let mut one = Permissions::default();
            one.merge(permission, source);
            self.notes.append(&mut one.notes);
            for (kind, rule) in one.kinds {
                self.agents.insert((name.clone(), kind), rule);
            }
        }
    }

    /// The action for `kind` after every layer.
    fn action(&self, kind: &str) -> Option<&Rule> {
        self.kinds.get(kind).or_else(|| self.kinds.get("*"))
    }
}

/// Every configuration layer OpenCode reads, in its order (see
/// [`config::layers`]), merged; a layer that does not parse is a failure.
fn load_layers(workspace: &Path, report: &mut Report) -> Permissions {
    let mut layers = Permissions::default();
    for layer in config::layers(workspace) {
        let value = match layer.value {
            Ok(value) => value,
            Err(err) => {
                let fix = match layer.kind {
                    LayerKind::File => {
                        "fix the file: OpenCode refuses to start with a broken config".to_owned()
                    }
                    LayerKind::ConfigContent | LayerKind::Permission => {
                        format!("fix or unset {}", layer.source)
                    }
                };
                report.fail(&format!("{} is not valid JSON: {err}", layer.source), &fix);
                continue;
            }
        };
        match layer.kind {
            LayerKind::Permission => layers.merge(&value, &layer.source),
            LayerKind::File | LayerKind::ConfigContent => {
                if let Some(permission) = value.get("permission") {
                    layers.merge(permission, &layer.source);
                }
                layers.merge_agents(&value, &layer.source);
            }
        }
    }
    for note in std::mem::take(&mut layers.notes) {
        report.warn(&note, "see https://opencode.ai/docs/permissions");
    }
    layers
}

pub(super) fn check(workspace: &Path, gates: &[String], report: &mut Report) {
    let layers = load_layers(workspace, report);

    let mut asks: Vec<String> = Vec::new();
    let mut allowed: Vec<String> = Vec::new();
    let mut kinds: Vec<String> = DANGEROUS_KINDS
        .iter()
        .chain(DEFAULT_ASK)
        .map(|k| (*k).to_owned())
        .collect();
    kinds.extend(layers.kinds.keys().filter(|k| *k != "*").cloned());
    kinds.extend(gates.iter().cloned());
    kinds.sort();
    kinds.dedup();
    for kind in &kinds {
        let forced = gates.contains(kind);
        let rule = layers.action(kind);
        let (action, source) = match (forced, rule) {
            (true, _) => ("ask".to_owned(), "--gate".to_owned()),
            (false, Some(rule)) => (rule.action.clone(), rule.source.clone()),
            (false, None) if DEFAULT_ASK.contains(&kind.as_str()) => {
                ("ask".to_owned(), "OpenCode default".to_owned())
            }
            (false, None) => ("allow".to_owned(), "OpenCode default".to_owned()),
        };
        let entry = format!("{kind} ({source})");
        if action.starts_with("ask") {
            asks.push(if action == "ask" {
                entry
            } else {
                format!("{kind}: {action} ({source})")
            });
        } else if action == "allow" {
            allowed.push(entry);
        }
    }
    report.ok(&format!(
        "workspace {}: OpenCode will ask for {}",
        workspace.display(),
        if asks.is_empty() {
            "nothing".to_owned()
        } else {
            asks.join(", ")
        }
    ));
    if !allowed.is_empty() {
        println!("     runs without asking: {}", allowed.join(", "));
    }
    check_agent_rules(&layers, gates, report);
    let everything_allowed =
        layers.kinds.get("*").is_some_and(|r| r.action == "allow") && gates.is_empty();
    let dangerous_gated = DANGEROUS_KINDS.iter().any(|k| {
        gates.iter().any(|g| g == k)
            || layers
                .action(k)
                .is_some_and(|r| r.action.starts_with("ask"))
    });
    if everything_allowed {
        report.warn(
            "the configuration allows everything: no tool call will reach a human",
            "run with --gate bash --gate edit (forced to ask for this run), or set \
             \"permission\": {\"bash\": \"ask\", \"edit\": \"ask\"} in opencode.json",
        );
    } else if !dangerous_gated {
        report.warn(
            "nothing dangerous is gated: bash, edit and webfetch run without asking",
            "run with --gate bash --gate edit, or set \"permission\": {\"bash\": \"ask\"} in opencode.json",
        );
    }
}

/// Agent-level rules beat the top-level `permission` and
/// `OPENCODE_PERMISSION`: an agent that allows a kind the config asks for
/// runs it unasked. `--gate` overrides agent rules for the run (and refuses
/// to start when an agent still allows a gated kind), so those are notes.
fn check_agent_rules(layers: &Permissions, gates: &[String], report: &mut Report) {
    for ((agent, kind), rule) in &layers.agents {
        let forced = gates.iter().any(|g| g == kind) || (kind == "*" && !gates.is_empty());
        let configured_ask = layers
            .action(kind)
            .is_some_and(|r| r.action.starts_with("ask"));
        let allows = !(rule.action.starts_with("ask") || rule.action == "deny");
        if !allows {
            println!(
                "     agent `{agent}`: {kind} is {} ({})",
                rule.action, rule.source
            );
        } else if forced {
            println!(
                "     agent `{agent}` allows {kind} ({}); --gate overrides it for the run",
                rule.source
            );
        } else if configured_ask || kind == "*" {
            report.warn(
                &format!(
                    "agent `{agent}` allows {kind} ({}): agent rules beat `permission` and \
                     OPENCODE_PERMISSION, so `{agent}` runs {kind} without asking",
                    rule.source
                ),
                &format!(
                    "run with --gate {kind}, or set agent.{agent}.permission.{kind} to \"ask\" \
                     (or remove it)"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn agent_rules_are_kept_per_agent() {
        let mut p = Permissions::default();
        p.merge_agents(
            &json!({"agent": {"general": {"permission": {"bash": "allow"}}, "plan": {}}}),
            "opencode.json",
        );
        let rule = p
            .agents
            .get(&("general".to_owned(), "bash".to_owned()))
            .expect("the general agent's rule");
        assert_eq!(
            (rule.action.as_str(), rule.source.as_str()),
            ("allow", "opencode.json")
        );
        assert_eq!(p.agents.len(), 1);
    }

    #[test]
    fn later_layers_win_and_a_string_applies_to_every_kind() {
        let mut p = Permissions::default();
        p.merge(&json!({"bash": "ask", "edit": "allow"}), "opencode.json");
        p.merge(
            &json!({"bash": {"*": "ask", "git status": "allow"}}),
            "OPENCODE_PERMISSION",
        );
        assert_eq!(
            p.action("bash").map(|r| r.action.as_str()),
            Some("ask (some patterns)")
        );
        assert_eq!(
            p.action("edit").map(|r| r.source.as_str()),
            Some("opencode.json")
        );
        p.merge(&json!("allow"), "OPENCODE_CONFIG_CONTENT");
        assert_eq!(p.action("bash").map(|r| r.action.as_str()), Some("allow"));
    }
}
