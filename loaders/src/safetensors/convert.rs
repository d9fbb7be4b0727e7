//! The few byte-level conversions that turn Hugging Face tensors into their GGUF form. Inputs
//! come straight from a map and may be unaligned, so everything is read with `from_le_bytes`.

use half::{bf16, f16};

use super::dtype::Dtype;

/// Widens F32/F16/BF16 elements to little-endian f32, adding `shift` to each.
pub(super) fn to_f32(dtype: Dtype, bytes: &[u8], shift: f32) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() / elem_size(dtype) * 4);
    let mut push = |v: f32| out.extend_from_slice(&(v + shift).to_le_bytes());
    match dtype {
        Dtype::F16 => bytes.chunks_exact(2).for_each(|c| push(f16::from_le_bytes([c[0], c[1]]).to_f32())),
        Dtype::BF16 => bytes.chunks_exact(2).for_each(|c| push(bf16::from_le_bytes([c[0], c[1]]).to_f32())),
        _ => bytes.chunks_exact(4).for_each(|c| push(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
    }
    out
}

/// `-exp(x)` of F32/F16/BF16 elements as little-endian f32: the converter's `ssm_a` from
/// `A_log`. Evaluated in f64 so that the f32 result is the correctly rounded one.
pub(super) fn neg_exp_f32(dtype: Dtype, bytes: &[u8]) -> Vec<u8> {
    to_f32(dtype, bytes, 0.0)
        .chunks_exact(4)
        .flat_map(|c| (-f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).exp() as f32).to_le_bytes())
        .collect()
}

/// The `(first row, count)` ranges of `row_bytes`-byte rows, one after another.
pub(super) fn gather_rows(bytes: &[u8], row_bytes: usize, ranges: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ranges.iter().map(|&(_, n)| n as usize * row_bytes).sum());
    for &(first, count) in ranges {
        let start = first as usize * row_bytes;
        out.extend_from_slice(&bytes[start..start + count as usize * row_bytes]);
    }
    out
}

pub(super) fn elem_size(dtype: Dtype) -> usize {
    (dtype.bits() / 8).max(1) as usize
}

/// Concatenates equal-sized expert matrices into one `[n_expert, rows, cols]` tensor.
pub(super) fn stack(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// From `[n_expert, 2 * half_rows, cols]` bytes, the first or second half of each expert's
/// rows, as `[n_expert, half_rows, cols]`. `half_bytes` is one expert's half.
pub(super) fn fused_half(bytes: &[u8], n_expert: usize, half_bytes: usize, second: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(n_expert * half_bytes);
    let skip = if second { half_bytes } else { 0 };
    for expert in bytes.chunks_exact(2 * half_bytes).take(n_expert) {
        out.extend_from_slice(&expert[skip..skip + half_bytes]);
    }
    out
}

/// Which rows (or columns) of gpt-oss's interleaved gate_up tensors a GGUF tensor takes:
/// all of them, or gate's (even) or up's (odd).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Pick {
    All,
    Even,
    Odd,
}

impl Pick {
    /// How many of `n` are kept (`n` even unless `All`).
    pub fn count(self, n: usize) -> usize {
        if self == Pick::All { n } else { n / 2 }
    }
    /// The index of the `j`-th kept one.
    pub fn index(self, j: usize) -> usize {
        match self {
            Pick::All => j,
            Pick::Even => 2 * j,
            Pick::Odd => 2 * j + 1,
        }
    }
}

/// Bytes of one MXFP4 block in a Hugging Face checkpoint: 32 E2M1 codes, two a byte.
const HF_MXFP4_BLOCK: usize = 16;

/// OpenAI's MXFP4 (`_blocks` `[rows, groups, 16]`, `_scales` `[rows, groups]`, experts
/// counted in `rows`) as ggml `block_mxfp4`s, keeping the rows `pick` names.
///
/// The E8M0 scale byte is copied: ggml doubles the E2M1 table and halves the scale, which
/// gives the same values as transformers' `lut[q] * 2^(e - 127)`. Only the nibble order
/// differs: the checkpoint holds element `2i` in the low and `2i + 1` in the high nibble of
/// byte `i`; ggml holds element `j` in the low and `j + 16` in the high nibble of byte `j`.
pub(super) fn mxfp4_from_hf(blocks: &[u8], scales: &[u8], groups: usize, pick: Pick) -> Vec<u8> {
    let rows = scales.len() / groups.max(1);
    let kept = pick.count(rows);
    let mut out = Vec::with_capacity(kept * groups * (1 + HF_MXFP4_BLOCK));
    let code = |b: &[u8], i: usize| if i.is_multiple_of(2) { b[i / 2] & 0x0F } else { b[i / 2] >> 4 };
    for r in (0..kept).map(|j| pick.index(j)) {
        for g in 0..groups {
            let at = r * groups + g;
            let b = &blocks[at * HF_MXFP4_BLOCK..][..HF_MXFP4_BLOCK];
            out.push(scales[at]);
            out.extend((0..HF_MXFP4_BLOCK).map(|j| code(b, j) | (code(b, j + HF_MXFP4_BLOCK) << 4)));
        }
    }
    out
}

/// `[n, a, b]` elements of `elem` bytes to `[n, b', a]`, where `b'` are the columns `pick`
/// keeps: transformers stores gpt-oss's dense experts input-dim first, GGUF output-dim first.
pub(super) fn transpose_pick(bytes: &[u8], elem: usize, n: usize, a: usize, b: usize, pick: Pick) -> Vec<u8> {
    // Tiles keep both the strided reads and the writes within cache for real sizes
    // (gpt-oss-20b: a = 2880, b = 5760 per expert).
    const TILE: usize = 32;
    let kept = pick.count(b);
    let mut out = vec![0u8; n * kept * a * elem];
    for x in 0..n {
        let src = &bytes[x * a * b * elem..][..a * b * elem];
        let dst = &mut out[x * kept * a * elem..][..kept * a * elem];
        for j0 in (0..kept).step_by(TILE) {
            for i0 in (0..a).step_by(TILE) {
                for j in j0..(j0 + TILE).min(kept) {
                    let col = pick.index(j);
                    for i in i0..(i0 + TILE).min(a) {
                        let from = (i * b + col) * elem;
                        let to = (j * a + i) * elem;
                        dst[to..to + elem].copy_from_slice(&src[from..from + elem]);
                    }
                }
            }
        }
    }
    out
}

/// The columns `pick` keeps of each `cols`-wide row of `elem`-byte elements.
pub(super) fn pick_columns(bytes: &[u8], elem: usize, cols: usize, pick: Pick) -> Vec<u8> {
    let kept = pick.count(cols);
    let mut out = Vec::with_capacity(bytes.len() / cols.max(1) * kept);
    for row in bytes.chunks_exact(cols * elem) {
        for j in 0..kept {
            let at = pick.index(j) * elem;
            out.extend_from_slice(&row[at..at + elem]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(b: &[u8]) -> Vec<f32> {
        b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    }

    #[test]
    fn widens_with_shift() {
        let h: Vec<u8> = [0.5f32, -2.0].iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect();
        assert_eq!(floats(&to_f32(Dtype::F16, &h, 1.0)), vec![1.5, -1.0]);
        let b: Vec<u8> = [0.25f32, 3.0].iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect();
        assert_eq!(floats(&to_f32(Dtype::BF16, &b, 0.0)), vec![0.25, 3.0]);
        // Unaligned input.
        let mut f = vec![9u8];
        f.extend_from_slice(&7.0f32.to_le_bytes());
        assert_eq!(floats(&to_f32(Dtype::F32, &f[1..], 0.0)), vec![7.0]);
    }

    #[test]
    fn splits_fused_rows() {
        // Two experts, each rows [g0, g1, u0, u1] of one byte.
        let bytes = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(fused_half(&bytes, 2, 2, false), vec![1, 2, 5, 6]);
        assert_eq!(fused_half(&bytes, 2, 2, true), vec![3, 4, 7, 8]);
        assert_eq!(stack(&[&[1, 2], &[3, 4]]), vec![1, 2, 3, 4]);
    }

    #[test]
    fn negates_exponentials_and_gathers_rows() {
        let a: Vec<u8> = [0.0f32, 1.0, -2.5].iter().flat_map(|v| v.to_le_bytes()).collect();
        let want: Vec<f32> = [0.0f64, 1.0, -2.5].iter().map(|&x| -x.exp() as f32).collect();
        assert_eq!(floats(&neg_exp_f32(Dtype::F32, &a)), want);
        let b: Vec<u8> = [1.0f32, -0.5].iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect();
        assert_eq!(
            floats(&neg_exp_f32(Dtype::BF16, &b)),
            vec![-(1f64.exp() as f32), -((-0.5f64).exp() as f32)]
        );
        // Five rows of two one-byte elements: rows 3, 4, then 0.
        let rows = [0, 1, 10, 11, 20, 21, 30, 31, 40, 41];
        assert_eq!(gather_rows(&rows, 2, &[(3, 2), (0, 1)]), vec![30, 31, 40, 41, 0, 1]);
    }

    #[test]
    fn repacks_mxfp4_nibbles_into_ggml_order() {
        // One row, one block: codes 0..32 mod 16 with code i at element i.
        let codes: Vec<u8> = (0..32u8).map(|i| (i * 7) % 16).collect();
        let hf: Vec<u8> = (0..16).map(|i| codes[2 * i] | (codes[2 * i + 1] << 4)).collect();
        let out = mxfp4_from_hf(&hf, &[130], 1, Pick::All);
        assert_eq!(out.len(), 17);
        assert_eq!(out[0], 130);
        for j in 0..16 {
            assert_eq!(out[1 + j] & 0x0F, codes[j], "low nibble {j}");
            assert_eq!(out[1 + j] >> 4, codes[j + 16], "high nibble {j}");
        }
        // Four rows of one block each: Odd keeps rows 1 and 3 with their scales.
        let blocks: Vec<u8> = (0..4).flat_map(|r| vec![r as u8 * 0x11; 16]).collect();
        let odd = mxfp4_from_hf(&blocks, &[10, 11, 12, 13], 1, Pick::Odd);
        assert_eq!((odd.len(), odd[0], odd[1], odd[17], odd[18]), (34, 11, 0x11, 13, 0x33));
    }

    #[test]
    fn transposes_and_picks_columns() {
        // Two experts of [a = 2, b = 4] one-byte elements: element (x, i, c) = 100x + 10i + c.
        let bytes: Vec<u8> = (0..2)
            .flat_map(|x| (0..2).flat_map(move |i| (0..4).map(move |c| 100 * x + 10 * i + c)))
            .collect();
        assert_eq!(transpose_pick(&bytes, 1, 2, 2, 4, Pick::Even), vec![0, 10, 2, 12, 100, 110, 102, 112]);
        assert_eq!(transpose_pick(&bytes, 1, 2, 2, 4, Pick::Odd), vec![1, 11, 3, 13, 101, 111, 103, 113]);
        assert_eq!(transpose_pick(&bytes[..8], 1, 1, 2, 4, Pick::All), vec![0, 10, 1, 11, 2, 12, 3, 13]);
        // Two-byte elements move whole.
        let wide = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(transpose_pick(&wide, 2, 1, 2, 2, Pick::All), vec![1, 2, 5, 6, 3, 4, 7, 8]);
        assert_eq!(pick_columns(&[1, 2, 3, 4, 5, 6], 1, 2, Pick::Odd), vec![2, 4, 6]);
        assert_eq!(pick_columns(&[1, 2, 3, 4], 2, 2, Pick::Even), vec![1, 2]);
    }
}
