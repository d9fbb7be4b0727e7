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

/// Whether every value of `x` is finite. Each chunk's test is a fold without an early exit,
/// which compiles to vector compares; `Iterator::all` stays one element at a time, and that
/// scalar loop was most of quantizing a batched decode step's activations.
pub(crate) fn all_finite(x: &[f32]) -> bool {
    const EXPONENT: u32 = 0x7f80_0000;
    x.chunks(256)
        .all(|c| c.iter().fold(0u32, |any, v| any | u32::from(v.to_bits() & EXPONENT == EXPONENT)) == 0)
}

/// `NaN`, `+inf` or `-inf`: the first non-finite kind in `v`, if any (NaN wins over infinities).
fn kind(v: &[f32]) -> Option<&'static str> {
    // The vector test first: this scalar walk over every row of a batched step's logits
    // (8 × 49152 values for SmolLM2) ran on the calling thread while the others waited.
    if all_finite(v) {
        return None;
    }
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
    fn all_finite_finds_every_non_finite_value() {
        let finite = [0.0, -0.0, f32::MAX, f32::MIN, f32::MIN_POSITIVE, 1e-45, -3.5];
        for len in [0, 1, 255, 256, 257, 1000] {
            let x: Vec<f32> = (0..len).map(|i| finite[i % finite.len()]).collect();
            assert!(all_finite(&x), "{len} finite values");
            for at in [0, len / 2, len.saturating_sub(1)].into_iter().filter(|&at| at < len) {
                for bad in [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let mut y = x.clone();
                    y[at] = bad;
                    assert!(!all_finite(&y), "{bad} at {at} of {len}");
                }
            }
        }
    }

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
