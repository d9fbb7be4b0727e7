use std::path::PathBuf;

use crate::gguf::GgufError;

/// Errors from loading or rendering a chat template.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Gguf(#[from] GgufError),

    #[error("tokenizer_config.json: {0}")]
    Config(String),

    #[error("the chat template does not parse: {0}")]
    Syntax(TemplateFailure),

    #[error("the chat template cannot be rendered: {0}")]
    Render(TemplateFailure),

    /// The template itself refused the conversation through `raise_exception`, e.g. a system
    /// message given to a template without a system role.
    #[error("the chat template rejected the conversation: {message}")]
    Raised { message: String },
}

/// Where and why a template failed: minijinja's error kind and detail, the line, and the text
/// of the construct that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateFailure {
    pub kind: String,
    pub detail: String,
    pub line: Option<usize>,
    pub construct: Option<String>,
}

impl std::fmt::Display for TemplateFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.kind)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        match (self.line, &self.construct) {
            (Some(line), Some(c)) => write!(f, " (line {line}: `{c}`)"),
            (Some(line), None) => write!(f, " (line {line})"),
            (None, Some(c)) => write!(f, " (at `{c}`)"),
            (None, None) => Ok(()),
        }
    }
}

/// Carried as the source of the minijinja error that `raise_exception` returns, so a message
/// raised by the template is told apart from a failure of the template engine.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Raised(pub(crate) String);

impl TemplateFailure {
    pub(crate) fn from_minijinja(err: &minijinja::Error, source: &str) -> TemplateFailure {
        let kind = err.kind().to_string();
        let construct = err.range().and_then(|r| source.get(r)).map(|s| {
            // Long blocks are cut so the message stays one readable line.
            let s = s.trim();
            match s.char_indices().nth(120) {
                Some((i, _)) => format!("{}…", &s[..i]),
                None => s.to_string(),
            }
        });
        TemplateFailure {
            kind,
            detail: err.detail().unwrap_or_default().to_string(),
            line: err.line(),
            construct,
        }
    }
}

pub(crate) fn from_render(err: minijinja::Error, source: &str) -> ChatError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = cause {
        if let Some(Raised(message)) = e.downcast_ref::<Raised>() {
            return ChatError::Raised { message: message.clone() };
        }
        cause = e.source();
    }
    ChatError::Render(TemplateFailure::from_minijinja(&err, source))
}
