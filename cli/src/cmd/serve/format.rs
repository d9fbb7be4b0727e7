//! Response bodies in OpenAI's shapes: whole completions, stream chunks, usage and
//! log-probabilities, for chat (`chat.completion`) and legacy text completions
//! (`text_completion`).

use serde_json::{Map, Value, json};
use wllm::StopReason;
use wllm::batch::{TokenLogprob, Usage};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Text,
}

/// A generated token's log-probability and its alternatives, as the batcher reports them.
pub type TokenLogprobs = (TokenLogprob, Vec<TokenLogprob>);

/// What every body of one response repeats.
pub struct Meta {
    pub kind: Kind,
    pub id: String,
    pub created: u64,
    pub model: String,
}

/// `finish_reason`: OpenAI has `stop` (a stop string or the model's end) and `length` (the
/// token limit, or here also a full context, which is a limit too).
pub fn finish_reason(r: &StopReason) -> &'static str {
    match r {
        StopReason::MaxTokens | StopReason::ContextFull => "length",
        StopReason::EndOfGeneration(_) | StopReason::StopString(_) | StopReason::Cancelled => "stop",
    }
}

pub fn usage(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": { "cached_tokens": u.cached_tokens },
    })
}

/// Identifies the build, as OpenAI's `system_fingerprint` identifies its backend config.
const FINGERPRINT: &str = concat!("wllm-", env!("CARGO_PKG_VERSION"));

impl Meta {
    fn envelope(&self, chunk: bool, choices: Value) -> Map<String, Value> {
        let object = match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Text, _) => "text_completion",
        };
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("object".into(), json!(object));
        m.insert("created".into(), json!(self.created));
        m.insert("model".into(), json!(self.model));
        m.insert("system_fingerprint".into(), json!(FINGERPRINT));
        m.insert("choices".into(), choices);
        m
    }

    /// A whole (non-streamed) completion.
    pub fn full(&self, text: &str, finish: &str, logprobs: Option<&[TokenLogprobs]>, u: &Usage) -> Value {
        let choice = match self.kind {
            Kind::Chat => json!({
                "index": 0,
                "message": { "role": "assistant", "content": text },
                "logprobs": logprobs.map(chat_logprobs),
                "finish_reason": finish,
            }),
            Kind::Text => json!({
                "index": 0,
                "text": text,
                "logprobs": logprobs.map(|l| text_logprobs(l, 0)),
                "finish_reason": finish,
            }),
        };
        let mut m = self.envelope(false, json!([choice]));
        m.insert("usage".into(), usage(u));
        Value::Object(m)
    }

    /// The chat stream's first chunk: the role, before any text.
    pub fn role_chunk(&self) -> Value {
        let choice = json!({
            "index": 0,
            "delta": { "role": "assistant", "content": "" },
            "logprobs": null,
            "finish_reason": null,
        });
        Value::Object(self.envelope(true, json!([choice])))
    }

    /// A chunk of streamed text (with the log-probabilities of the tokens it came from), or
    /// the last chunk, which carries `finish_reason` and no text. `offset`: bytes streamed
    /// before, for the legacy format's `text_offset`.
    pub fn chunk(
        &self,
        text: &str,
        logprobs: Option<&[TokenLogprobs]>,
        offset: usize,
        finish: Option<&str>,
    ) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                let delta =
                    if finish.is_some() && text.is_empty() { json!({}) } else { json!({ "content": text }) };
                json!({
                    "index": 0,
                    "delta": delta,
                    "logprobs": logprobs.map(chat_logprobs),
                    "finish_reason": finish,
                })
            }
            Kind::Text => json!({
                "index": 0,
                "text": text,
                "logprobs": logprobs.map(|l| text_logprobs(l, offset)),
                "finish_reason": finish,
            }),
        };
        Value::Object(self.envelope(true, json!([choice])))
    }

    /// `stream_options.include_usage`: a last chunk with no choices and the usage.
    pub fn usage_chunk(&self, u: &Usage) -> Value {
        let mut m = self.envelope(true, json!([]));
        m.insert("usage".into(), usage(u));
        Value::Object(m)
    }
}

/// A token's text for JSON: its bytes as UTF-8, with replacement characters where the token
/// ends mid-character (`bytes` carries the exact bytes).
fn token_text(t: &TokenLogprob) -> String {
    String::from_utf8_lossy(&t.bytes).into_owned()
}

/// Chat's format: `{"content": [{token, logprob, bytes, top_logprobs: [...]}]}`.
fn chat_logprobs(entries: &[TokenLogprobs]) -> Value {
    let one = |t: &TokenLogprob| json!({ "token": token_text(t), "logprob": t.logprob, "bytes": t.bytes });
    let content: Vec<Value> = entries
        .iter()
        .map(|(chosen, top)| {
            let mut v = one(chosen);
            v["top_logprobs"] = Value::Array(top.iter().map(one).collect());
            v
        })
        .collect();
    json!({ "content": content, "refusal": null })
}

/// The legacy completions format: parallel arrays, and each position's alternatives as a map
/// from token text to log-probability.
fn text_logprobs(entries: &[TokenLogprobs], mut offset: usize) -> Value {
    let mut tokens = Vec::new();
    let mut token_logprobs = Vec::new();
    let mut top_logprobs = Vec::new();
    let mut text_offset = Vec::new();
    for (chosen, top) in entries {
        tokens.push(json!(token_text(chosen)));
        token_logprobs.push(json!(chosen.logprob));
        let mut alts = Map::new();
        for t in top {
            alts.insert(token_text(t), json!(t.logprob));
        }
        top_logprobs.push(Value::Object(alts));
        text_offset.push(json!(offset));
        offset += chosen.bytes.len();
    }
    json!({
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top_logprobs,
        "text_offset": text_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: Kind) -> Meta {
        Meta { kind, id: "x-1".into(), created: 7, model: "m".into() }
    }

    fn lp(token: u32, text: &str, logprob: f32) -> TokenLogprob {
        TokenLogprob { token, bytes: text.as_bytes().to_vec(), logprob }
    }

    #[test]
    fn shapes() {
        let u = Usage { prompt_tokens: 5, completion_tokens: 2, cached_tokens: 3 };
        let lps = vec![(lp(1, "a", -0.5), vec![lp(1, "a", -0.5), lp(2, "b", -1.5)])];
        let v = meta(Kind::Chat).full("hi", "stop", Some(&lps), &u);
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["content"], "hi");
        assert_eq!(v["usage"]["total_tokens"], 7);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 3);
        assert_eq!(v["choices"][0]["logprobs"]["content"][0]["top_logprobs"][1]["token"], "b");
        assert_eq!(v["choices"][0]["logprobs"]["content"][0]["bytes"], json!([97]));
        let v = meta(Kind::Text).full("hi", "length", Some(&lps), &u);
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["logprobs"]["top_logprobs"][0]["b"], -1.5);
        let c = meta(Kind::Chat).chunk("", None, 0, Some("stop"));
        assert_eq!(c["choices"][0]["delta"], json!({}));
        assert_eq!(meta(Kind::Chat).role_chunk()["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(meta(Kind::Chat).usage_chunk(&u)["choices"], json!([]));
    }
}
