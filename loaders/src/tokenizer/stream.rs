//! Incremental decoding for generation: ids in, text out, never splitting a character.

use crate::tokenizer::Tokenizer;

/// Turns a stream of token ids into text as it arrives. A token whose bytes end inside a
/// multi-byte UTF-8 sequence (byte tokens, or a BPE token holding part of a character) is held
/// back until the rest of the character arrives; bytes that can never form a character come
/// out as U+FFFD so the stream cannot stall.
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    bytes: Utf8Stream,
    special: bool,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(tokenizer: &'a Tokenizer) -> StreamDecoder<'a> {
        StreamDecoder { tokenizer, bytes: Utf8Stream::new(), special: false }
    }

    /// Render control tokens (e.g. `<|im_end|>`) as their text instead of dropping them.
    pub fn render_special(mut self, on: bool) -> StreamDecoder<'a> {
        self.special = on;
        self
    }

    /// Adds one token and returns the text it completed (often empty for a partial character).
    pub fn push(&mut self, id: u32) -> String {
        let piece = if self.special {
            self.tokenizer.token_to_piece_special(id)
        } else {
            self.tokenizer.token_to_piece(id)
        };
        self.push_bytes(&piece)
    }

    /// Adds raw bytes and returns the text they completed.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.bytes.push_bytes(bytes)
    }

    /// Whether bytes are waiting for the rest of a character.
    pub fn has_pending(&self) -> bool {
        self.bytes.has_pending()
    }

    /// Ends the stream: whatever is still held back comes out, incomplete characters as U+FFFD.
    pub fn finish(&mut self) -> String {
        self.bytes.finish()
    }
}

/// The byte-level half of [`StreamDecoder`]: bytes in, complete UTF-8 text out. It holds no
/// reference to a tokenizer, so it can live beside one inside a long-lived owner.
#[derive(Debug, Clone, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn new() -> Utf8Stream {
        Utf8Stream::default()
    }

    /// Adds raw bytes and returns the text they completed.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut text = String::new();
        let mut done = 0;
        loop {
            match std::str::from_utf8(&self.pending[done..]) {
                Ok(s) => {
                    text.push_str(s);
                    done = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // The prefix was just validated.
                    text.push_str(std::str::from_utf8(&self.pending[done..done + valid]).unwrap_or_default());
                    done += valid;
                    match e.error_len() {
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            done += bad;
                        }
                        // An incomplete character at the end: wait for more bytes.
                        None => break,
                    }
                }
            }
        }
        self.pending.drain(..done);
        text
    }

    /// Whether bytes are waiting for the rest of a character.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Ends the stream: whatever is still held back comes out, incomplete characters as U+FFFD.
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}
