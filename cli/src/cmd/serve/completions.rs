//! `POST /v1/chat/completions` and `POST /v1/completions`: check the request, make its prompt,
//! queue it on the batcher, then stream its events or wait for the whole reply.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use wllm::ReasoningFormat;
use wllm::batch::{BatchRequest, Event, Usage};
use wllm::loaders::chat::{ChatMessage, RenderOptions, ToolCallFormat, generic_messages};

use super::access_log::RequestLog;
use super::errors::ApiError;
use super::format::{Kind, Meta, ReplySplitter, TokenLogprobs, finish_reason, reply_finish};
use super::job::{self, Job};
use super::openai::{self, Prompt};
use super::sse;
use super::state::{AppState, new_id, unix_now};
use super::tools::Tools;

pub async fn chat(
    State(st): State<Arc<AppState>>,
    Extension(log): Extension<RequestLog>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    complete(&st, Kind::Chat, log, body).await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn text(
    State(st): State<Arc<AppState>>,
    Extension(log): Extension<RequestLog>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    complete(&st, Kind::Text, log, body).await.unwrap_or_else(IntoResponse::into_response)
}

/// Why tool constraints and `response_format`/`grammar` cannot go together.
fn conflict_message(format: ToolCallFormat) -> &'static str {
    match format {
        ToolCallFormat::Generic => {
            "this model's chat template shows no tool-call format, so tool replies are constrained to JSON, which cannot be combined with response_format or grammar"
        }
        _ => "a required tool call cannot be combined with response_format or grammar",
    }
}

/// A chat prompt through a template that shows no tools: calls and tool answers rewritten as
/// JSON turns and the tools described in a system message, folded into the first user turn
/// when the template refuses a system role.
fn generic_chat_prompt(
    model: &wllm::Model,
    messages: &[ChatMessage],
    tools: Option<&Tools>,
    render: &RenderOptions,
) -> Result<wllm::ChatPrompt, ApiError> {
    let (list, parallel) = tools.map_or((&[][..], false), |t| (t.list.as_slice(), t.parallel));
    let render = RenderOptions { tools: Vec::new(), ..render.clone() };
    match model.chat_prompt(&generic_messages(messages, list, parallel, false), &render) {
        Ok(chat) => Ok(chat),
        Err(first) if list.is_empty() => Err(chat_error(first)),
        Err(_) => {
            model.chat_prompt(&generic_messages(messages, list, parallel, true), &render).map_err(chat_error)
        }
    }
}

/// A chat template that could not make the prompt, as the request's fault.
fn chat_error(e: wllm::Error) -> ApiError {
    match e {
        wllm::Error::NoChatTemplate => ApiError::field(
            "messages",
            "the model has no chat template: use /v1/completions, or start the server with --chat-template",
        ),
        e => ApiError::field("messages", format!("the chat template refused the messages: {e}")),
    }
}

/// A body that could not be read (too large, cut off) as an OpenAI error with its status.
pub fn body_error(e: BytesRejection) -> ApiError {
    ApiError { status: e.status(), ..ApiError::bad_request(e.body_text()) }
}

async fn complete(
    st: &AppState,
    kind: Kind,
    log: RequestLog,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    let req = openai::parse(&body)?;
    st.check_model(req.model.as_deref())?;
    let ready = st.ready()?;
    let model = &ready.model;
    let p = req.params(kind == Kind::Chat, model.config().n_vocab)?;
    let id = new_id(if kind == Kind::Chat { "chatcmpl-" } else { "cmpl-" });
    let mut splitter = ReplySplitter::default();
    let mut constraint = p.constraint.clone();
    let mut stop = p.stop.clone();
    let (prompt, prompt_param) = match kind {
        Kind::Chat => {
            let messages = req.chat_messages()?;
            let mut render = RenderOptions {
                add_generation_prompt: true,
                reasoning_effort: p.reasoning_effort,
                ..Default::default()
            };
            let format = model.chat_template().and_then(|t| t.tool_call_format());
            if let Some(tools) = &p.tools {
                let format = format.unwrap_or(ToolCallFormat::Generic);
                render.tools = tools.list.clone();
                splitter = splitter.with_tools(format, &format!("{id}-"));
                stop.extend(format.stop_markers().iter().map(|m| m.to_string()));
                if let Some(grammar) = tools.grammar(format) {
                    if constraint.is_some() {
                        return Err(ApiError::field("tool_choice", conflict_message(format)));
                    }
                    constraint = Some((wllm::Constraint::Lark(grammar), "tool_choice"));
                }
            }
            let chat = match format {
                Some(_) => model.chat_prompt(&messages, &render).map_err(chat_error)?,
                None => generic_chat_prompt(model, &messages, p.tools.as_ref(), &render)?,
            };
            if chat.reasoning.format() != ReasoningFormat::None {
                splitter = splitter.with_reasoning(chat.reasoning);
            }
            (chat.tokens, "messages")
        }
        Kind::Text => {
            let ids = match req.completion_prompt()? {
                Prompt::Text(s) => model.tokenize(&s),
                Prompt::Tokens(ids) => ids,
            };
            (ids, "prompt")
        }
    };
    if kind == Kind::Chat {
        stop.extend(ready.end_of_turn.clone());
    }
    let constraint_param = constraint.as_ref().map_or("response_format", |(_, field)| field);
    let request = BatchRequest {
        prompt,
        max_tokens: p.max_tokens,
        sampling: p.sampling,
        stop,
        stop_at_eog: !p.ignore_eos,
        logprobs: p.logprobs,
        cancel: None,
        constraint: constraint.map(|(c, _)| c),
    };
    let job = job::submit(&ready.batcher, request, [prompt_param, constraint_param])?;
    let meta = Meta { kind, id, created: unix_now(), model: st.alias.clone() };
    if p.stream {
        return Ok(sse::response(job, meta, splitter, p.include_usage, log));
    }
    let reply = collect(job).await?;
    let logprobs = p.logprobs.is_some().then_some(reply.logprobs.as_slice());
    let parts = splitter.finish(&reply.text);
    let body = meta.full(&parts, reply_finish(&parts, reply.finish), logprobs, &reply.usage);
    let mut r = ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    r.extensions_mut().insert(reply.usage);
    Ok(r)
}

struct Reply {
    text: String,
    logprobs: Vec<TokenLogprobs>,
    finish: &'static str,
    usage: Usage,
}

/// Waits for a whole reply. If the client leaves meanwhile, axum drops this future and with
/// it the job, which cancels the request.
async fn collect(mut job: Job) -> Result<Reply, ApiError> {
    let mut text = String::new();
    let mut logprobs = Vec::new();
    while let Some(ev) = job.events.recv().await {
        match ev {
            Event::Started { .. } => {}
            Event::Token(t) => {
                text.push_str(&t.text);
                logprobs.extend(t.logprobs);
            }
            Event::Done(d) => {
                text.push_str(&d.text);
                return Ok(Reply { text, logprobs, finish: finish_reason(&d.reason), usage: d.usage });
            }
            Event::Error(e) => return Err(ApiError::internal(e.to_string())),
        }
    }
    Err(ApiError::internal("the request ended without a result"))
}
