//! The OpenCode event stream (`GET /event`, server-sent events).
//!
//! [`subscribe`] returns only once the subscription is provably live: HTTP
//! 200 *and* the first `server.connected` frame received. A lazy client that
//! connects on first poll would open the stream after the prompt and miss
//! the first permission request (docs/design.md, "Start-up"), so the ordering is the
//! point of this module.
//!
//! The bytes go through a lossy UTF-8 decoder before the SSE parser:
//! `eventsource-stream` keeps an invalid byte in its buffer forever and
//! silently stops producing events, which would look like a hung agent.

use std::pin::Pin;
use std::time::Duration;

use futures_util::stream::{Stream, StreamExt};

use super::api::{Api, ApiError};
use super::wire::{Event, WireError};

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("could not open the OpenCode event stream: {0}")]
    Open(#[source] ApiError),
    #[error("OpenCode refused the event stream: HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the OpenCode event stream did not start within {0:?}")]
    SetupTimeout(Duration),
    #[error("the OpenCode event stream ended before server.connected")]
    EndedBeforeConnected,
    #[error("the OpenCode event stream began with {0} instead of server.connected")]
    NotConnectedFirst(String),
    #[error("the OpenCode event stream failed: {0}")]
    Transport(String),
    #[error("the OpenCode event stream is not valid server-sent events: {0}")]
    Syntax(String),
    #[error("no event (not even a heartbeat) from OpenCode for {}", humantime::format_duration(*.0))]
    Silent(Duration),
    /// One frame could not be read; the stream goes on.
    #[error(transparent)]
    Frame(#[from] WireError),
}

impl EventsError {
    /// Whether the stream is over after this error (as opposed to one bad
    /// frame that was skipped).
    #[must_use]
    pub fn is_fatal(&self) -> bool {
        !matches!(self, EventsError::Frame(_))
    }
}

type SseStream = Pin<
    Box<
        dyn Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

/// A live subscription. Dropping it closes the connection.
pub struct EventStream {
    inner: SseStream,
    done: bool,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// Open `GET /event?directory=…` and wait, bounded by the API's request
/// timeout, for HTTP 200 and the first `server.connected`.
pub async fn subscribe(api: &Api) -> Result<EventStream, EventsError> {
    subscribe_within(api, api.timeout()).await
}

/// [`subscribe`] with an explicit bound on the connection setup.
pub async fn subscribe_within(api: &Api, setup: Duration) -> Result<EventStream, EventsError> {
    let request = api.event_request().map_err(EventsError::Open)?;
    let connect = async {
        let resp = request
            .send()
            .await
            .map_err(|e| EventsError::Transport(e.without_url().to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(EventsError::Status {
                status: status.as_u16(),
                body: body.chars().take(300).collect(),
            });
        }
        let mut stream = EventStream::from_bytes(resp.bytes_stream());
        match stream.next().await {
            Some(Ok(Event::ServerConnected)) => Ok(stream),
            Some(Ok(other)) => Err(EventsError::NotConnectedFirst(other.kind().to_owned())),
            Some(Err(e)) => Err(e),
            None => Err(EventsError::EndedBeforeConnected),
        }
    };
    tokio::time::timeout(setup, connect)
        .await
        .map_err(|_| EventsError::SetupTimeout(setup))?
}

impl EventStream {
    /// Wrap any byte stream carrying SSE (the response body, or a test
    /// source).
    pub fn from_bytes<S, B>(bytes: S) -> EventStream
    where
        S: Stream<Item = Result<B, reqwest::Error>> + Send + 'static,
        B: AsRef<[u8]> + Send + 'static,
    {
        use eventsource_stream::Eventsource;
        let mut decoder = LossyUtf8::default();
        // `None` marks the end, so a dangling partial character is flushed
        // as U+FFFD instead of vanishing.
        let text = bytes
            .map(|chunk| chunk.map(Some))
            .chain(futures_util::stream::once(async { Ok(None) }))
            .map(move |chunk| {
                chunk.map(|bytes| match bytes {
                    Some(b) => decoder.decode(b.as_ref()),
                    None => decoder.finish(),
                })
            });
        EventStream {
            inner: Box::pin(text.eventsource()),
            done: false,
        }
    }

    /// The next event. `None` once the stream has ended (cleanly or after
    /// a fatal error, which is returned once first). Cancel-safe: dropping
    /// the future loses nothing.
    pub async fn next(&mut self) -> Option<Result<Event, EventsError>> {
        use eventsource_stream::EventStreamError as E;
        loop {
            if self.done {
                return None;
            }
            match self.inner.next().await {
                None => {
                    self.done = true;
                    return None;
                }
                Some(Ok(frame)) => {
                    // Data-less frames (comments, retry:, keep-alives) never
                    // reach here; whitespace-only data is not an event.
                    if frame.data.trim().is_empty() {
                        continue;
                    }
                    return Some(Event::parse(&frame.data).map_err(EventsError::Frame));
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(match e {
                        E::Transport(e) => EventsError::Transport(e.without_url().to_string()),
                        E::Utf8(e) => EventsError::Syntax(e.to_string()),
                        E::Parser(e) => EventsError::Syntax(e.to_string()),
                    }));
                }
            }
        }
    }
}

/// Incremental UTF-8 decoding that never fails: invalid bytes become U+FFFD
/// and a character split across chunks is carried to the next one.
#[derive(Default)]
struct LossyUtf8 {
    carry: Vec<u8>,
}

impl LossyUtf8 {
    fn decode(&mut self, chunk: &[u8]) -> String {
        self.run(chunk, false)
    }

    /// End of input: an incomplete character left over becomes U+FFFD.
    fn finish(&mut self) -> String {
        self.run(&[], true)
    }

    fn run(&mut self, chunk: &[u8], at_end: bool) -> String {
        let mut buf: Vec<u8> = std::mem::take(&mut self.carry);
        buf.extend_from_slice(chunk);
        let mut out = String::with_capacity(buf.len());
        let mut rest = &buf[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).expect("checked valid prefix"));
                    if let Some(len) = e.error_len() {
                        out.push(char::REPLACEMENT_CHARACTER);
                        rest = &after[len..];
                    } else if at_end {
                        out.push(char::REPLACEMENT_CHARACTER);
                        break;
                    } else {
                        // An incomplete character at the end of the chunk.
                        self.carry = after.to_vec();
                        break;
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(chunks: Vec<&'static [u8]>) -> EventStream {
        EventStream::from_bytes(futures_util::stream::iter(
            chunks.into_iter().map(Ok::<_, reqwest::Error>),
        ))
    }

    async fn all(mut s: EventStream) -> Vec<Result<Event, EventsError>> {
        let mut out = Vec::new();
        while let Some(ev) = s.next().await {
            out.push(ev);
        }
        out
    }

    #[tokio::test]
    async fn comments_retry_and_multiline_data() {
        let evs = all(source(vec![
            b": keep-alive comment\n\nretry: 1000\n\n",
            b"data: {\"type\":\"server.connected\",\ndata: \"properties\":{}}\n\n",
            b"id: 7\nevent: message\ndata: {\"type\":\"session.idle\",\"properties\":{\"sessionID\":\"ses_1\"}}\r\n\r\n",
        ]))
        .await;
        let evs: Vec<Event> = evs.into_iter().map(|e| e.expect("parses")).collect();
        assert_eq!(
            evs,
            vec![
                Event::ServerConnected,
                Event::SessionIdle {
                    session_id: "ses_1".into()
                }
            ]
        );
    }

    #[tokio::test]
    async fn frames_split_anywhere_including_inside_a_character() {
        // "é" is 0xC3 0xA9; split it across chunks.
        let evs = all(source(vec![
            b"da",
            b"ta: {\"type\":\"message.part.delta\",\"properties\":{\"sessionID\":\"s\",\"messageID\":\"m\",\"partID\":\"p\",\"field\":\"text\",\"delta\":\"caf\xC3",
            b"\xA9\"}}\n",
            b"\n",
        ]))
        .await;
        assert_eq!(evs.len(), 1);
        let Ok(Event::PartDelta { delta, .. }) = &evs[0] else {
            panic!("{evs:?}")
        };
        assert_eq!(delta, "café");
    }

    #[tokio::test]
    async fn invalid_utf8_does_not_stall_the_stream() {
        let evs = all(source(vec![
            b"data: {\"type\":\"message.part.delta\",\"properties\":{\"sessionID\":\"s\",\"messageID\":\"m\",\"partID\":\"p\",\"field\":\"text\",\"delta\":\"a\xFF\xFEb\"}}\n\n",
            b"data: {\"type\":\"server.heartbeat\",\"properties\":{}}\n\n",
        ]))
        .await;
        let evs: Vec<Event> = evs.into_iter().map(|e| e.expect("parses")).collect();
        assert_eq!(evs.len(), 2, "{evs:?}");
        assert!(matches!(&evs[0], Event::PartDelta { delta, .. } if delta == "a\u{FFFD}\u{FFFD}b"));
        assert_eq!(evs[1], Event::Heartbeat);
    }

    #[tokio::test]
    async fn a_bad_frame_is_an_error_and_the_stream_goes_on() {
        let evs = all(source(vec![
            b"data: not json\n\n",
            b"data: {\"type\":\"server.heartbeat\"}\n\n",
        ]))
        .await;
        assert_eq!(evs.len(), 2);
        assert!(matches!(&evs[0], Err(e) if !e.is_fatal()));
        assert!(matches!(&evs[1], Ok(Event::Heartbeat)));
    }

    #[tokio::test]
    async fn a_partial_character_at_the_very_end_is_replaced() {
        let evs = all(source(vec![
            b"data: {\"type\":\"server.heartbeat\"}\n\n",
            b"data: {\"type\":\"x\xE2\x82",
        ]))
        .await;
        // The unterminated last frame is dropped (SSE semantics); nothing
        // panics and the stream ends.
        assert_eq!(evs.len(), 1);
        assert!(matches!(evs[0], Ok(Event::Heartbeat)));
    }

    #[test]
    fn lossy_decoder_flushes_a_dangling_partial_character_at_end() {
        let mut d = LossyUtf8::default();
        assert_eq!(d.decode(b"ab\xE2\x82"), "ab");
        assert_eq!(d.decode(b""), "", "an empty chunk is not the end");
        assert_eq!(d.finish(), "\u{FFFD}");
        assert_eq!(d.decode(b"\xE2\x82\xAC"), "€");
    }
}

/// Hostile input on the wire: any bytes, split anywhere, never panic or
/// stall the stream, and the events in them come out whole and in order.
#[cfg(test)]
mod prop_tests {
    use proptest::prelude::*;

    use super::*;

    /// Cut `bytes` at the given points (taken modulo its length).
    fn chunks(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.sort_unstable();
        points.dedup();
        let mut out = Vec::new();
        let mut from = 0;
        for p in points {
            out.push(bytes[from..p].to_vec());
            from = p;
        }
        out.push(bytes[from..].to_vec());
        out
    }

    fn stream_of(chunks: Vec<Vec<u8>>) -> Vec<Result<Event, EventsError>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a test runtime");
        runtime.block_on(async {
            let mut stream = EventStream::from_bytes(futures_util::stream::iter(
                chunks.into_iter().map(Ok::<_, reqwest::Error>),
            ));
            let mut out = Vec::new();
            while let Some(event) = stream.next().await {
                out.push(event);
            }
            out
        })
    }

    /// Lines that carry no event: comments (also with invalid UTF-8),
    /// `retry:`, `id:`, `event:` and unknown fields.
    fn noise() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            ".{0,30}".prop_map(|s| format!(": {s}\n").into_bytes()),
            prop::collection::vec(any::<u8>(), 0..20).prop_map(|b| {
                let mut line = b":".to_vec();
                line.extend(b.into_iter().filter(|c| *c != b'\n' && *c != b'\r'));
                line.push(b'\n');
                line
            }),
            (0u32..100_000).prop_map(|n| format!("retry: {n}\n").into_bytes()),
            Just(b"retry: soon\n".to_vec()),
            "[a-z0-9]{0,10}".prop_map(|s| format!("id: {s}\n").into_bytes()),
            Just(b"event: message\n".to_vec()),
            Just(b"x-unknown: 1\n".to_vec()),
        ]
    }

    /// One event as text of a `message.part.delta`, its frame (with LF or
    /// CRLF line ends, data split over lines or not) and the event expected.
    fn event() -> impl Strategy<Value = (Vec<u8>, Event)> {
        ("[a-zA-Z0-9 é€😀]{0,40}", any::<bool>(), any::<bool>()).prop_map(|(delta, crlf, split)| {
            let json = serde_json::json!({ "type": "message.part.delta", "properties": {
                "sessionID": "ses_1", "messageID": "msg_1", "partID": "prt_1",
                "field": "text", "delta": delta } })
            .to_string();
            let eol = if crlf { "\r\n" } else { "\n" };
            // SSE joins multi-line data with "\n": split between JSON tokens.
            let data = if split {
                json.replacen(',', &format!(",{eol}data: "), 1)
            } else {
                json
            };
            let frame = format!("data: {data}{eol}{eol}").into_bytes();
            let expected = Event::PartDelta {
                session_id: "ses_1".into(),
                message_id: "msg_1".into(),
                part_id: "prt_1".into(),
                field: "text".into(),
                delta,
            };
            (frame, expected)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The decoder over any chunking gives exactly what decoding the
        /// whole at once would: nothing lost, nothing stuck in the carry.
        #[test]
        fn lossy_decoding_does_not_depend_on_chunking(
            bytes in prop::collection::vec(any::<u8>(), 0..200),
            cuts in prop::collection::vec(any::<usize>(), 0..10),
        ) {
            let mut decoder = LossyUtf8::default();
            let mut text = String::new();
            for chunk in chunks(&bytes, &cuts) {
                text.push_str(&decoder.decode(&chunk));
            }
            text.push_str(&decoder.finish());
            prop_assert_eq!(text, String::from_utf8_lossy(&bytes));
        }

        /// Events between comments, `retry:` and other fields, in any
        /// chunking, come out whole and in order.
        #[test]
        fn events_survive_noise_and_any_chunking(
            items in prop::collection::vec((prop::collection::vec(noise(), 0..3), event()), 1..6),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut bytes = Vec::new();
            let mut expected = Vec::new();
            for (noise, (frame, event)) in items {
                for line in noise {
                    bytes.extend(line);
                }
                // Noise lines form their own (empty) frame.
                bytes.push(b'\n');
                bytes.extend(frame);
                expected.push(event);
            }
            let got: Vec<Event> = stream_of(chunks(&bytes, &cuts))
                .into_iter()
                .map(|e| e.map_err(|e| TestCaseError::fail(e.to_string())))
                .collect::<Result<_, _>>()?;
            prop_assert_eq!(got, expected);
        }

        /// Any bytes at all: the stream ends, without a panic, and every
        /// bad frame is a skippable error (never a fatal one that would end
        /// a live run).
        #[test]
        fn arbitrary_bytes_never_panic_or_end_the_stream_early(
            bytes in prop::collection::vec(prop_oneof![
                4 => any::<u8>(),
                1 => Just(b'\n'),
                1 => prop::sample::select(b"data: {}:\"".to_vec()),
            ], 0..400),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            for event in stream_of(chunks(&bytes, &cuts)) {
                if let Err(e) = event {
                    prop_assert!(!e.is_fatal(), "{e}");
                }
            }
        }
    }
}
