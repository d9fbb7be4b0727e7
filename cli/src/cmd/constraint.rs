//! The constraint flags of `wllm run`: a JSON schema, a grammar file or a regular expression.

use std::path::PathBuf;

use anyhow::{Context, Result};
use wllm::Constraint;

#[derive(clap::Args, Clone, Debug, Default)]
#[group(multiple = false)]
pub struct ConstraintArgs {
    /// Make the output a JSON value valid under this schema: a file, or the schema itself
    /// when it starts with `{`.
    #[arg(long, value_name = "FILE|JSON")]
    pub json_schema: Option<String>,
    /// Make the output match this grammar file: llama.cpp's GBNF (`root ::= ...`), or Lark
    /// when the file name ends in `.lark`.
    #[arg(long, value_name = "FILE")]
    pub grammar: Option<PathBuf>,
    /// Make the output match this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub regex: Option<String>,
}

impl ConstraintArgs {
    pub fn constraint(&self) -> Result<Option<Constraint>> {
        if let Some(schema) = &self.json_schema {
            let text = if schema.trim_start().starts_with('{') {
                schema.clone()
            } else {
                std::fs::read_to_string(schema).with_context(|| format!("--json-schema: reading {schema}"))?
            };
            let value = serde_json::from_str(&text).context("--json-schema: not valid JSON")?;
            return Ok(Some(Constraint::JsonSchema(value)));
        }
        if let Some(path) = &self.grammar {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--grammar: reading {}", path.display()))?;
            let lark = path.extension().is_some_and(|e| e == "lark");
            return Ok(Some(if lark { Constraint::Lark(text) } else { Constraint::Gbnf(text) }));
        }
        Ok(self.regex.clone().map(Constraint::Regex))
    }
}
