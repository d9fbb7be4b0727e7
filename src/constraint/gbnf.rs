//! llama.cpp's GBNF grammars, rewritten into the Lark dialect of the grammar engine.
//!
//! GBNF (`root ::= "a" [b-z]* other`) and Lark differ in notation only for what GBNF has:
//! rule names may contain `-` (Lark: `_`), the entry is `root` (Lark: `start`), character
//! classes and `.` are bare (Lark: regular expressions in `/…/`). Strings, grouping,
//! alternatives and the repetitions `* + ? {m} {m,} {m,n}` are written the same way.

use std::fmt::Write;

/// A GBNF grammar that cannot be read, with the line where reading stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("GBNF line {line}: {message}")]
pub struct GbnfError {
    /// The line, from 1.
    pub line: usize,
    /// What is wrong there.
    pub message: String,
}

/// The Lark form of a GBNF grammar.
pub fn gbnf_to_lark(gbnf: &str) -> Result<String, GbnfError> {
    let mut out = String::new();
    let mut has_rule = false;
    let mut chars = Reader { src: gbnf.as_bytes(), at: 0, line: 1 };
    loop {
        chars.skip_space(true);
        if chars.peek().is_none() {
            break;
        }
        let name = chars.name()?;
        chars.skip_space(true);
        if !chars.eat_str("::=") {
            return Err(chars.error(format!("expected `::=` after rule name `{name}`")));
        }
        let _ = write!(out, "{}: ", rule_name(&name));
        body(&mut chars, &mut out)?;
        out.push('\n');
        has_rule = true;
    }
    if !has_rule {
        return Err(GbnfError { line: 1, message: "the grammar has no rules".into() });
    }
    Ok(out)
}

fn rule_name(gbnf: &str) -> String {
    if gbnf == "root" { "start".into() } else { format!("r_{}", gbnf.replace('-', "_").to_lowercase()) }
}

struct Reader<'a> {
    src: &'a [u8],
    at: usize,
    line: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.src.get(self.at).copied()
    }
    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.at += 1;
        if c == b'\n' {
            self.line += 1;
        }
        Some(c)
    }
    fn error(&self, message: String) -> GbnfError {
        GbnfError { line: self.line, message }
    }
    fn eat_str(&mut self, s: &str) -> bool {
        if self.src[self.at..].starts_with(s.as_bytes()) {
            self.at += s.len();
            return true;
        }
        false
    }
    /// Skips spaces and comments; newlines too when `newlines`.
    fn skip_space(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            match c {
                b'#' => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.bump();
                    }
                }
                b' ' | b'\t' | b'\r' => {
                    self.bump();
                }
                b'\n' if newlines => {
                    self.bump();
                }
                _ => break,
            }
        }
    }
    fn name(&mut self) -> Result<String, GbnfError> {
        let start = self.at;
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
            self.bump();
        }
        if start == self.at {
            return Err(self.error("expected a rule name".into()));
        }
        Ok(String::from_utf8_lossy(&self.src[start..self.at]).into_owned())
    }
    /// Whether a new rule (`name ::=`) starts at the reader's position.
    fn at_rule_start(&self) -> bool {
        let rest = &self.src[self.at..];
        let n = rest.iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'-' || **c == b'_').count();
        n > 0 && {
            let after = &rest[n..];
            let skip = after.iter().take_while(|c| **c == b' ' || **c == b'\t').count();
            after[skip..].starts_with(b"::=")
        }
    }
}

/// A rule's alternatives up to the next rule (or the end), written to `out`.
fn body(r: &mut Reader<'_>, out: &mut String) -> Result<(), GbnfError> {
    let mut depth = 0usize;
    loop {
        r.skip_space(depth > 0);
        let Some(c) = r.peek() else { break };
        match c {
            b'\n' => {
                // A rule continues on the next line unless a new rule starts there.
                r.skip_space(true);
                if r.peek().is_none() || r.at_rule_start() {
                    break;
                }
                continue;
            }
            b'"' => literal(r, out)?,
            b'[' => char_class(r, out)?,
            b'.' => {
                r.bump();
                out.push_str("/(?s:.)/");
            }
            b'(' => {
                r.bump();
                depth += 1;
                out.push('(');
            }
            b')' => {
                r.bump();
                depth = depth.checked_sub(1).ok_or_else(|| r.error("unbalanced `)`".into()))?;
                out.push(')');
            }
            b'|' => {
                r.bump();
                out.push('|');
            }
            // Postfix operators follow their atom directly.
            b'*' | b'+' | b'?' => {
                r.bump();
                trim_end(out);
                out.push(c as char);
            }
            b'{' => {
                trim_end(out);
                repetition(r, out)?
            }
            c if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' => {
                let name = r.name()?;
                out.push_str(&rule_name(&name));
            }
            other => return Err(r.error(format!("unexpected `{}`", other as char))),
        }
        out.push(' ');
    }
    if depth != 0 {
        return Err(r.error("unclosed `(`".into()));
    }
    Ok(())
}

fn trim_end(out: &mut String) {
    while out.ends_with(' ') {
        out.pop();
    }
}

/// A `"…"` string, copied with its escapes (both notations share JSON's).
fn literal(r: &mut Reader<'_>, out: &mut String) -> Result<(), GbnfError> {
    let start = r.at;
    r.bump();
    loop {
        match r.bump() {
            None | Some(b'\n') => return Err(r.error("unterminated string".into())),
            Some(b'\\') => {
                r.bump();
            }
            Some(b'"') => break,
            Some(_) => {}
        }
    }
    out.push_str(&String::from_utf8_lossy(&r.src[start..r.at]));
    Ok(())
}

/// A `[…]` class, as the same class in a regular expression.
fn char_class(r: &mut Reader<'_>, out: &mut String) -> Result<(), GbnfError> {
    let start = r.at;
    r.bump();
    loop {
        match r.bump() {
            None => return Err(r.error("unterminated character class".into())),
            Some(b'\\') => {
                r.bump();
            }
            Some(b']') => break,
            Some(_) => {}
        }
    }
    let class = String::from_utf8_lossy(&r.src[start..r.at]).replace('/', "\\/");
    out.push('/');
    out.push_str(&class);
    out.push('/');
    Ok(())
}

/// `{m}`, `{m,}` or `{m,n}`.
fn repetition(r: &mut Reader<'_>, out: &mut String) -> Result<(), GbnfError> {
    let start = r.at;
    while r.peek().is_some_and(|c| c != b'}') {
        if r.bump() == Some(b'\n') {
            return Err(r.error("unterminated repetition".into()));
        }
    }
    r.bump();
    let rep = String::from_utf8_lossy(&r.src[start..r.at]);
    let inner = &rep[1..rep.len().saturating_sub(1)];
    if inner.is_empty() || !inner.chars().all(|c| c.is_ascii_digit() || c == ',' || c == ' ') {
        return Err(r.error(format!("bad repetition `{rep}`")));
    }
    out.push_str(&rep.replace(' ', ""));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_classes_and_repetitions() {
        let gbnf = r#"
# a list of answers
root   ::= answer ("," ws answer){0,3}
answer ::= "yes" | "no" | [0-9]+ # digits
ws ::= [ \t]*
"#;
        let lark = gbnf_to_lark(gbnf).unwrap();
        assert_eq!(
            lark,
            "start: r_answer ( \",\" r_ws r_answer ){0,3} \n\
             r_answer: \"yes\" | \"no\" | /[0-9]/+ \n\
             r_ws: /[ \\t]/* \n"
        );
    }

    #[test]
    fn rules_continue_over_lines_and_names_map() {
        let lark = gbnf_to_lark("root ::= item-list\nitem-list ::= \"a\"\n   | \"b\"\n").unwrap();
        assert_eq!(lark, "start: r_item_list \nr_item_list: \"a\" | \"b\" \n");
    }

    #[test]
    fn errors_name_the_line() {
        // `next` continues the rule (it is no rule start), so the `=` is what cannot be read.
        let err = gbnf_to_lark("root ::= \"a\"\nnext = \"b\"").unwrap_err();
        assert_eq!((err.line, err.message.as_str()), (2, "unexpected `=`"));
        let err = gbnf_to_lark("root ::= \"a\"\n\n\"b\" ::= x").unwrap_err();
        assert!(err.message.contains("rule name") || err.message.contains("unexpected"), "{err}");
        assert!(gbnf_to_lark("root ::= (\"a\"").is_err());
        assert!(gbnf_to_lark("root ::= \"a").is_err());
        assert!(gbnf_to_lark("  # nothing\n").is_err());
    }
}
