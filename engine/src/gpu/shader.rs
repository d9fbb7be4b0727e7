//! The WGSL sources and the small preprocessor that makes their variants.
//!
//! Directives (each on its own line): `#include "file"` (each file at most once per shader),
//! `#define NAME [value]`, `#undef NAME`, `#ifdef NAME`, `#ifndef NAME`, `#else`, `#endif`.
//! A defined NAME with a value is replaced by that value wherever it appears as a whole word in
//! the lines that follow. Variants differ in structure only (quant type, subgroup path); tuning
//! numbers are WGSL `override` constants instead.

use std::collections::{HashMap, HashSet};

use crate::error::{EngineError, Result};

/// Every shader file, embedded at build time.
pub const SOURCES: &[(&str, &str)] = &[
    ("linear_common.wgsl", include_str!("../../../shaders/linear_common.wgsl")),
    ("linear_lane.wgsl", include_str!("../../../shaders/linear_lane.wgsl")),
    ("quant.wgsl", include_str!("../../../shaders/quant.wgsl")),
    ("reduce.wgsl", include_str!("../../../shaders/reduce.wgsl")),
    ("matvec.wgsl", include_str!("../../../shaders/matvec.wgsl")),
    ("matmul.wgsl", include_str!("../../../shaders/matmul.wgsl")),
    ("get_rows.wgsl", include_str!("../../../shaders/get_rows.wgsl")),
    ("norm.wgsl", include_str!("../../../shaders/norm.wgsl")),
    ("rope.wgsl", include_str!("../../../shaders/rope.wgsl")),
    ("attention.wgsl", include_str!("../../../shaders/attention.wgsl")),
    ("elementwise.wgsl", include_str!("../../../shaders/elementwise.wgsl")),
    ("argmax.wgsl", include_str!("../../../shaders/argmax.wgsl")),
    ("logprob.wgsl", include_str!("../../../shaders/logprob.wgsl")),
    ("activation.wgsl", include_str!("../../../shaders/activation.wgsl")),
    ("moe.wgsl", include_str!("../../../shaders/moe.wgsl")),
    ("delta_net.wgsl", include_str!("../../../shaders/delta_net.wgsl")),
    ("delta_rule.wgsl", include_str!("../../../shaders/delta_rule.wgsl")),
    ("hadamard.wgsl", include_str!("../../../shaders/hadamard.wgsl")),
    ("kv_layout.wgsl", include_str!("../../../shaders/kv_layout.wgsl")),
];

pub fn source(name: &str) -> Option<&'static str> {
    SOURCES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Expands `file` with the given defines.
pub fn preprocess(file: &str, defines: &[(String, String)]) -> Result<String> {
    let mut pp = Preprocessor {
        defines: defines.iter().cloned().collect(),
        included: HashSet::new(),
        out: String::new(),
        root: file.to_string(),
    };
    pp.file(file, 0)?;
    Ok(pp.out)
}

struct Preprocessor {
    defines: HashMap<String, String>,
    included: HashSet<String>,
    out: String,
    root: String,
}

impl Preprocessor {
    fn err(&self, file: &str, line: usize, msg: impl Into<String>) -> EngineError {
        EngineError::Shader {
            name: self.root.clone(),
            message: format!("{file}:{}: {}", line + 1, msg.into()),
        }
    }

    fn file(&mut self, name: &str, depth: u32) -> Result<()> {
        if depth > 16 {
            return Err(self.err(name, 0, "#include nested too deeply"));
        }
        if !self.included.insert(name.to_string()) {
            return Ok(());
        }
        let text = source(name).ok_or_else(|| self.err(name, 0, format!("no shader file {name:?}")))?;
        // Each entry: (this branch active, some branch of this #if already taken, parent active).
        let mut stack: Vec<(bool, bool)> = Vec::new();
        let active = |stack: &Vec<(bool, bool)>| stack.iter().all(|(a, _)| *a);
        for (ln, line) in text.lines().enumerate() {
            let t = line.trim_start();
            if let Some(rest) = t.strip_prefix('#') {
                let mut parts = rest.split_whitespace();
                let dir = parts.next().unwrap_or("");
                let arg = parts.next();
                match dir {
                    "ifdef" | "ifndef" => {
                        let name = arg.ok_or_else(|| self.err(name, ln, "#ifdef needs a name"))?;
                        let defined = self.defines.contains_key(name);
                        let cond = if dir == "ifdef" { defined } else { !defined };
                        stack.push((cond, cond));
                    }
                    "else" => {
                        let top =
                            stack.last_mut().ok_or_else(|| self.err(name, ln, "#else without #ifdef"))?;
                        *top = (!top.1, true);
                    }
                    "endif" => {
                        stack.pop().ok_or_else(|| self.err(name, ln, "#endif without #ifdef"))?;
                    }
                    _ if !active(&stack) => {}
                    "include" => {
                        let target = rest["include".len()..].trim().trim_matches('"').to_string();
                        self.file(&target, depth + 1)?;
                    }
                    "define" => {
                        let key = arg.ok_or_else(|| self.err(name, ln, "#define needs a name"))?;
                        let value = rest["define".len()..].trim()[key.len()..].trim().to_string();
                        self.defines.insert(key.to_string(), value);
                    }
                    "undef" => {
                        let key = arg.ok_or_else(|| self.err(name, ln, "#undef needs a name"))?;
                        self.defines.remove(key);
                    }
                    other => return Err(self.err(name, ln, format!("unknown directive #{other}"))),
                }
                continue;
            }
            if active(&stack) {
                let expanded = self.substitute(line);
                self.out.push_str(&expanded);
                self.out.push('\n');
            }
        }
        if !stack.is_empty() {
            return Err(self.err(name, text.lines().count(), "unterminated #ifdef"));
        }
        Ok(())
    }

    fn substitute(&self, line: &str) -> String {
        if self.defines.values().all(|v| v.is_empty()) || line.trim_start().starts_with("//") {
            return line.to_string();
        }
        let mut out = String::with_capacity(line.len());
        let mut word = String::new();
        let flush = |word: &mut String, out: &mut String| {
            match self.defines.get(word.as_str()) {
                Some(v) if !v.is_empty() => out.push_str(v),
                _ => out.push_str(word),
            }
            word.clear();
        };
        for ch in line.chars() {
            if ch.is_ascii_alphanumeric() || ch == '_' {
                word.push(ch);
            } else {
                flush(&mut word, &mut out);
                out.push(ch);
            }
        }
        flush(&mut word, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_preprocesses_without_defines() {
        for (name, _) in SOURCES {
            preprocess(name, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn substitution_is_whole_word() {
        let mut pp = Preprocessor {
            defines: [("QK".to_string(), "256u".to_string())].into_iter().collect(),
            included: HashSet::new(),
            out: String::new(),
            root: "t".into(),
        };
        assert_eq!(pp.substitute("let n = QK * QKX + QK;"), "let n = 256u * QKX + 256u;");
        pp.defines.clear();
        assert_eq!(pp.substitute("a QK b"), "a QK b");
    }
}
