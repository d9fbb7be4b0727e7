//! Token types as GGUF stores them and the attribute bits llama.cpp derives from them.

/// A token's type as written in `tokenizer.ggml.token_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenType {
    Undefined,
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenType {
    /// The GGUF code; unknown codes read as `Undefined`, as in llama.cpp.
    pub fn from_code(code: i64) -> TokenType {
        match code {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }
}

/// llama.cpp's `llama_token_attr`: a bit set, because llama.cpp adds bits to a token after
/// loading (an end-of-generation token found by its text also becomes CONTROL).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TokenAttr(u16);

impl TokenAttr {
    pub const UNDEFINED: TokenAttr = TokenAttr(0);
    pub const UNKNOWN: TokenAttr = TokenAttr(1 << 0);
    pub const UNUSED: TokenAttr = TokenAttr(1 << 1);
    pub const NORMAL: TokenAttr = TokenAttr(1 << 2);
    pub const CONTROL: TokenAttr = TokenAttr(1 << 3);
    pub const USER_DEFINED: TokenAttr = TokenAttr(1 << 4);
    pub const BYTE: TokenAttr = TokenAttr(1 << 5);
    pub const LSTRIP: TokenAttr = TokenAttr(1 << 7);
    pub const RSTRIP: TokenAttr = TokenAttr(1 << 8);

    pub fn bits(self) -> u16 {
        self.0
    }
    /// Whether any bit of `other` is set.
    pub fn intersects(self, other: TokenAttr) -> bool {
        self.0 & other.0 != 0
    }
    pub fn contains(self, other: TokenAttr) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn with(self, other: TokenAttr) -> TokenAttr {
        TokenAttr(self.0 | other.0)
    }
    pub fn without(self, other: TokenAttr) -> TokenAttr {
        TokenAttr(self.0 & !other.0)
    }
    pub fn is_control(self) -> bool {
        self.intersects(TokenAttr::CONTROL)
    }
    pub fn is_user_defined(self) -> bool {
        self.intersects(TokenAttr::USER_DEFINED)
    }
    pub fn is_byte(self) -> bool {
        self.intersects(TokenAttr::BYTE)
    }
    pub fn is_unknown(self) -> bool {
        self.intersects(TokenAttr::UNKNOWN)
    }
    pub fn is_unused(self) -> bool {
        self.intersects(TokenAttr::UNUSED)
    }
    pub fn is_normal(self) -> bool {
        self.intersects(TokenAttr::NORMAL)
    }

    /// The single type a token now behaves as. A token can carry several bits; the one that
    /// decides how it is matched and rendered wins (CONTROL over the rest, then UNKNOWN, …).
    pub fn token_type(self) -> TokenType {
        if self.is_control() {
            TokenType::Control
        } else if self.is_unknown() {
            TokenType::Unknown
        } else if self.is_user_defined() {
            TokenType::UserDefined
        } else if self.is_byte() {
            TokenType::Byte
        } else if self.is_normal() {
            TokenType::Normal
        } else if self.is_unused() {
            TokenType::Unused
        } else {
            TokenType::Undefined
        }
    }
}

impl From<TokenType> for TokenAttr {
    fn from(t: TokenType) -> TokenAttr {
        match t {
            TokenType::Undefined => TokenAttr::UNDEFINED,
            TokenType::Normal => TokenAttr::NORMAL,
            TokenType::Unknown => TokenAttr::UNKNOWN,
            TokenType::Control => TokenAttr::CONTROL,
            TokenType::UserDefined => TokenAttr::USER_DEFINED,
            TokenType::Unused => TokenAttr::UNUSED,
            TokenType::Byte => TokenAttr::BYTE,
        }
    }
}
