use std::path::{Path, PathBuf};

use minijinja::Environment;

use super::env::{environment, strip_generation_tags};
use super::error::{ChatError, TemplateFailure};
use crate::gguf::GgufFile;

/// llama.cpp's fallback when a model carries no chat template (`common/chat.cpp`,
/// `CHATML_TEMPLATE_SRC`, at commit 0c1e570), written out as the Jinja it renders.
pub const CHATML_TEMPLATE: &str = "{%- for message in messages -%}\n  {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}\n{%- endfor -%}\n{%- if add_generation_prompt -%}\n  {{- '<|im_start|>assistant\\n' -}}\n{%- endif -%}";

/// The special-token texts a template sees as `bos_token` / `eos_token`, and whether the
/// tokenizer adds BOS/EOS itself. When it does, a BOS the template wrote at the very start (or
/// an EOS at the very end) is removed from the render, as llama.cpp does, so tokenizing with
/// `add_special` does not double it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: String,
    pub eos: String,
    pub add_bos: bool,
    pub add_eos: bool,
}

impl SpecialTokens {
    /// From `tokenizer.ggml.*`: the token texts of the BOS/EOS ids, and `add_bos_token` /
    /// `add_eos_token` (absent: BOS is added for SentencePiece and WordPiece vocabularies, as in
    /// llama.cpp, and EOS is not).
    pub fn from_gguf(gguf: &GgufFile) -> Result<SpecialTokens, ChatError> {
        let text = |key: &str| -> Result<String, ChatError> {
            let Some(id) = gguf.opt_u32(key)? else { return Ok(String::new()) };
            let Some(tokens) = gguf.opt_array("tokenizer.ggml.tokens")? else { return Ok(String::new()) };
            Ok(match tokens.iter().nth(id as usize) {
                Some(crate::gguf::Value::String(b)) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            })
        };
        let model = gguf.opt_str("tokenizer.ggml.model")?.unwrap_or_default();
        let add_bos =
            gguf.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(matches!(model, "llama" | "bert"));
        let add_eos = gguf.opt_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        Ok(SpecialTokens {
            bos: text("tokenizer.ggml.bos_token_id")?,
            eos: text("tokenizer.ggml.eos_token_id")?,
            add_bos,
            add_eos,
        })
    }

    /// From a Hugging Face `tokenizer_config.json`: `bos_token` / `eos_token` (a string or an
    /// added-token object with `content`) and `add_bos_token` / `add_eos_token`.
    pub fn from_tokenizer_config(config: &serde_json::Value) -> SpecialTokens {
        let text = |key: &str| match &config[key] {
            serde_json::Value::String(s) => s.clone(),
            v => v["content"].as_str().unwrap_or_default().to_string(),
        };
        SpecialTokens {
            bos: text("bos_token"),
            eos: text("eos_token"),
            add_bos: config["add_bos_token"].as_bool().unwrap_or(false),
            add_eos: config["add_eos_token"].as_bool().unwrap_or(false),
        }
    }
}

/// Where a template came from, for messages and for warning that a fallback is in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateOrigin {
    /// `tokenizer.chat_template` (or its `tool_use` variant) in a GGUF file.
    Gguf,
    /// `chat_template` in a `tokenizer_config.json`.
    TokenizerConfig,
    /// A file given by the user (`--chat-template`).
    File(PathBuf),
    /// Source text handed to [`ChatTemplate::new`].
    Source,
    /// The model has no template; llama.cpp's ChatML fallback is used.
    ChatmlFallback,
}

/// A model's chat template, compiled once and rendered per conversation.
#[derive(Debug)]
pub struct ChatTemplate {
    pub(crate) source: String,
    pub(crate) tokens: SpecialTokens,
    pub(crate) origin: TemplateOrigin,
    pub(crate) env: Environment<'static>,
}

impl ChatTemplate {
    /// Compiles `source`; syntax errors are reported here, with their line.
    pub fn new(
        source: impl Into<String>,
        bos: impl Into<String>,
        eos: impl Into<String>,
    ) -> Result<ChatTemplate, ChatError> {
        let tokens = SpecialTokens { bos: bos.into(), eos: eos.into(), add_bos: false, add_eos: false };
        ChatTemplate::compile(source.into(), tokens, TemplateOrigin::Source)
    }

    /// The template in a GGUF file, chosen as llama.cpp chooses it: `tokenizer.chat_template`,
    /// else `tokenizer.chat_template.tool_use`, else ChatML (see [`origin`](Self::origin)).
    pub fn from_gguf(gguf: &GgufFile) -> Result<ChatTemplate, ChatError> {
        let tokens = SpecialTokens::from_gguf(gguf)?;
        let default = gguf.opt_str("tokenizer.chat_template")?.filter(|s| !s.is_empty() && *s != "chatml");
        let tool_use = gguf.opt_str("tokenizer.chat_template.tool_use")?.filter(|s| !s.is_empty());
        match default.or(tool_use) {
            Some(src) => ChatTemplate::compile(src.to_string(), tokens, TemplateOrigin::Gguf),
            None => {
                ChatTemplate::compile(CHATML_TEMPLATE.to_string(), tokens, TemplateOrigin::ChatmlFallback)
            }
        }
    }

    /// The template of a Hugging Face `tokenizer_config.json`: `chat_template` as a string, or
    /// the list-of-named-templates form, from which the one named `default` is taken.
    pub fn from_tokenizer_config(config: &serde_json::Value) -> Result<ChatTemplate, ChatError> {
        let source = match &config["chat_template"] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(list) => {
                let named = |e: &serde_json::Value| e["name"].as_str().map(str::to_string);
                let Some(default) = list.iter().find(|e| e["name"] == "default") else {
                    let names: Vec<String> = list.iter().filter_map(named).collect();
                    return Err(ChatError::Config(format!(
                        "chat_template lists named templates ({}) but none is named \"default\"",
                        names.join(", ")
                    )));
                };
                match default["template"].as_str() {
                    Some(s) => s.to_string(),
                    None => {
                        return Err(ChatError::Config(
                            "the \"default\" chat_template has no template string".into(),
                        ));
                    }
                }
            }
            serde_json::Value::Null => return Err(ChatError::Config("there is no chat_template".into())),
            _ => {
                return Err(ChatError::Config(
                    "chat_template is neither a string nor a list of named templates".into(),
                ));
            }
        };
        ChatTemplate::compile(
            source,
            SpecialTokens::from_tokenizer_config(config),
            TemplateOrigin::TokenizerConfig,
        )
    }

    /// A template file for `--chat-template FILE`: raw Jinja, or a `tokenizer_config.json`
    /// (recognised by parsing as a JSON object with `chat_template`). Special tokens come from
    /// the model: set them with [`with_special_tokens`](Self::with_special_tokens).
    pub fn from_file(path: impl AsRef<Path>) -> Result<ChatTemplate, ChatError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ChatError::Io { path: path.to_path_buf(), source })?;
        let origin = TemplateOrigin::File(path.to_path_buf());
        if let Ok(config @ serde_json::Value::Object(_)) = serde_json::from_str::<serde_json::Value>(&text)
            && config.get("chat_template").is_some()
        {
            let mut t = ChatTemplate::from_tokenizer_config(&config)?;
            t.origin = origin;
            return Ok(t);
        }
        ChatTemplate::compile(text, SpecialTokens::default(), origin)
    }

    /// Replaces the special tokens, e.g. with the model's after [`from_file`](Self::from_file).
    pub fn with_special_tokens(mut self, tokens: SpecialTokens) -> ChatTemplate {
        self.tokens = tokens;
        self
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.tokens
    }

    pub fn origin(&self) -> &TemplateOrigin {
        &self.origin
    }

    fn compile(
        source: String,
        tokens: SpecialTokens,
        origin: TemplateOrigin,
    ) -> Result<ChatTemplate, ChatError> {
        let compiled = strip_generation_tags(&source);
        let env = environment(&compiled)
            .map_err(|e| ChatError::Syntax(TemplateFailure::from_minijinja(&e, &compiled)))?;
        Ok(ChatTemplate { source, tokens, origin, env })
    }
}
