//! Constrained generation: a JSON schema, a regular expression or a grammar (Lark, or llama.cpp's
//! GBNF) compiled once per request and applied as a token mask at every step, so the output
//! always fits it. The grammar engine is llguidance (the one llama.cpp, vLLM and SGLang ship),
//! over the model's own vocabulary ([`vocab`]).

mod gbnf;
mod vocab;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::SimpleVob;
use llguidance::{Matcher, ParserFactory};
use wllm_engine::sampling::TokenMask;
use wllm_loaders::Tokenizer;
use wllm_loaders::chat::constrained_schema;

pub use gbnf::{GbnfError, gbnf_to_lark};

/// What the output must match.
#[derive(Clone, Debug, PartialEq)]
pub enum Constraint {
    /// A JSON value valid under this JSON schema (OpenAI's `response_format: json_schema`).
    JsonSchema(serde_json::Value),
    /// Any JSON object (`response_format: json_object`).
    JsonObject,
    /// Text matching this regular expression (whole output).
    Regex(String),
    /// A Lark grammar (llguidance's dialect; the rule `start` is the entry).
    Lark(String),
    /// A llama.cpp GBNF grammar (the rule `root` is the entry).
    Gbnf(String),
}

/// A constraint that cannot be compiled, or the grammar engine failing mid-generation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConstraintError {
    /// A GBNF grammar cannot be read.
    #[error(transparent)]
    Gbnf(#[from] GbnfError),
    /// The schema, regex or grammar does not compile; the message says where.
    #[error("invalid {kind}: {message}")]
    Invalid {
        /// What kind of constraint (`JSON schema`, `regex`, ...).
        kind: &'static str,
        /// Where and why it does not compile.
        message: String,
    },
    /// The vocabulary has no token to end a constrained reply with.
    #[error("the model's vocabulary has neither an end-of-turn nor an end-of-sequence token")]
    NoStopToken,
    /// The grammar engine failed while generating (a bug or a resource limit).
    #[error("constraint engine: {0}")]
    Engine(String),
}

impl Constraint {
    fn kind(&self) -> &'static str {
        match self {
            Constraint::JsonSchema(_) | Constraint::JsonObject => "JSON schema",
            Constraint::Regex(_) => "regular expression",
            Constraint::Lark(_) | Constraint::Gbnf(_) => "grammar",
        }
    }

    fn grammar(&self) -> Result<TopLevelGrammar, ConstraintError> {
        Ok(match self {
            Constraint::JsonSchema(schema) => {
                TopLevelGrammar::from_json_schema(constrained_schema(schema.clone()))
            }
            Constraint::JsonObject => {
                TopLevelGrammar::from_json_schema(constrained_schema(serde_json::json!({"type": "object"})))
            }
            Constraint::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Constraint::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
            Constraint::Gbnf(gbnf) => TopLevelGrammar::from_lark(gbnf_to_lark(gbnf)?),
        })
    }
}

/// A model's grammar compiler, built on first use (it indexes the whole vocabulary).
#[derive(Default)]
pub(crate) struct Grammars {
    factory: OnceLock<Result<Arc<ParserFactory>, ConstraintError>>,
}

impl Grammars {
    fn factory(&self, tokenizer: &Arc<Tokenizer>) -> Result<Arc<ParserFactory>, ConstraintError> {
        self.factory
            .get_or_init(|| {
                vocab::stop_token(tokenizer).ok_or(ConstraintError::NoStopToken)?;
                let mut factory = ParserFactory::new_simple(&vocab::token_env(tokenizer.clone()))
                    .map_err(|e| ConstraintError::Engine(e.to_string()))?;
                // The library never prints; problems come back as errors.
                factory.quiet();
                Ok(Arc::new(factory))
            })
            .clone()
    }

    /// Compiles `constraint` for one generation.
    pub(crate) fn start(
        &self,
        tokenizer: &Arc<Tokenizer>,
        constraint: &Constraint,
    ) -> Result<ActiveConstraint, ConstraintError> {
        let factory = self.factory(tokenizer)?;
        let invalid = |e: String| ConstraintError::Invalid { kind: constraint.kind(), message: e };
        let parser = factory.create_parser(constraint.grammar()?).map_err(|e| invalid(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(invalid(e));
        }
        Ok(ActiveConstraint { matcher, mask: None, mask_time: Duration::ZERO, masks: 0 })
    }
}

/// How a constrained generation went.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ConstraintReport {
    /// The output is a complete match (the grammar could end where the output ends).
    pub complete: bool,
    /// Masks computed.
    pub masks: usize,
    /// Their mean cost.
    pub mean_mask_time: Duration,
}

/// A constraint following one generation: the mask for the next token, advanced by each
/// token taken.
pub(crate) struct ActiveConstraint {
    matcher: Matcher,
    mask: Option<SimpleVob>,
    mask_time: Duration,
    masks: usize,
}

impl ActiveConstraint {
    /// The tokens allowed next.
    pub(crate) fn mask(&mut self) -> Result<TokenMask<'_>, ConstraintError> {
        let started = Instant::now();
        let mask = self.matcher.compute_mask().map_err(|e| ConstraintError::Engine(e.to_string()))?;
        self.mask_time += started.elapsed();
        self.masks += 1;
        Ok(TokenMask::new(self.mask.insert(mask).as_slice()))
    }

    /// Takes `token` (one the last mask allowed).
    pub(crate) fn commit(&mut self, token: u32) -> Result<(), ConstraintError> {
        self.matcher.consume_token(token).map_err(|e| ConstraintError::Engine(e.to_string()))
    }

    /// Whether the grammar admits nothing more: the output is complete.
    pub(crate) fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }

    pub(crate) fn report(&mut self) -> ConstraintReport {
        let complete = self.is_finished() || self.matcher.is_accepting().unwrap_or(false);
        ConstraintReport {
            complete,
            masks: self.masks,
            mean_mask_time: self.mask_time.checked_div(self.masks.max(1) as u32).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests;
