//! Merge cost (issue 21): what one non-streaming client of a streamed answer costs the gateway
//! against one streaming client of the same answer, per dialect, in this process (no socket, no
//! runtime, no flight: only the work that differs between the two).
//!
//! ```text
//! cargo run --release -p streamflight-gateway --example merge_cost
//! ```
//!
//! The answer is 2,000 tokens, one text delta each, plus the dialect's own opening and closing
//! events, in the shapes and order of the simulated model (made here: the model is private),
//! each classified by its dialect (`Dialect::classify`) as an upstream's event is on arrival: the
//! events a flight stores. Then, as the gateway's `answer` module does for each client:
//!
//! - forward: a frame per event (`sse::frame_with_id`, its `id:` and `event:` lines included),
//!   and Chat's `[DONE]` frame; each frame is dropped at once, as a written one is;
//! - merge: the dialect's `Merge::push` per event, `finish`, and the JSON body
//!   (`serde_json::to_vec`) the client is sent.
//!
//! With the default feature `jemalloc`, the allocator is the binary's, with its settings. Each
//! run times both, in turn, on the same events; the figures are medians over the runs,
//! after a few untimed ones. Timings are the machine's and noisy; nothing here asserts one.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use streamflight_gateway::dialect::{Api, Class};
use streamflight_gateway::flight::Event;
use streamflight_gateway::sse;

/// The binary's allocator and settings (`main.rs`): the cost of an allocation is part of both
/// paths, and glibc's differs.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// SAFETY: as in main.rs, the symbol jemalloc reads is a pointer to a NUL-terminated string.
#[cfg(feature = "jemalloc")]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &u8 = &streamflight_gateway::JEMALLOC_CONF[0];

/// How big an answer and how many runs.
#[derive(Debug, Parser)]
#[command(about = "The cost of merging an answer for a non-streaming client against forwarding it")]
struct Options {
    /// Tokens of the answer: one text-delta event each.
    #[arg(long, default_value_t = 2000)]
    tokens: usize,
    /// Timed runs per dialect.
    #[arg(long, default_value_t = 50)]
    runs: usize,
    /// Untimed runs first: caches and the allocator warm.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
}

fn main() {
    let options = Options::parse();
    let runs = options.runs.max(1);
    println!(
        "merge cost: one answer of {} tokens, forwarded to a streaming client against merged for a non-streaming \
         one; medians of {runs} runs after {} untimed; us",
        options.tokens, options.warmup
    );
    println!(
        "| dialect | events | frames (KB) | body (KB) | forward | merge: push | finish + body | merge | per event: \
         forward, merge (ns) | **merge / forward** |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for name in ["chat", "responses", "messages"] {
        let api = Api::named(name).expect("a dialect the gateway coalesces");
        let text: String = (0..options.tokens).map(word).collect();
        let events = stored(api, sent(name, &text, options.tokens));
        check(api, &events, &text);
        let (mut forwarded, mut pushed, mut merged) = (Vec::new(), Vec::new(), Vec::new());
        let (mut frame_bytes, mut body_bytes) = (0, 0);
        for run in 0..options.warmup + runs {
            let (forward_time, frames) = forward(api, &events);
            let (push_time, merge_time, body) = merge(api, &events);
            (frame_bytes, body_bytes) = (frames, body);
            if run >= options.warmup {
                forwarded.push(forward_time);
                pushed.push(push_time);
                merged.push(merge_time);
            }
        }
        let [forward, push, merge] = [forwarded, pushed, merged].map(median);
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let per_event = |d: Duration| d.as_secs_f64() * 1e9 / events.len() as f64;
        println!(
            "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0}, {:.0} | **{:.1}** |",
            events.len(),
            frame_bytes as f64 / 1024.0,
            body_bytes as f64 / 1024.0,
            us(forward),
            us(push),
            us(merge - push),
            us(merge),
            per_event(forward),
            per_event(merge),
            merge.as_secs_f64() / forward.as_secs_f64(),
        );
    }
}

/// The words of the answer: token `k` of every dialect's.
fn word(k: usize) -> String {
    const WORDS: [&str; 8] = ["the", "flight", "answers", "every", "client", "at", "once", "quietly"];
    let space = if k == 0 { "" } else { " " };
    format!("{space}{}", WORDS[k % WORDS.len()])
}

/// The events (`event:` name, data) an upstream sends for an answer of `tokens` tokens whose
/// text is `text`, in the shapes and order of the simulated model (and of the real APIs): Chat's
/// role chunk, a chunk per token, the finish and usage chunks and `[DONE]`; the Responses API's
/// `response.created` ... `response.completed` with the whole response; Anthropic's
/// `message_start` ... `message_stop`.
fn sent(dialect: &str, text: &str, tokens: usize) -> Vec<(Option<&'static str>, String)> {
    let mut events = Vec::with_capacity(tokens + 9);
    match dialect {
        "chat" => {
            let head = r#"{"id":"chatcmpl-NFkzrXuh44eK2KlWtzkLUj0K","object":"chat.completion.chunk","created":1796591544,"model":"m","system_fingerprint":"fp_streamflight_sim","choices":["#;
            let mut chunk = |choice: &str, usage: &str| {
                events.push((None, format!(r#"{head}{choice}],"usage":{usage}}}"#)))
            };
            let choice = |delta: &str, finish: &str| {
                format!(r#"{{"index":0,"delta":{{{delta}}},"logprobs":null,"finish_reason":{finish}}}"#)
            };
            chunk(&choice(r#""role":"assistant","content":"","refusal":null"#, "null"), "null");
            for k in 0..tokens {
                chunk(&choice(&format!(r#""content":"{}""#, word(k)), "null"), "null");
            }
            chunk(&choice("", r#""stop""#), "null");
            let total = tokens + 2;
            chunk(
                "",
                &format!(r#"{{"prompt_tokens":2,"completion_tokens":{tokens},"total_tokens":{total}}}"#),
            );
            events.push((None, "[DONE]".to_owned()));
        }
        "responses" => {
            let item_id = "msg_944f4ecb8f5e4e84eb86d8cf5ec1c5f2cf29db67ab93313d";
            let part = |text: &str| {
                format!(r#"{{"type":"output_text","annotations":[],"logprobs":[],"text":"{text}"}}"#)
            };
            let item = |status: &str, content: &str| {
                format!(
                    r#"{{"id":"{item_id}","type":"message","status":"{status}","content":[{content}],"role":"assistant"}}"#
                )
            };
            let response = |status: &str, output: &str, usage: &str| {
                format!(
                    r#"{{"id":"resp_2689edf9f06833abbcd49f1f7b2e149cccda69b577c9c153","object":"response","created_at":1796591544,"status":"{status}","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"m","parallel_tool_calls":true,"previous_response_id":null,"store":true,"temperature":1.0,"text":{{"format":{{"type":"text"}}}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","metadata":{{}},"output":[{output}],"usage":{usage}}}"#
                )
            };
            let in_text = format!(r#""item_id":"{item_id}","output_index":0,"content_index":0"#);
            let mut sequence = 0;
            let mut event = |name: &'static str, rest: String| {
                events.push((
                    Some(name),
                    format!(r#"{{"type":"{name}","sequence_number":{sequence},{rest}}}"#),
                ));
                sequence += 1;
            };
            event("response.created", format!(r#""response":{}"#, response("in_progress", "", "null")));
            event("response.in_progress", format!(r#""response":{}"#, response("in_progress", "", "null")));
            event(
                "response.output_item.added",
                format!(r#""output_index":0,"item":{}"#, item("in_progress", "")),
            );
            event("response.content_part.added", format!(r#"{in_text},"part":{}"#, part("")));
            for k in 0..tokens {
                event(
                    "response.output_text.delta",
                    format!(r#"{in_text},"delta":"{}","logprobs":[]"#, word(k)),
                );
            }
            event("response.output_text.done", format!(r#"{in_text},"text":"{text}","logprobs":[]"#));
            event("response.content_part.done", format!(r#"{in_text},"part":{}"#, part(text)));
            let done = item("completed", &part(text));
            event("response.output_item.done", format!(r#""output_index":0,"item":{done}"#));
            let usage = format!(
                r#"{{"input_tokens":2,"input_tokens_details":{{"cached_tokens":0}},"output_tokens":{tokens},"output_tokens_details":{{"reasoning_tokens":0}},"total_tokens":{}}}"#,
                tokens + 2
            );
            event("response.completed", format!(r#""response":{}"#, response("completed", &done, &usage)));
        }
        "messages" => {
            let mut event = |name: &'static str, rest: String| {
                events.push((Some(name), format!(r#"{{"type":"{name}"{rest}}}"#)));
            };
            event(
                "message_start",
                r#","message":{"id":"msg_HFQqcMZPd9RLexryAp8cwmKy","type":"message","role":"assistant","model":"m","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":2,"output_tokens":1}}"#.to_owned(),
            );
            event(
                "content_block_start",
                r#","index":0,"content_block":{"type":"text","text":""}"#.to_owned(),
            );
            for k in 0..tokens {
                event(
                    "content_block_delta",
                    format!(r#","index":0,"delta":{{"type":"text_delta","text":"{}"}}"#, word(k)),
                );
            }
            event("content_block_stop", r#","index":0"#.to_owned());
            event(
                "message_delta",
                format!(
                    r#","delta":{{"stop_reason":"end_turn","stop_sequence":null}},"usage":{{"output_tokens":{tokens}}}"#
                ),
            );
            event("message_stop", String::new());
        }
        other => unreachable!("no events made for {other}"),
    }
    events
}

/// What a flight stores of `sent`: each event classified by the dialect as it is on arrival
/// (Chat's `[DONE]` ends the answer and is not stored; the others' last event is).
fn stored(api: Api, sent: Vec<(Option<&'static str>, String)>) -> Vec<Event> {
    let mut events = Vec::with_capacity(sent.len());
    for (name, data) in sent {
        match api.classify(name.map(|name| Bytes::from_static(name.as_bytes())), Bytes::from(data)) {
            Class::Keep(event) => events.push(event),
            Class::KeepAlive => {}
            Class::Last(last) => {
                events.extend(last);
                break;
            }
            Class::Failure(event) => panic!("{api:?}: a failure event: {event:?}"),
        }
    }
    events
}

/// That the events merge into an answer with the whole text, once, untimed.
fn check(api: Api, events: &[Event], text: &str) {
    let mut merge = api.merge();
    for event in events {
        merge.push(event).unwrap_or_else(|e| panic!("{api:?}: an event that does not merge: {e:?}"));
    }
    let body = merge.finish().unwrap_or_else(|e| panic!("{api:?}: no merged answer: {e:?}"));
    assert!(String::from_utf8_lossy(&body).contains(text), "{api:?}: the merged answer lacks the text");
}

/// A streaming client's share: every event framed, then the dialect's own last frame, if it has
/// one. Returns the time and the bytes framed.
fn forward(api: Api, events: &[Event]) -> (Duration, usize) {
    let start = Instant::now();
    let mut bytes = 0;
    for (index, event) in events.iter().enumerate() {
        bytes += black_box(sse::frame_with_id(index as u64, event.name.as_deref(), &event.data)).len();
    }
    if let Some(done) = api.done() {
        bytes += black_box(sse::frame_with_id(events.len() as u64, None, done)).len();
    }
    (start.elapsed(), bytes)
}

/// A non-streaming client's share: the merge, event by event, then the object and its body.
/// Returns the time to the last push, the whole time (the object and body dropped within it,
/// as the gateway drops them once sent) and the body's length.
fn merge(api: Api, events: &[Event]) -> (Duration, Duration, usize) {
    let start = Instant::now();
    let mut merge = api.merge();
    for event in events {
        if let Err(e) = merge.push(event) {
            panic!("{api:?}: an event that does not merge: {e:?}");
        }
    }
    let pushed = start.elapsed();
    let body = black_box(merge.finish().unwrap_or_else(|e| panic!("{api:?}: no merged answer: {e:?}")));
    let length = body.len();
    drop(body);
    (pushed, start.elapsed(), length)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}
