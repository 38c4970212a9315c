//! A fake LLM for the real OpenCode: OpenAI-compatible streaming chat
//! completions on `127.0.0.1:0`, used through OpenCode's bundled
//! `@ai-sdk/openai-compatible` provider (see `real_opencode`).
//!
//! It runs on **its own thread and runtime**, so a test that blocks cannot
//! starve OpenCode's model calls.
//!
//! The answer is decided from the request alone, never from call order:
//! OpenCode's title request (sent without `tools`) interleaves with the
//! agent's requests, and a subagent's requests interleave with its parent's.
//! [`directives`] is the script every e2e test uses: the *prompt itself*
//! says which tool calls the model makes, e.g. `BASH<touch a> BASH<touch b>`
//! makes two parallel bash calls. A request whose last message is a tool
//! result gets plain text quoting the results, so a test can see what the
//! model was told (a deny reason, a command's output).
//!
//! Every request body is recorded.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// What the model answers to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Plain assistant text, then `finish_reason: stop`.
    Text(String),
    /// Tool calls in one assistant message (parallel calls when several),
    /// then `finish_reason: tool_calls`.
    Tools(Vec<ToolCall>),
}

/// One tool call: the tool's name and its JSON arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    pub arguments: Value,
}

impl ToolCall {
    #[must_use]
    pub fn bash(command: &str) -> Self {
        Self {
            name: "bash".to_owned(),
            arguments: json!({ "command": command, "description": format!("run {command}") }),
        }
    }

    #[must_use]
    pub fn write(path: &str, content: &str) -> Self {
        Self {
            name: "write".to_owned(),
            arguments: json!({ "filePath": path, "content": content }),
        }
    }

    #[must_use]
    pub fn edit(path: &str, old: &str, new: &str) -> Self {
        Self {
            name: "edit".to_owned(),
            arguments: json!({ "filePath": path, "oldString": old, "newString": new }),
        }
    }

    /// Ask the user a question (OpenCode's `question` tool), with two
    /// options.
    #[must_use]
    pub fn question(question: &str) -> Self {
        Self {
            name: "question".to_owned(),
            arguments: json!({
                "questions": [{
                    "question": question,
                    "header": "Question",
                    "options": [
                        { "label": "Yes", "description": "go ahead" },
                        { "label": "No", "description": "stop" },
                    ],
                }],
            }),
        }
    }

    /// Start a `general` subagent with `prompt`.
    #[must_use]
    pub fn task(description: &str, prompt: &str) -> Self {
        Self {
            name: "task".to_owned(),
            arguments: json!({
                "description": description,
                "prompt": prompt,
                "subagent_type": "general",
            }),
        }
    }
}

/// The title OpenCode gets for every session.
pub const TITLE: &str = "Fake run title";

/// Decides a [`Reply`] from a request body.
pub type Script = Arc<dyn Fn(&Value) -> Reply + Send + Sync>;

/// The directive script (module docs). In the text of the last user message:
///
/// - `BASH<command>`: a bash call;
/// - `WRITE<path|content>`: a write call (OpenCode wants an absolute path);
/// - `EDIT<path|old|new>`: an edit call;
/// - `QUESTION<text>`: a `question` call (the agent asks the user);
/// - `TASK<prompt>`: a `task` call starting a `general` subagent whose own
///   prompt is `prompt` with `[` `]` turned into `<` `>`, so a subagent can
///   be told `TASK<BASH[touch x]>`.
///
/// All directives of one message become parallel calls, in order. A request
/// without `tools` (title generation) gets [`TITLE`]. A request whose last
/// message is a tool result gets `after tools: <each result>`. Anything else
/// gets `nothing to do`.
#[must_use]
pub fn directives() -> Script {
    Arc::new(|body: &Value| {
        if body
            .get("tools")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        {
            return Reply::Text(TITLE.to_owned());
        }
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        if messages.last().is_some_and(|m| m["role"] == "tool") {
            let results: Vec<String> = messages
                .iter()
                .rev()
                .take_while(|m| m["role"] == "tool")
                .map(|m| content_text(&m["content"]))
                .collect();
            return Reply::Text(format!("after tools: {}", results.join(" | ")));
        }
        let Some(user) = messages.iter().rev().find(|m| m["role"] == "user") else {
            return Reply::Text("nothing to do".to_owned());
        };
        let calls = parse_directives(&content_text(&user["content"]));
        if calls.is_empty() {
            Reply::Text("nothing to do".to_owned())
        } else {
            Reply::Tools(calls)
        }
    })
}

/// The tool calls named by directives in `text`, in order.
#[must_use]
pub fn parse_directives(text: &str) -> Vec<ToolCall> {
    let mut calls = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        let word_start = rest[..open]
            .rfind(|c: char| !c.is_ascii_uppercase())
            .map_or(0, |i| i + 1);
        let word = &rest[word_start..open];
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        let inner = &rest[open + 1..open + close];
        let parts: Vec<&str> = inner.split('|').collect();
        match (word, parts.as_slice()) {
            ("BASH", _) => calls.push(ToolCall::bash(inner)),
            ("WRITE", [path, content]) => calls.push(ToolCall::write(path, content)),
            ("EDIT", [path, old, new]) => calls.push(ToolCall::edit(path, old, new)),
            ("QUESTION", _) => calls.push(ToolCall::question(inner)),
            ("TASK", _) => calls.push(ToolCall::task(
                "sub job",
                &inner.replace('[', "<").replace(']', ">"),
            )),
            _ => {}
        }
        rest = &rest[open + close + 1..];
    }
    calls
}

/// Message content as text: a string, or the text parts of a part list.
#[must_use]
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The `OpenAI` streaming chunks (SSE body) for `reply`.
#[must_use]
pub fn sse_body(reply: &Reply) -> String {
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "fake-model",
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        })
    };
    let chunks = match reply {
        Reply::Text(text) => vec![
            chunk(json!({ "role": "assistant", "content": text }), Value::Null),
            chunk(json!({}), json!("stop")),
        ],
        Reply::Tools(calls) => {
            let deltas: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, call)| {
                    json!({
                        "index": i,
                        "id": format!("call_{i}"),
                        "type": "function",
                        "function": { "name": call.name, "arguments": call.arguments.to_string() },
                    })
                })
                .collect();
            vec![
                chunk(
                    json!({ "role": "assistant", "content": null, "tool_calls": deltas }),
                    Value::Null,
                ),
                chunk(json!({}), json!("tool_calls")),
            ]
        }
    };
    let usage = json!({
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": "fake-model",
        "choices": [], "usage": { "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15 },
    });
    let mut out = String::new();
    for c in chunks.iter().chain(std::iter::once(&usage)) {
        out.push_str("data: ");
        out.push_str(&c.to_string());
        out.push_str("\n\n");
    }
    out.push_str("data: [DONE]\n\n");
    out
}

struct Shared {
    script: Script,
    requests: Mutex<Vec<Value>>,
}

/// A running fake LLM; stops when dropped.
pub struct FakeLlm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeLlm {
    /// Start with the [`directives`] script.
    #[must_use]
    pub fn start() -> Self {
        Self::with_script(directives())
    }

    #[must_use]
    pub fn with_script(script: Script) -> Self {
        let shared = Arc::new(Shared {
            script,
            requests: Mutex::new(Vec::new()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake LLM");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let app = Router::new()
            .route("/v1/chat/completions", post(complete))
            .with_state(Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name("fake-llm".to_owned())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fake LLM runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })
            .expect("spawn the fake LLM thread");
        Self {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The `baseURL` for OpenCode's provider config.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request body received so far, in arrival order.
    #[must_use]
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests.lock().expect("requests lock").clone()
    }

    /// The agent requests (those with tools), without title requests.
    #[must_use]
    pub fn agent_requests(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|b| {
                b.get("tools")
                    .and_then(Value::as_array)
                    .is_some_and(|t| !t.is_empty())
            })
            .collect()
    }

    /// The tool results the model was given, over all requests (each
    /// distinct content once).
    #[must_use]
    pub fn tool_results(&self) -> Vec<String> {
        let mut seen = Vec::new();
        for body in self.agent_requests() {
            for m in body["messages"].as_array().into_iter().flatten() {
                if m["role"] == "tool" {
                    let text = content_text(&m["content"]);
                    if !seen.contains(&text) {
                        seen.push(text);
                    }
                }
            }
        }
        seen
    }

    /// Wait until some recorded request satisfies `pred`; `None` after
    /// `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let start = Instant::now();
        loop {
            if let Some(found) = self.requests().into_iter().find(|b| pred(b)) {
                return Some(found);
            }
            if start.elapsed() > timeout {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn complete(State(shared): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    let reply = (shared.script)(&body);
    shared.requests.lock().expect("requests lock").push(body);
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        sse_body(&reply),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_become_parallel_calls_in_order() {
        let calls =
            parse_directives("do BASH<touch a> then WRITE</w/f|hi> EDIT</w/g|x|y> TASK<BASH[ls]>");
        let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["bash", "write", "edit", "task"]);
        assert_eq!(calls[0].arguments["command"], "touch a");
        assert_eq!(calls[1].arguments["filePath"], "/w/f");
        assert_eq!(calls[2].arguments["newString"], "y");
        assert_eq!(calls[3].arguments["prompt"], "BASH<ls>");
    }
}
