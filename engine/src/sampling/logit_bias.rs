use super::config::LogitBias;
use super::error::SamplingError;

/// Parses one `--logit-bias` argument in llama.cpp's `TOKEN_ID(+|-)BIAS` form: `15043+1.5`,
/// `15043-1`, `15043-inf` (ban the token). Stricter than llama.cpp, which ignores trailing
/// garbage after the number: any malformed part is an error naming it.
pub fn parse_logit_bias(input: &str) -> Result<LogitBias, SamplingError> {
    let err = |reason: &str| SamplingError::InvalidLogitBias {
        input: input.to_string(),
        reason: reason.to_string(),
    };
    let s = input.trim();
    let Some(sign_at) = s.find(['+', '-']) else {
        return Err(err("no + or - between the token id and the bias"));
    };
    let (id, rest) = s.split_at(sign_at);
    if id.is_empty() {
        return Err(err("the token id is missing (token ids are never negative)"));
    }
    if !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(&format!("token id {id:?} is not a non-negative integer")));
    }
    let token: u32 = id.parse().map_err(|_| err(&format!("token id {id} does not fit in 32 bits")))?;
    let (negative, magnitude) = (rest.starts_with('-'), &rest[1..]);
    if magnitude.is_empty() {
        return Err(err("the bias after the sign is missing"));
    }
    if magnitude.starts_with(['+', '-']) {
        return Err(err("more than one sign before the bias"));
    }
    let is_inf = matches!(magnitude.to_ascii_lowercase().as_str(), "inf" | "infinity");
    let value: f32 = if is_inf {
        f32::INFINITY
    } else if magnitude.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-')) {
        magnitude.parse().map_err(|_| err(&format!("bias {magnitude:?} is not a number")))?
    } else {
        return Err(err(&format!("bias {magnitude:?} is not a number")));
    };
    if value.is_infinite() && !is_inf {
        return Err(err(&format!("bias {magnitude} overflows an f32")));
    }
    if value.is_infinite() && !negative {
        return Err(err("a bias of +inf is not allowed; use a large finite bias to force a token"));
    }
    let bias = if negative { -value } else { value };
    Ok(LogitBias { token, bias })
}
