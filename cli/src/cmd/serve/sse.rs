//! Streamed completions as server-sent events: `data: {chunk}` per piece of text, then
//! `data: [DONE]`. An error after the stream began is sent as `data: {"error": ...}` and ends
//! the stream (the `openai` client raises it). Dropping the body (the client disconnected)
//! drops the job, which cancels the request.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde_json::Value;
use wllm::batch::{Event, Usage};

use super::access_log::{Deferred, RequestLog};
use super::errors::ApiError;
use super::format::{Kind, Meta, ReplySplitter, ReplyText, TokenLogprobs, finish_reason, reply_finish};
use super::job::Job;

/// A comment line every so often while nothing else is sent (waiting in the queue, a long
/// prompt): proxies keep the connection, and a write to a client that left ends the request.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

pub struct EventStream {
    job: Job,
    meta: Meta,
    /// Separates reasoning from the answer (chat requests to models that reason).
    splitter: ReplySplitter,
    include_usage: bool,
    /// Frames ready to send.
    out: VecDeque<Bytes>,
    /// Bytes of text sent so far (the legacy logprobs' `text_offset`).
    offset: usize,
    ended: bool,
    keep_alive: tokio::time::Interval,
    log: RequestLog,
    usage: Option<Usage>,
    note: &'static str,
}

/// The response: SSE headers and a body that streams `job`'s events.
pub fn response(
    job: Job,
    meta: Meta,
    splitter: ReplySplitter,
    include_usage: bool,
    log: RequestLog,
) -> Response {
    let mut keep_alive = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut s = EventStream {
        job,
        meta,
        splitter,
        include_usage,
        out: VecDeque::new(),
        offset: 0,
        ended: false,
        keep_alive,
        log,
        usage: None,
        note: "client disconnected",
    };
    if s.meta.kind == Kind::Chat {
        let first = s.meta.role_chunk();
        s.push(&first);
    }
    let mut r = Response::new(Body::from_stream(s));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r.extensions_mut().insert(Deferred);
    r
}

fn frame(data: &str) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

impl EventStream {
    fn push(&mut self, v: &Value) {
        self.out.push_back(frame(&v.to_string()));
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Started { .. } => {}
            Event::Token(t) => {
                let lps: Option<Vec<TokenLogprobs>> = t.logprobs.map(|l| vec![l]);
                // A token whose text is held back (mid-character, maybe a stop string or a
                // reasoning marker) sends nothing, unless its log-probability has to go out.
                let piece = self.splitter.push(&t.text);
                if !piece.is_empty() || lps.is_some() {
                    let c = self.meta.chunk(&piece, lps.as_deref(), self.offset, None);
                    self.push(&c);
                }
                self.offset += lps.as_ref().map_or(t.text.len(), |l| l[0].0.bytes.len());
            }
            Event::Done(d) => {
                let rest = self.splitter.finish(&d.text);
                if !rest.is_empty() {
                    let c = self.meta.chunk(&rest, None, self.offset, None);
                    self.push(&c);
                }
                let finish = reply_finish(&rest, finish_reason(&d.reason));
                let last = self.meta.chunk(&ReplyText::default(), None, self.offset, Some(finish));
                self.push(&last);
                if self.include_usage {
                    let u = self.meta.usage_chunk(&d.usage);
                    self.push(&u);
                }
                self.out.push_back(frame("[DONE]"));
                self.finish(Some(d.usage), "");
            }
            Event::Error(e) => self.fail(ApiError::internal(e.to_string())),
        }
    }

    fn fail(&mut self, e: ApiError) {
        self.push(&e.body());
        self.finish(None, "failed after the stream began");
        log::warn!("{}: {}", self.meta.id, e.message);
    }

    fn finish(&mut self, usage: Option<Usage>, note: &'static str) {
        self.ended = true;
        self.usage = usage;
        self.note = note;
    }
}

impl futures_core::Stream for EventStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(b) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(b)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match this.job.events.poll_recv(cx) {
                Poll::Ready(Some(ev)) => {
                    this.on_event(ev);
                    this.keep_alive.reset();
                }
                Poll::Ready(None) => this.fail(ApiError::internal("the request ended without a result")),
                Poll::Pending => {
                    return match this.keep_alive.poll_tick(cx) {
                        Poll::Ready(_) => Poll::Ready(Some(Ok(Bytes::from_static(b": keep-alive\n\n")))),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        // 200: the status line went out when the stream began, whatever happened after.
        self.log.write(200, self.usage.as_ref(), self.note);
    }
}
