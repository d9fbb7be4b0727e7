//! Non-finite logits: a model whose weights or hyperparameters are corrupt produces NaN or
//! infinite logits, and neither greedy picking nor sampling can choose a token from them. Every
//! path that hands logits or a device-chosen token to the caller checks them here, so the
//! caller gets one error naming the position instead of token 0 (NaN compares false) or an id
//! outside the vocabulary.

use crate::error::{EngineError, Result};

/// What the GPU argmax kernel writes instead of a token id when the row holds a NaN
/// (`shaders/argmax.wgsl`).
pub const ARGMAX_NAN: u32 = 0xFFFF_FFFF;
/// What it writes when the row holds an infinity but no NaN.
pub const ARGMAX_INF: u32 = 0xFFFF_FFFE;

/// `NaN`, `+inf` or `-inf`: the first non-finite kind in `v`, if any (NaN wins over infinities).
fn kind(v: &[f32]) -> Option<&'static str> {
    let mut inf = None;
    for &x in v {
        if x.is_nan() {
            return Some("NaN");
        }
        if x.is_infinite() && inf.is_none() {
            inf = Some(if x > 0.0 { "+inf" } else { "-inf" });
        }
    }
    inf
}

/// Checks row-major logits (`n_vocab` per row) whose first row is at `first_pos`.
pub fn check_logits(logits: &[f32], n_vocab: u32, first_pos: u32) -> Result<()> {
    let v = (n_vocab as usize).max(1);
    for (r, row) in logits.chunks(v).enumerate() {
        if let Some(what) = kind(row) {
            return Err(EngineError::NonFiniteLogits { what, position: first_pos as u64 + r as u64 });
        }
    }
    Ok(())
}

/// Checks a token the device chose for the row at `pos`: the argmax kernel's markers become
/// [`EngineError::NonFiniteLogits`], any other id outside the vocabulary an internal error.
pub fn check_token(token: u32, n_vocab: u32, pos: u32) -> Result<u32> {
    match token {
        t if t < n_vocab => Ok(t),
        ARGMAX_NAN => Err(EngineError::NonFiniteLogits { what: "NaN", position: pos as u64 }),
        ARGMAX_INF => Err(EngineError::NonFiniteLogits { what: "inf", position: pos as u64 }),
        t => Err(EngineError::gpu("argmax", format!("token id {t} is outside the vocabulary of {n_vocab}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_row_and_the_kind() {
        let mut l = vec![0.0f32; 8];
        assert!(check_logits(&l, 4, 0).is_ok());
        l[6] = f32::NAN;
        l[5] = f32::INFINITY;
        let e = check_logits(&l, 4, 10).unwrap_err().to_string();
        assert!(e.contains("(NaN) at position 11"), "{e}");
        l[1] = f32::NEG_INFINITY;
        let e = check_logits(&l, 4, 0).unwrap_err().to_string();
        assert!(e.contains("(-inf) at position 0"), "{e}");
    }

    #[test]
    fn argmax_markers() {
        assert_eq!(check_token(3, 4, 0).unwrap(), 3);
        assert!(check_token(ARGMAX_NAN, 4, 2).unwrap_err().to_string().contains("(NaN) at position 2"));
        assert!(check_token(ARGMAX_INF, 4, 2).unwrap_err().to_string().contains("(inf)"));
        assert!(matches!(check_token(7, 4, 0), Err(EngineError::Gpu { .. })));
    }
}
