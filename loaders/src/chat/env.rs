//! The minijinja environment configured the way Hugging Face's `apply_chat_template` and
//! llama.cpp's Jinja engine run chat templates.

use minijinja::syntax::SyntaxConfig;
use minijinja::{AutoEscape, Environment, Error, ErrorKind};

use super::error::Raised;
use super::tojson::tojson;

pub(crate) const TEMPLATE_NAME: &str = "chat_template";

/// `source` must already have passed through [`strip_generation_tags`].
pub(crate) fn environment(source: &str) -> Result<Environment<'static>, Error> {
    let mut env = Environment::new();
    // Both Hugging Face and llama.cpp compile chat templates with trim_blocks and lstrip_blocks;
    // without them most templates emit stray newlines and indentation.
    env.set_syntax(SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build()?);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    // Python string and dict methods (`.strip()`, `.startswith()`, `.split()`, `.items()`, ...).
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env.add_filter("tojson", tojson);
    env.add_template_owned(TEMPLATE_NAME, source.to_string())?;
    Ok(env)
}

fn raise_exception(message: String) -> Result<String, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, format!("raise_exception: {message}"))
        .with_source(Raised(message)))
}

/// Turns transformers' `{% generation %}` / `{% endgeneration %}` markers (which only tag the
/// assistant span for training masks) into `{% if true %}` / `{% endif %}`, keeping any
/// whitespace control on them. llama.cpp ignores them the same way.
pub(crate) fn strip_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(at) = rest.find("{%") {
        out.push_str(&rest[..at]);
        let tag = &rest[at..];
        match tag.find("%}").map(|end| &tag[..end + 2]) {
            Some(whole) => {
                let inner = &whole[2..whole.len() - 2];
                let (left, inner) = split_control(inner, true);
                let (right, word) = split_control(inner.trim_start(), false);
                let replacement = match word.trim() {
                    "generation" => Some("if true"),
                    "endgeneration" => Some("endif"),
                    _ => None,
                };
                match replacement {
                    Some(r) => out.push_str(&format!("{{%{left} {r} {right}%}}")),
                    None => out.push_str(whole),
                }
                rest = &tag[whole.len()..];
            }
            None => {
                out.push_str(tag);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Splits a leading (or trailing) `-`/`+` whitespace-control mark off a tag's inside.
fn split_control(s: &str, leading: bool) -> (&str, &str) {
    if leading {
        match s.strip_prefix(['-', '+']) {
            Some(r) => (&s[..1], r),
            None => ("", s),
        }
    } else {
        let t = s.trim_end();
        match t.strip_suffix(['-', '+']) {
            Some(r) => (&t[t.len() - 1..], r),
            None => ("", t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::strip_generation_tags;

    #[test]
    fn generation_tags_become_no_ops() {
        assert_eq!(
            strip_generation_tags("a{%- generation %}b{% endgeneration -%}c{% if x %}"),
            "a{%- if true %}b{% endif -%}c{% if x %}"
        );
    }
}
