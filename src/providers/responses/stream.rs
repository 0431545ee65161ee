//! OpenAI chat chunks -> Responses stream events (provider-formats.md 1.8), for `/v1/responses`
//! clients served by translation: `response.created` and `response.in_progress`, then per
//! output item `response.output_item.added`, its deltas (`response.output_text.delta` after
//! `response.content_part.added`, `response.function_call_arguments.delta`, reasoning summary
//! deltas), its `.done` events and `response.output_item.done`, and last `response.completed`
//! (or `response.incomplete`) carrying the whole output and usage. Each event is
//! `event: <type>` + `data: {"type":<type>,"sequence_number":n,...}`.
//! Invariant: sequence numbers count up from 0 without gaps, every added item is done before
//! the terminal event, and the stream ends with exactly one `response.completed`,
//! `response.incomplete` or `response.failed`. The answer kept for the terminal event is
//! bounded by `MAX_ANSWER_BYTES`; a longer one fails the stream.

use super::{write_call_item, write_message_item, write_reasoning_item, write_response, write_text_part};
use super::{Ids, ResponseObject, Status};
use std::ops::ControlFlow;

use crate::codec::sse::Event;
use crate::providers::chat_stream_in::{self, ChatDeltas, ChatEvent};
use crate::providers::openai::ToolCallDelta;
use crate::providers::write;
use crate::providers::StreamHandler;
use crate::usage::Usage;

/// Largest answer (text, reasoning and arguments together) a translated stream keeps for its
/// `.done` events and `response.completed`; as `providers::WholeBody` bounds whole answers.
pub const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug)]
enum Kind {
    Message,
    Reasoning,
    Call { call_id: String, name: String, index: u32 },
}

#[derive(Debug)]
struct Item {
    id: String,
    kind: Kind,
    /// Text, reasoning text or arguments so far.
    text: String,
    done: bool,
}

pub struct ChatToResponses {
    model: String,
    ids: Ids,
    created_at: u64,
    seq: u64,
    started: bool,
    /// The terminal event went out.
    done: bool,
    /// ... and it was `response.failed`.
    failed: bool,
    items: Vec<Item>,
    finish: Option<String>,
    usage: Usage,
    kept: usize,
    /// `MAX_ANSWER_BYTES`, lower in tests.
    max_kept: usize,
}

impl ChatToResponses {
    /// `model`: shown until (and unless) the upstream names its own.
    pub fn new(model: &str) -> Self {
        Self::with_ids(model, Ids::new(), write::unix_now())
    }

    /// With given ids and creation time, so two runs give the same bytes.
    pub fn with_ids(model: &str, ids: Ids, created_at: u64) -> Self {
        ChatToResponses {
            model: model.to_owned(),
            ids,
            created_at,
            seq: 0,
            started: false,
            done: false,
            failed: false,
            items: Vec::new(),
            finish: None,
            usage: Usage::default(),
            kept: 0,
            max_kept: MAX_ANSWER_BYTES,
        }
    }

    /// A lower bound on the answer kept (tests).
    pub fn keeping_at_most(mut self, bytes: usize) -> Self {
        self.max_kept = bytes;
        self
    }

    /// `event: <kind>` and the opening of its data, up to and including the sequence number.
    fn open(&mut self, out: &mut String, kind: &str) {
        out.push_str("event: ");
        out.push_str(kind);
        out.push_str("\ndata: {\"type\":\"");
        out.push_str(kind);
        out.push_str("\",\"sequence_number\":");
        write::number(out, self.seq);
        self.seq += 1;
    }

    /// An item event: `output_index` and, with `item_id`, the item's id.
    fn open_item(&mut self, out: &mut String, kind: &str, index: usize, with_id: bool) {
        self.open(out, kind);
        out.push_str(",\"output_index\":");
        write::number(out, index as u64);
        if with_id {
            out.push(',');
            let id = self.items.get(index).map_or("", |i| i.id.as_str());
            write::field_str(out, "item_id", id);
        }
    }

    fn response(&self, out: &mut String, status: Status, error: Option<(&str, &str)>) {
        let mut output = String::from("[");
        if status != Status::InProgress {
            let item_status = if status == Status::Failed {
                "incomplete"
            } else {
                "completed"
            };
            for (i, item) in self.items.iter().enumerate() {
                if i > 0 {
                    output.push(',');
                }
                write_item(&mut output, item, item_status);
            }
        }
        output.push(']');
        let usage = (status != Status::InProgress).then_some(&self.usage);
        write_response(
            out,
            &ResponseObject {
                id: &self.ids.response(),
                model: &self.model,
                created_at: self.created_at,
                status,
                output: &output,
                usage,
                error,
            },
        );
    }

    fn start(&mut self, out: &mut String) {
        if self.started {
            return;
        }
        self.started = true;
        for kind in ["response.created", "response.in_progress"] {
            self.open(out, kind);
            out.push_str(",\"response\":");
            self.response(out, Status::InProgress, None);
            out.push_str("}\n\n");
        }
    }

    /// The open item of this kind (messages and reasoning: the last one, if not done).
    fn last_open(&self, want: fn(&Kind) -> bool) -> Option<usize> {
        let i = self.items.len().checked_sub(1)?;
        let item = self.items.get(i)?;
        (!item.done && want(&item.kind)).then_some(i)
    }

    fn add(&mut self, out: &mut String, kind: Kind) -> usize {
        let index = self.items.len();
        let prefix = match kind {
            Kind::Message => "msg",
            Kind::Reasoning => "rs",
            Kind::Call { .. } => "fc",
        };
        self.items.push(Item {
            id: self.ids.item(prefix, index),
            kind,
            text: String::new(),
            done: false,
        });
        self.open_item(out, "response.output_item.added", index, false);
        out.push_str(",\"item\":");
        if let Some(item) = self.items.get(index) {
            write_item(out, item, "in_progress");
        }
        out.push_str("}\n\n");
        match self.items.get(index).map(|i| &i.kind) {
            Some(Kind::Message) => {
                self.open_item(out, "response.content_part.added", index, true);
                out.push_str(",\"content_index\":0,\"part\":");
                write_text_part(out, "");
                out.push_str("}\n\n");
            }
            Some(Kind::Reasoning) => {
                self.open_item(out, "response.reasoning_summary_part.added", index, true);
                out.push_str(",\"summary_index\":0,\"part\":{\"type\":\"summary_text\",\"text\":\"\"}}\n\n");
            }
            _ => {}
        }
        index
    }

    fn close(&mut self, out: &mut String, index: usize) {
        let Some(item) = self.items.get_mut(index).filter(|i| !i.done) else {
            return;
        };
        item.done = true;
        let text = std::mem::take(&mut item.text);
        let (kind, call) = match &item.kind {
            Kind::Message => (0, None),
            Kind::Reasoning => (1, None),
            Kind::Call { name, .. } => (2, Some(name.clone())),
        };
        match (kind, call) {
            (0, _) => {
                self.open_item(out, "response.output_text.done", index, true);
                out.push_str(",\"content_index\":0,");
                write::field_str(out, "text", &text);
                out.push_str(",\"logprobs\":[]}\n\n");
                self.open_item(out, "response.content_part.done", index, true);
                out.push_str(",\"content_index\":0,\"part\":");
                write_text_part(out, &text);
                out.push_str("}\n\n");
            }
            (1, _) => {
                self.open_item(out, "response.reasoning_summary_text.done", index, true);
                out.push_str(",\"summary_index\":0,");
                write::field_str(out, "text", &text);
                out.push_str("}\n\n");
                self.open_item(out, "response.reasoning_summary_part.done", index, true);
                out.push_str(",\"summary_index\":0,\"part\":{\"type\":\"summary_text\",");
                write::field_str(out, "text", &text);
                out.push_str("}}\n\n");
            }
            (_, name) => {
                self.open_item(out, "response.function_call_arguments.done", index, true);
                out.push(',');
                write::field_str(out, "name", name.as_deref().unwrap_or(""));
                out.push(',');
                write::field_str(out, "arguments", &text);
                out.push_str("}\n\n");
            }
        }
        if let Some(item) = self.items.get_mut(index) {
            item.text = text;
        }
        self.open_item(out, "response.output_item.done", index, false);
        out.push_str(",\"item\":");
        if let Some(item) = self.items.get(index) {
            write_item(out, item, "completed");
        }
        out.push_str("}\n\n");
    }

    /// Keeps `delta` on item `index` and sends it as the item's delta event.
    fn delta(&mut self, out: &mut String, index: usize, delta: &str) {
        if delta.is_empty() {
            return;
        }
        self.kept += delta.len();
        if self.kept > self.max_kept {
            let message = format!("the answer is longer than rotor translates ({} bytes)", self.max_kept);
            self.fail(out, &message);
            return;
        }
        let Some(item) = self.items.get_mut(index) else { return };
        item.text.push_str(delta);
        let (kind, extra) = match item.kind {
            Kind::Message => ("response.output_text.delta", ",\"content_index\":0,"),
            Kind::Reasoning => ("response.reasoning_summary_text.delta", ",\"summary_index\":0,"),
            Kind::Call { .. } => ("response.function_call_arguments.delta", ","),
        };
        self.open_item(out, kind, index, true);
        out.push_str(extra);
        write::field_str(out, "delta", delta);
        if kind == "response.output_text.delta" {
            out.push_str(",\"logprobs\":[]");
        }
        out.push_str("}\n\n");
    }

    fn text(&mut self, out: &mut String, reasoning: bool, text: &str) {
        // `done`: an earlier delta of this chunk overflowed and failed the stream.
        if text.is_empty() || self.done {
            return;
        }
        let want: fn(&Kind) -> bool = if reasoning {
            |k| matches!(k, Kind::Reasoning)
        } else {
            |k| matches!(k, Kind::Message)
        };
        let index = match self.last_open(want) {
            Some(i) => i,
            None => {
                self.close_all_but_calls(out);
                self.add(out, if reasoning { Kind::Reasoning } else { Kind::Message })
            }
        };
        self.delta(out, index, text);
    }

    /// Text and reasoning items end when another item begins; calls stay open until the end
    /// (chat upstreams may interleave their argument fragments by index).
    fn close_all_but_calls(&mut self, out: &mut String) {
        for i in 0..self.items.len() {
            if self
                .items
                .get(i)
                .is_some_and(|it| !matches!(it.kind, Kind::Call { .. }))
            {
                self.close(out, i);
            }
        }
    }

    fn tool(&mut self, out: &mut String, call: ToolCallDelta) {
        if self.done {
            return;
        }
        let index = call.index.unwrap_or(0);
        let function = call.function.unwrap_or_default();
        let open = self.items.iter().rposition(|it| match &it.kind {
            Kind::Call { index: i, call_id, .. } => {
                !it.done && *i == index && call.id.as_ref().is_none_or(|id| id.is_empty() || id == call_id)
            }
            _ => false,
        });
        let item = match open {
            Some(i) => i,
            None => {
                self.close_all_but_calls(out);
                let n = self.items.len();
                let call_id = call
                    .id
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| self.ids.item("call", n));
                let name = function.name.clone().unwrap_or_default();
                self.add(out, Kind::Call { call_id, name, index })
            }
        };
        if let Some(args) = function.arguments.as_deref() {
            self.delta(out, item, args);
        }
    }

    fn finish(&mut self, out: &mut String) {
        self.start(out);
        for i in 0..self.items.len() {
            self.close(out, i);
        }
        let status = Status::of_finish(self.finish.as_deref().unwrap_or("stop"));
        let kind = match status {
            Status::Incomplete(_) => "response.incomplete",
            _ => "response.completed",
        };
        self.open(out, kind);
        out.push_str(",\"response\":");
        self.response(out, status, None);
        out.push_str("}\n\n");
        self.done = true;
    }

    /// `response.failed`, with what was produced so far.
    fn fail(&mut self, out: &mut String, message: &str) {
        if self.done {
            return;
        }
        self.start(out);
        self.open(out, "response.failed");
        out.push_str(",\"response\":");
        self.response(out, Status::Failed, Some(("server_error", message)));
        out.push_str("}\n\n");
        self.done = true;
        self.failed = true;
    }
}

fn write_item(out: &mut String, item: &Item, status: &str) {
    match &item.kind {
        Kind::Message => write_message_item(out, &item.id, status, &item.text),
        Kind::Reasoning => write_reasoning_item(out, &item.id, (status != "in_progress").then_some(item.text.as_str())),
        Kind::Call { call_id, name, .. } => {
            let arguments = if status == "in_progress" { "" } else { &item.text };
            write_call_item(out, &item.id, status, call_id, name, arguments)
        }
    }
}

impl StreamHandler for ChatToResponses {
    fn on_event(&mut self, event: Event<'_>, out: &mut String) {
        if self.done {
            return;
        }
        match chat_stream_in::read_event(event.data) {
            ChatEvent::Done => self.finish(out),
            ChatEvent::Failed { message, .. } => self.fail(out, &message),
            ChatEvent::Chunk(chunk) => {
                if !chunk.model.is_empty() && !self.started {
                    self.model = chunk.model;
                }
                self.start(out);
                if let Some(u) = chunk.usage {
                    self.usage = u.to_usage();
                }
                chat_stream_in::walk(self, chunk.choices, out);
            }
            ChatEvent::Unreadable => {}
        }
    }

    fn on_end(&mut self, out: &mut String) {
        if self.done {
            return;
        }
        if self.finish.is_some() {
            // No `[DONE]` but a finish reason: a complete answer from a lax upstream.
            self.finish(out);
        } else {
            self.fail(out, "upstream stream ended before it finished");
        }
    }

    fn on_fail(&mut self, message: &str, out: &mut String) {
        self.fail(out, message);
    }

    fn usage(&self) -> Usage {
        let mut u = self.usage;
        u.partial = !self.done || self.failed;
        u
    }
}

impl ChatDeltas for ChatToResponses {
    fn on_text(&mut self, out: &mut String, reasoning: bool, text: &str) {
        self.text(out, reasoning, text);
    }

    /// `Break` once a delta overflowed `MAX_ANSWER_BYTES` and failed the stream.
    fn on_tool_call(&mut self, out: &mut String, call: ToolCallDelta) -> ControlFlow<()> {
        self.tool(out, call);
        if self.done {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn on_finish(&mut self, _: &mut String, reason: String) -> ControlFlow<()> {
        self.finish = Some(reason);
        if self.done {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}
