//! The split rules llama.cpp runs through `std::regex`, reproduced with a backtracking engine.
//!
//! llama.cpp cannot give `std::regex` Unicode categories, so when a rule uses `\p{L}` and
//! friends it first "collapses" the text, one byte per codepoint: ASCII stays, every other
//! codepoint becomes a byte naming its category (0xD1 number, 0xD2 letter, …, 0x0B whitespace),
//! and `\p{X}` in the pattern becomes a class of that byte plus the ASCII members of X. Rules
//! without categories run on the codepoints, with non-ASCII whitespace turned into 0x0B. The
//! consequences are part of llama.cpp's behaviour (every non-ASCII letter counts as both upper
//! and lower case, for one), so this module rebuilds exactly those inputs and runs the pattern,
//! translated from ECMAScript to `fancy_regex` syntax, with the same leftmost-first semantics.

use fancy_regex::{Regex, RegexBuilder};

use crate::tokenizer::error::TokenizerError;
use crate::tokenizer::unicode::{self, ACCENT_MARK, LETTER, NUMBER, PUNCTUATION, SYMBOL};

/// The categories llama.cpp can collapse, with the byte standing for their non-ASCII members
/// and their ASCII members as an ECMAScript class body (`k_ucat_*` in unicode.cpp).
const CATEGORIES: [(&str, u8, u8, &str); 10] = [
    ("\\p{N}", NUMBER, 0xD1, "0-9"),
    ("\\p{L}", LETTER, 0xD2, "A-Za-z"),
    ("\\p{P}", PUNCTUATION, 0xD3, "!-#%-*,-/:-;?-@\\[-\\]_\\{\\}"),
    ("\\p{M}", ACCENT_MARK, 0xD4, ""),
    ("\\p{S}", SYMBOL, 0xD5, "\\$\\+<->\\^`\\|~"),
    ("\\p{Lu}", LETTER, 0xD2, "A-Za-z"),
    ("\\p{Ll}", LETTER, 0xD2, "A-Za-z"),
    ("\\p{Lt}", LETTER, 0xD2, "A-Za-z"),
    ("\\p{Lm}", LETTER, 0xD2, "A-Za-z"),
    ("\\p{Lo}", LETTER, 0xD2, "A-Za-z"),
];

/// Whitespace for `std::regex` in the "C" locale.
const ASCII_SPACE: [u32; 6] = [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20];

/// Enough for any real word; past it the engine gives up and the piece is left unsplit.
const BACKTRACK_LIMIT: usize = 50_000_000;

/// One `std::regex` rule, ready to run.
#[derive(Debug)]
pub(crate) struct StlRule {
    regex: Regex,
    collapsed: bool,
}

impl StlRule {
    pub fn new(pattern: &str) -> Result<StlRule, TokenizerError> {
        let collapsed = CATEGORIES.iter().any(|(name, ..)| pattern.contains(name));
        let ecma: Vec<u32> = if collapsed {
            if !pattern.is_ascii() {
                return Err(bad(pattern, "mixes Unicode categories with non-ASCII characters"));
            }
            collapse_pattern(pattern)
        } else {
            pattern.chars().map(u32::from).collect()
        };
        let translated = translate(&ecma).map_err(|why| bad(pattern, why))?;
        let regex = RegexBuilder::new(&translated)
            .backtrack_limit(BACKTRACK_LIMIT)
            .build()
            .map_err(|e| bad(pattern, &e.to_string()))?;
        Ok(StlRule { regex, collapsed })
    }

    /// The character the engine sees for a codepoint.
    pub fn input_char(&self, cpt: u32) -> char {
        let c = if self.collapsed {
            u32::from(collapse(cpt))
        } else if cpt > 0x7F && unicode::is_whitespace(cpt) {
            0x0B
        } else {
            cpt
        };
        // Only a surrogate from malformed UTF-8 has no `char`; it can match nothing anyway.
        char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER)
    }

    /// Splits one piece into the matches and the gaps between them, as llama.cpp's
    /// `unicode_regex_split_stl` does. `haystack` holds `input_char` of each codepoint.
    pub fn split(&self, haystack: &str, out: &mut Vec<usize>) {
        let mut char_at = vec![0usize; haystack.len() + 1];
        let mut n_chars = 0;
        for (i, (at, _)) in haystack.char_indices().enumerate() {
            char_at[at] = i;
            n_chars = i + 1;
        }
        char_at[haystack.len()] = n_chars;

        let mut done = 0;
        for m in self.regex.find_iter(haystack) {
            let Ok(m) = m else { break };
            // Rules that can match nothing are not supported (see `PreKind`), and an empty
            // match would not move llama.cpp's piece boundaries either.
            if m.start() == m.end() {
                continue;
            }
            let (start, end) = (char_at[m.start()], char_at[m.end()]);
            if start > done {
                out.push(start - done);
            }
            out.push(end - start);
            done = end;
        }
        if n_chars > done {
            out.push(n_chars - done);
        }
    }
}

fn bad(pattern: &str, why: &str) -> TokenizerError {
    TokenizerError::UnsupportedRegex { pattern: pattern.to_string(), reason: why.to_string() }
}

/// The byte llama.cpp writes for a codepoint in a collapsed text.
fn collapse(cpt: u32) -> u8 {
    if cpt < 0x80 {
        return cpt as u8;
    }
    if unicode::is_whitespace(cpt) {
        return 0x0B;
    }
    let category = unicode::category(cpt);
    CATEGORIES.iter().find(|c| c.1 == category).map_or(0xD0, |c| c.2)
}

/// Rewrites `\p{X}` as llama.cpp does: as `[<byte><ascii>]`, or spliced into the surrounding
/// class. Its notion of "inside a class" is a simple bracket tracker; it is kept as is.
fn collapse_pattern(pattern: &str) -> Vec<u32> {
    let b = pattern.as_bytes();
    let mut out: Vec<u32> = Vec::with_capacity(b.len() * 2);
    let mut inside = false;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'[' && (i == 0 || b[i - 1] != b'\\') {
            out.push(u32::from(b'['));
            inside = true;
            i += 1;
            continue;
        }
        if inside && b[i] == b']' && b[i - 1] != b'\\' {
            out.push(u32::from(b']'));
            inside = false;
            i += 1;
            continue;
        }
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1] == b'p' && b[i + 2] == b'{' {
            let close = b[i + 3..].iter().position(|&c| c == b'}').map(|k| k + i + 3);
            if let Some(close) = close.filter(|&c| c <= i + 10) {
                let name = &pattern[i..=close];
                if let Some(&(_, _, byte, ascii)) = CATEGORIES.iter().find(|c| c.0 == name) {
                    if !inside {
                        out.push(u32::from(b'['));
                    }
                    out.push(u32::from(byte));
                    out.extend(ascii.bytes().map(u32::from));
                    if !inside {
                        out.push(u32::from(b']'));
                    }
                    i = close + 1;
                    continue;
                }
            }
        }
        out.push(u32::from(b[i]));
        i += 1;
    }
    out
}

/// Translates an ECMAScript pattern (as `std::regex` reads it) into `fancy_regex` syntax.
/// Every literal is written as `\x{..}`, so no character can take on a meaning it did not have.
fn translate(p: &[u32]) -> Result<String, &'static str> {
    let mut out = String::with_capacity(p.len() * 4);
    let mut i = 0;
    while i < p.len() {
        let c = p[i];
        match char::from_u32(c).ok_or("invalid character")? {
            '\\' => {
                let (atom, next) = escape(p, i + 1)?;
                match atom {
                    Atom::Char(ch) => push_literal(&mut out, ch),
                    Atom::Set(set, negated) => push_class(&mut out, &set, negated),
                }
                i = next;
            }
            '[' => i = class(p, i + 1, &mut out)?,
            '(' => {
                let rest: String = p[i + 1..].iter().take(2).filter_map(|&c| char::from_u32(c)).collect();
                if rest.starts_with('?') && !(rest == "?:" || rest == "?=" || rest == "?!") {
                    return Err("unsupported group");
                }
                out.push('(');
                i += 1;
                if rest.starts_with('?') {
                    out.push_str(&rest);
                    i += 2;
                }
            }
            ')' | '|' | '*' | '+' | '?' | '^' | '$' => {
                out.push(char::from_u32(c).unwrap_or('?'));
                i += 1;
            }
            '{' => {
                // A counted repetition is copied through; anything else is a literal brace.
                let end = p[i..].iter().position(|&c| c == u32::from('}')).map(|k| i + k);
                let body: Option<String> =
                    end.map(|e| p[i + 1..e].iter().filter_map(|&c| char::from_u32(c)).collect());
                match body.filter(|b| is_counted(b)) {
                    Some(b) => {
                        out.push('{');
                        out.push_str(&b);
                        out.push('}');
                        i = end.unwrap_or(i) + 1;
                    }
                    None => {
                        push_literal(&mut out, c);
                        i += 1;
                    }
                }
            }
            '.' => {
                out.push_str(r"[^\x{0A}\x{0D}\x{2028}\x{2029}]");
                i += 1;
            }
            _ => {
                push_literal(&mut out, c);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn is_counted(body: &str) -> bool {
    let mut parts = body.splitn(2, ',');
    let lo = parts.next().unwrap_or("");
    let hi = parts.next();
    !lo.is_empty()
        && lo.bytes().all(|b| b.is_ascii_digit())
        && hi.is_none_or(|h| h.bytes().all(|b| b.is_ascii_digit()))
}

enum Atom {
    Char(u32),
    /// Ranges, and whether the set is negated (`\S`, `\D`, `\W`).
    Set(Vec<(u32, u32)>, bool),
}

/// Reads the escape whose letter is at `i`; returns it and the index after it.
fn escape(p: &[u32], i: usize) -> Result<(Atom, usize), &'static str> {
    let c = *p.get(i).ok_or("trailing backslash")?;
    let digits = vec![(0x30, 0x39)];
    let word = vec![(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)];
    let space: Vec<(u32, u32)> = ASCII_SPACE.iter().map(|&s| (s, s)).collect();
    let atom = match char::from_u32(c).ok_or("invalid character")? {
        'd' => Atom::Set(digits, false),
        'D' => Atom::Set(digits, true),
        's' => Atom::Set(space, false),
        'S' => Atom::Set(space, true),
        'w' => Atom::Set(word, false),
        'W' => Atom::Set(word, true),
        't' => Atom::Char(0x09),
        'n' => Atom::Char(0x0A),
        'v' => Atom::Char(0x0B),
        'f' => Atom::Char(0x0C),
        'r' => Atom::Char(0x0D),
        '0' => Atom::Char(0),
        'x' | 'u' => {
            let n = if c == u32::from('x') { 2 } else { 4 };
            let hex: String = p
                .get(i + 1..i + 1 + n)
                .ok_or("short hex escape")?
                .iter()
                .filter_map(|&c| char::from_u32(c))
                .collect();
            let v = u32::from_str_radix(&hex, 16).map_err(|_| "bad hex escape")?;
            return Ok((Atom::Char(v), i + 1 + n));
        }
        ch if ch.is_ascii_alphanumeric() => return Err("unsupported escape"),
        _ => Atom::Char(c),
    };
    Ok((atom, i + 1))
}

/// Reads a bracket class whose body starts at `i`, writes it, and returns the index after `]`.
fn class(p: &[u32], mut i: usize, out: &mut String) -> Result<usize, &'static str> {
    let negated = p.get(i) == Some(&u32::from('^'));
    if negated {
        i += 1;
    }
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    loop {
        let c = *p.get(i).ok_or("unterminated class")?;
        if c == u32::from(']') {
            i += 1;
            break;
        }
        let (lo, next) = class_atom(p, i)?;
        i = next;
        let lo = match lo {
            Atom::Set(_, true) => return Err("negated escape inside a class"),
            Atom::Set(set, false) => {
                ranges.extend(set);
                continue;
            }
            Atom::Char(lo) => lo,
        };
        // `a-b`, unless the dash is last in the class.
        if p.get(i) == Some(&u32::from('-')) && p.get(i + 1).is_some_and(|&c| c != u32::from(']')) {
            let (hi, next) = class_atom(p, i + 1)?;
            let Atom::Char(hi) = hi else { return Err("class range ends in a set") };
            if hi < lo {
                return Err("reversed class range");
            }
            ranges.push((lo, hi));
            i = next;
        } else {
            ranges.push((lo, lo));
        }
    }
    push_class(out, &ranges, negated);
    Ok(i)
}

fn class_atom(p: &[u32], i: usize) -> Result<(Atom, usize), &'static str> {
    if p[i] != u32::from('\\') {
        return Ok((Atom::Char(p[i]), i + 1));
    }
    // Inside a class, \b is a backspace.
    if p.get(i + 1) == Some(&u32::from('b')) {
        return Ok((Atom::Char(0x08), i + 2));
    }
    escape(p, i + 1)
}

fn push_literal(out: &mut String, c: u32) {
    if char::from_u32(c).is_some_and(|ch| ch.is_ascii_alphanumeric()) {
        out.push(char::from_u32(c).unwrap_or('?'));
    } else {
        out.push_str(&format!("\\x{{{c:X}}}"));
    }
}

fn push_class(out: &mut String, ranges: &[(u32, u32)], negated: bool) {
    if ranges.is_empty() {
        // `[]` matches nothing and `[^]` anything, as in ECMAScript.
        out.push_str(if negated { r"[\x{0}-\x{10FFFF}]" } else { r"[^\x{0}-\x{10FFFF}]" });
        return;
    }
    out.push('[');
    if negated {
        out.push('^');
    }
    for &(lo, hi) in ranges {
        out.push_str(&format!("\\x{{{lo:X}}}"));
        if hi != lo {
            out.push_str(&format!("-\\x{{{hi:X}}}"));
        }
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pattern: &str, text: &str) -> Vec<String> {
        let rule = StlRule::new(pattern).unwrap();
        let cpts: Vec<u32> = text.chars().map(u32::from).collect();
        let hay: String = cpts.iter().map(|&c| rule.input_char(c)).collect();
        let mut lens = Vec::new();
        rule.split(&hay, &mut lens);
        let mut at = 0;
        lens.iter()
            .map(|&n| {
                let s: String = cpts[at..at + n].iter().filter_map(|&c| char::from_u32(c)).collect();
                at += n;
                s
            })
            .collect()
    }

    #[test]
    fn categories_collapse() {
        assert_eq!(run("\\p{N}", "ab12٣c"), ["ab", "1", "2", "٣", "c"]);
        assert_eq!(run("[\\p{P}\\$\\+<=>\\^~\\|]+", "a,.$b"), ["a", ",.$", "b"]);
    }

    #[test]
    fn lookahead_and_ranges() {
        assert_eq!(run("\\s+(?!\\S)|\\s+", "a   b"), ["a", "  ", " ", "b"]);
        assert_eq!(run("[0-9][0-9][0-9]", "12345"), ["123", "45"]);
        assert_eq!(run(" ?[^(\\s|.,!?…)]+", "hi there… ok"), ["hi", " there", "…", " ok"]);
    }

    #[test]
    fn unsupported_is_an_error() {
        assert!(StlRule::new("\\bx").is_err());
        assert!(StlRule::new("(?<=a)b").is_err());
    }
}
