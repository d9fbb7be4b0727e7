//! The split rules llama.cpp hand-codes instead of running a regex engine (`unicode.cpp`,
//! `unicode_regex_split_custom_*`). Each one is the behaviour of that code, quirks included,
//! since it, not the regex it is named after, decides llama.cpp's tokens.
//!
//! Every function splits one piece: `cpts`/`flags` are that piece only (positions past its end
//! read as "nothing", as llama.cpp's out-of-range lookups do) and the lengths of the new pieces,
//! in codepoints, are appended to `out`.

use crate::tokenizer::unicode::Flags;

/// A cursor over one piece that emits the span between the last cut and a new cut.
struct Piece<'a> {
    cpts: &'a [u32],
    flags: &'a [Flags],
    cut: usize,
    out: &'a mut Vec<usize>,
}

impl<'a> Piece<'a> {
    fn new(cpts: &'a [u32], flags: &'a [Flags], out: &'a mut Vec<usize>) -> Piece<'a> {
        Piece { cpts, flags, cut: 0, out }
    }
    fn len(&self) -> usize {
        self.cpts.len()
    }
    fn cpt(&self, i: usize) -> Option<u32> {
        self.cpts.get(i).copied()
    }
    fn is(&self, i: usize, c: char) -> bool {
        self.cpt(i) == Some(c as u32)
    }
    fn is_cr_or_lf(&self, i: usize) -> bool {
        self.is(i, '\r') || self.is(i, '\n')
    }
    fn flags(&self, i: usize) -> Flags {
        self.flags.get(i).copied().unwrap_or_default()
    }
    /// Ends the current span at `end`.
    fn cut_at(&mut self, end: usize) {
        if end > self.cut {
            self.out.push(end - self.cut);
        }
        self.cut = end;
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d` at `pos`, optionally ignoring ASCII case; returns its end.
    /// (llama.cpp lowercases with its Unicode table, but the only non-ASCII capitals mapping to
    /// ASCII are U+0130 → i and U+212A → k, which no contraction uses.)
    fn contraction(&self, pos: usize, ignore_case: bool) -> Option<usize> {
        if !self.is(pos, '\'') || pos + 1 >= self.len() {
            return None;
        }
        let lower = |c: u32| match char::from_u32(c) {
            Some(ch) if ignore_case => ch.to_ascii_lowercase(),
            Some(ch) => ch,
            None => '\0',
        };
        let next = lower(self.cpts[pos + 1]);
        if matches!(next, 's' | 't' | 'm' | 'd') {
            return Some(pos + 2);
        }
        if pos + 2 < self.len() {
            let next2 = lower(self.cpts[pos + 2]);
            if matches!((next, next2), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                return Some(pos + 3);
            }
        }
        None
    }

    /// The whitespace run at `pos`: its length and the end of its last CR or LF, if any.
    fn whitespace_run(&self, pos: usize) -> (usize, Option<usize>) {
        let mut n = 0;
        let mut last_newline_end = None;
        while self.flags(pos + n).whitespace {
            if self.is_cr_or_lf(pos + n) {
                last_newline_end = Some(pos + n + 1);
            }
            n += 1;
        }
        (n, last_newline_end)
    }

    /// `\s+(?!\S)|\s+` at `pos` for a run of `n`: a run followed by more text leaves its last
    /// character to the next piece. Returns the new position.
    fn whitespace_tail(&mut self, pos: usize, n: usize) -> usize {
        let end = if n > 1 && pos + n < self.len() {
            pos + n - 1
        } else if n > 0 {
            pos + n
        } else {
            pos + 1
        };
        self.cut_at(end);
        end
    }
}

/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
pub(crate) fn gpt2(cpts: &[u32], flags: &[Flags], out: &mut Vec<usize>) {
    let mut p = Piece::new(cpts, flags, out);
    let mut pos = 0;
    while pos < p.len() {
        if let Some(end) = p.contraction(pos, false) {
            p.cut_at(end);
            pos = end;
            continue;
        }
        let space = p.is(pos, ' ');
        let mut f = if space { p.flags(pos + 1) } else { p.flags(pos) };
        if f.is_letter() || f.is_number() {
            let letter = f.is_letter();
            pos += usize::from(space);
            while (letter && f.is_letter()) || (!letter && f.is_number()) {
                pos += 1;
                f = p.flags(pos);
            }
            p.cut_at(pos);
            continue;
        }
        if is_other(f) {
            pos += usize::from(space);
            while is_other(f) {
                pos += 1;
                f = p.flags(pos);
            }
            p.cut_at(pos);
            continue;
        }
        let (n, _) = p.whitespace_run(pos);
        pos = p.whitespace_tail(pos, n);
    }
}

/// `[^\s\p{L}\p{N}]` for a position inside the piece.
fn is_other(f: Flags) -> bool {
    !(f.whitespace || f.is_letter() || f.is_number()) && f.is_some()
}

/// How the Llama 3 family of rules takes digits.
#[derive(Clone, Copy)]
enum Digits {
    /// `\p{N}{1,3}`
    UpToThree,
    /// `\p{N}`
    One,
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
pub(crate) fn llama3(cpts: &[u32], flags: &[Flags], out: &mut Vec<usize>) {
    llama3_like(cpts, flags, out, Digits::UpToThree, false);
}

/// Qwen2: as Llama 3 but `\p{N}` one digit at a time.
pub(crate) fn qwen2(cpts: &[u32], flags: &[Flags], out: &mut Vec<usize>) {
    llama3_like(cpts, flags, out, Digits::One, false);
}

/// Qwen3.5: as Qwen2 but letter runs also take combining marks (`[\p{L}\p{M}]+`).
pub(crate) fn qwen35(cpts: &[u32], flags: &[Flags], out: &mut Vec<usize>) {
    llama3_like(cpts, flags, out, Digits::One, true);
}

fn llama3_like(cpts: &[u32], flags: &[Flags], out: &mut Vec<usize>, digits: Digits, marks: bool) {
    let wordy = |f: Flags| f.is_letter() || (marks && f.is_accent_mark());
    let mut p = Piece::new(cpts, flags, out);
    let mut pos = 0;
    while pos < p.len() {
        let f = p.flags(pos);
        if let Some(end) = p.contraction(pos, true) {
            p.cut_at(end);
            pos = end;
            continue;
        }

        // [^\r\n\p{L}\p{N}]?\p{L}+ : any one leading character that is not CR, LF or a digit.
        if !(p.is_cr_or_lf(pos) || f.is_number()) && (wordy(f) || wordy(p.flags(pos + 1))) {
            pos += 1;
            while wordy(p.flags(pos)) {
                pos += 1;
            }
            p.cut_at(pos);
            continue;
        }

        if f.is_number() {
            match digits {
                Digits::One => pos += 1,
                Digits::UpToThree => {
                    let mut group_start = pos;
                    while p.flags(pos).is_number() {
                        pos += 1;
                        if pos - group_start >= 3 {
                            p.cut_at(pos);
                            group_start = pos;
                        }
                    }
                }
            }
            p.cut_at(pos);
            continue;
        }

        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`. llama.cpp tests the optional space's own flags for the
        // "is anything" part of the first check, so a lone trailing space lands here too.
        let space = p.is(pos, ' ');
        let mut f2 = if space { p.flags(pos + 1) } else { f };
        let other =
            |g: Flags| !(g.whitespace || g.is_letter() || (marks && g.is_accent_mark()) || g.is_number());
        if other(f2) && f.is_some() {
            pos += usize::from(space);
            while other(f2) && f2.is_some() {
                pos += 1;
                f2 = p.flags(pos);
            }
            while p.is_cr_or_lf(pos) {
                pos += 1;
            }
            p.cut_at(pos);
            continue;
        }

        let (n, last_newline_end) = p.whitespace_run(pos);
        if let Some(end) = last_newline_end {
            // \s*[\r\n]+
            pos = end;
            p.cut_at(pos);
            continue;
        }
        pos = p.whitespace_tail(pos, n);
    }
}

/// `[^\n]+|[\n]+`: runs of newlines and runs of everything else.
pub(crate) fn newlines(cpts: &[u32], out: &mut Vec<usize>) {
    let mut pos = 0;
    while pos < cpts.len() {
        let newline = cpts[pos] == '\n' as u32;
        let start = pos;
        while pos < cpts.len() && (cpts[pos] == '\n' as u32) == newline {
            pos += 1;
        }
        out.push(pos - start);
    }
}

/// AFMoE's digit rule (also used for Tiny Aya's `\d{1,3}(?=(?:\d{3})*\b)`): a run of digits is
/// cut into a leading group of `len % 3` and then threes. Text before a run is not cut off on
/// its own; llama.cpp emits it together with the run's first group.
pub(crate) fn afmoe_digits(cpts: &[u32], flags: &[Flags], out: &mut Vec<usize>) {
    let mut p = Piece::new(cpts, flags, out);
    let mut pos = 0;
    while pos < p.len() {
        if !p.flags(pos).is_number() {
            pos += 1;
            continue;
        }
        let start = pos;
        while pos < p.len() && p.flags(pos).is_number() {
            pos += 1;
        }
        let count = pos - start;
        let mut group_end = start + count % 3;
        if count % 3 > 0 {
            p.cut_at(group_end);
        }
        while group_end < start + count {
            group_end += 3;
            p.cut_at(group_end);
        }
    }
    let n = p.len();
    p.cut_at(n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::unicode::flags;

    fn split(rule: fn(&[u32], &[Flags], &mut Vec<usize>), text: &str) -> Vec<String> {
        let cpts: Vec<u32> = text.chars().map(u32::from).collect();
        let f: Vec<Flags> = cpts.iter().map(|&c| flags(c)).collect();
        let mut lens = Vec::new();
        rule(&cpts, &f, &mut lens);
        let mut words = Vec::new();
        let mut at = 0;
        for n in lens {
            words.push(cpts[at..at + n].iter().filter_map(|&c| char::from_u32(c)).collect());
            at += n;
        }
        assert_eq!(at, cpts.len());
        words
    }

    #[test]
    fn gpt2_rules() {
        assert_eq!(split(gpt2, "Hello world's  end 123"), ["Hello", " world", "'s", " ", " end", " 123"]);
        assert_eq!(split(gpt2, "a  \n"), ["a", "  \n"]);
    }

    #[test]
    fn llama3_rules() {
        assert_eq!(
            split(llama3, "I'M 12345 ok!!\n\n  x"),
            ["I", "'M", " ", "123", "45", " ok", "!!\n\n", " ", " x"]
        );
        assert_eq!(split(qwen2, "a12"), ["a", "1", "2"]);
    }

    #[test]
    fn afmoe_groups() {
        assert_eq!(split(afmoe_digits, "x1234567y"), ["x1", "234", "567", "y"]);
    }
}
