//! Q4_K and Q6_K weights in the layout the decode VNNI kernels read best: sixteen rows
//! interleaved.
//!
//! In the file's layout a `vpdpbusd` over 64 quant bytes covers two 32-element sub-blocks of
//! one row, so each product needs its sub-block scales spread across the lanes (a permute and
//! a multiply per 64 weights) and every row decodes its 6-bit scales on its own. Here the 16
//! lanes of a vector are 16 rows: a product takes 4 quant bytes of each row against 4
//! activation bytes broadcast to every lane, a sub-block's scales arrive as one vector of 16
//! bytes, and the scale decoding is shared by the 16 rows. The loader rewrites a matrix into
//! this layout once (load time), when its rows come in whole groups of 16.
//!
//! A group's super-block `i` (16 rows' block `i`, 2304 bytes, as many as the 16 blocks in the
//! file) holds, in order:
//! - `d` of each row (16 f16), then `dmin` of each row (16 f16);
//! - 128 bytes `L`: byte `16j + r` is the low 4 bits of row `r`'s scale `j` and, in its high
//!   nibble, those of its minimum `j`;
//! - 64 bytes `H`: byte `16m + r` (`m` = 0..4) holds the top 2 bits of row `r`'s scale `m`
//!   (bits 0-1), scale `m + 4` (2-3), minimum `m` (4-5) and minimum `m + 4` (6-7), so a
//!   512-bit shift and mask bring a whole 64-byte half of `L` its top bits;
//! - 2048 quant bytes: for pair `c` (sub-blocks `2c`, `2c + 1`) and step `t` (0..8), 64 bytes
//!   holding, per row `r`, bytes `32c + 4t..32c + 4t + 4` of its `qs` (low nibbles: elements
//!   `64c + 4t..`, high nibbles: elements `64c + 32 + 4t..`).
//!
//! A Q6_K group's super-block (3360 bytes, the 16 rows' 210-byte blocks) holds:
//! - `d` of each row (16 f16);
//! - 256 scale bytes: byte `16j + r` is row `r`'s scale of 16-element sub-block `j`;
//! - 2048 bytes of `ql`: for half `n` (elements `128n..`), run `h` and step `t` (0..8), 64
//!   bytes holding per row bytes `64n + 32h + 4t..+4` of its `ql` (low nibbles: elements
//!   `128n + 32h + 4t..`, high nibbles: `128n + 64 + 32h + 4t..`);
//! - 1024 bytes of `qh`: for half `n` and step `t`, per row bytes `32n + 4t..+4` of its `qh`
//!   (bits `2q..2q + 2` are the top bits of elements `128n + 32q + 4t..`).
//!
//! Groups follow each other as the rows did, so a run of whole groups sits where its rows did
//! in the file, and the layout is lossless: [`unpack`] restores the file's bytes.

use wllm_loaders::GgmlType;

/// Rows interleaved in a group.
pub(crate) const GROUP_ROWS: usize = 16;

/// Bytes of a Q4_K and of a Q6_K super-block.
const Q4K_BLOCK: usize = 144;
const Q6K_BLOCK: usize = 210;

/// Bytes of one super-block of a Q4_K group.
pub(crate) const GROUP_BLOCK: usize = GROUP_ROWS * Q4K_BLOCK;
/// Bytes of one super-block of a Q6_K group.
pub(crate) const Q6K_GROUP_BLOCK: usize = GROUP_ROWS * Q6K_BLOCK;

/// Offsets in a Q4_K group's super-block.
pub(crate) const AT_DMIN: usize = 32;
pub(crate) const AT_LOW: usize = 64;
pub(crate) const AT_HIGH: usize = 192;
pub(crate) const AT_QS: usize = 256;

/// Offsets in a Q6_K group's super-block.
pub(crate) const Q6K_AT_SCALES: usize = 32;
pub(crate) const Q6K_AT_QL: usize = 288;
pub(crate) const Q6K_AT_QH: usize = 2336;

/// Whether `ty` has a packed layout.
pub(crate) fn has_layout(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_K | GgmlType::Q6_K)
}

/// Whether a matrix of `rows` rows per expert (the rows of a plain matrix) can take the layout.
pub(crate) fn fits(rows: usize) -> bool {
    rows > 0 && rows.is_multiple_of(GROUP_ROWS)
}

/// The super-block size of `ty`'s layout (panics for a type without one).
fn block_bytes(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q4_K => Q4K_BLOCK,
        GgmlType::Q6_K => Q6K_BLOCK,
        _ => panic!("{ty} has no packed layout"),
    }
}

/// Rewrites whole groups of `ty` rows (`row_bytes` each) from the file's layout in `src` into
/// the packed layout in `dst` (the same length).
pub(crate) fn pack(ty: GgmlType, src: &[u8], dst: &mut [u8], row_bytes: usize) {
    assert_eq!(src.len(), dst.len(), "packing changes no length");
    let block = block_bytes(ty);
    let group_bytes = GROUP_ROWS * row_bytes;
    assert!(src.len().is_multiple_of(group_bytes) && row_bytes.is_multiple_of(block));
    for (from, to) in src.chunks_exact(group_bytes).zip(dst.chunks_exact_mut(group_bytes)) {
        for (i, out) in to.chunks_exact_mut(GROUP_ROWS * block).enumerate() {
            let rows = |r: usize| -> &[u8] { &from[r * row_bytes + i * block..][..block] };
            match ty {
                GgmlType::Q4_K => pack_q4k_block(rows, out),
                _ => pack_q6k_block(rows, out),
            }
        }
    }
}

/// One super-block of a Q6_K group from the 16 rows' blocks.
fn pack_q6k_block<'a>(block: impl Fn(usize) -> &'a [u8], out: &mut [u8]) {
    for r in 0..GROUP_ROWS {
        let b = block(r);
        out[2 * r..2 * r + 2].copy_from_slice(&b[208..210]);
        for j in 0..16 {
            out[Q6K_AT_SCALES + 16 * j + r] = b[192 + j];
        }
        for (n, quad) in b[..128].chunks_exact(4).enumerate() {
            let at = Q6K_AT_QL + (n * GROUP_ROWS + r) * 4;
            out[at..at + 4].copy_from_slice(quad);
        }
        for (n, quad) in b[128..192].chunks_exact(4).enumerate() {
            let at = Q6K_AT_QH + (n * GROUP_ROWS + r) * 4;
            out[at..at + 4].copy_from_slice(quad);
        }
    }
}

/// Row `r`'s 210-byte block from one super-block of a Q6_K group.
fn unpack_q6k_block(blk: &[u8], r: usize, out: &mut [u8]) {
    out[208..210].copy_from_slice(&blk[2 * r..2 * r + 2]);
    for j in 0..16 {
        out[192 + j] = blk[Q6K_AT_SCALES + 16 * j + r];
    }
    for n in 0..32 {
        let at = Q6K_AT_QL + (n * GROUP_ROWS + r) * 4;
        out[4 * n..4 * n + 4].copy_from_slice(&blk[at..at + 4]);
    }
    for n in 0..16 {
        let at = Q6K_AT_QH + (n * GROUP_ROWS + r) * 4;
        out[128 + 4 * n..128 + 4 * n + 4].copy_from_slice(&blk[at..at + 4]);
    }
}

/// One super-block of a Q4_K group from the 16 rows' blocks.
fn pack_q4k_block<'a>(block: impl Fn(usize) -> &'a [u8], out: &mut [u8]) {
    out[AT_HIGH..AT_QS].fill(0);
    for r in 0..GROUP_ROWS {
        let b = block(r);
        out[2 * r..2 * r + 2].copy_from_slice(&b[0..2]);
        out[AT_DMIN + 2 * r..AT_DMIN + 2 * r + 2].copy_from_slice(&b[2..4]);
        let (scales, mins) = super::kquants_scales_mins(b[4..16].try_into().expect("12 bytes"));
        let field = |word: u64, j: usize| (word >> (8 * j)) as u8;
        for j in 0..8 {
            let (scale, min) = (field(scales, j), field(mins, j));
            out[AT_LOW + 16 * j + r] = (scale & 0x0F) | (min & 0x0F) << 4;
            let shift = if j < 4 { 0 } else { 2 };
            out[AT_HIGH + 16 * (j % 4) + r] |= (scale >> 4) << shift | (min >> 4) << (shift + 4);
        }
        for (n, quad) in b[16..].chunks_exact(4).enumerate() {
            let at = AT_QS + (n * GROUP_ROWS + r) * 4;
            out[at..at + 4].copy_from_slice(quad);
        }
    }
}

/// Restores the file's layout of rows `first..first + dst.len() / row_bytes` of the `ty`
/// matrix whose packed bytes are `packed` (`first` and the count whole groups).
pub(crate) fn unpack(ty: GgmlType, packed: &[u8], first: usize, dst: &mut [u8], row_bytes: usize) {
    let block = block_bytes(ty);
    let group_bytes = GROUP_ROWS * row_bytes;
    assert!(first.is_multiple_of(GROUP_ROWS) && dst.len().is_multiple_of(group_bytes));
    let from = &packed[first * row_bytes..][..dst.len()];
    for (group, to) in from.chunks_exact(group_bytes).zip(dst.chunks_exact_mut(group_bytes)) {
        for (i, blk) in group.chunks_exact(GROUP_ROWS * block).enumerate() {
            for r in 0..GROUP_ROWS {
                let out = &mut to[r * row_bytes + i * block..][..block];
                match ty {
                    GgmlType::Q4_K => unpack_q4k_block(blk, r, out),
                    _ => unpack_q6k_block(blk, r, out),
                }
            }
        }
    }
}

/// Row `r`'s 144-byte block from one super-block of a Q4_K group.
fn unpack_q4k_block(blk: &[u8], r: usize, out: &mut [u8]) {
    out[0..2].copy_from_slice(&blk[2 * r..2 * r + 2]);
    out[2..4].copy_from_slice(&blk[AT_DMIN + 2 * r..AT_DMIN + 2 * r + 2]);
    let mut scales = [0u8; 8];
    let mut mins = [0u8; 8];
    for j in 0..8 {
        let low = blk[AT_LOW + 16 * j + r];
        let shift = if j < 4 { 0 } else { 2 };
        let high = blk[AT_HIGH + 16 * (j % 4) + r] >> shift;
        scales[j] = (low & 0x0F) | (high & 3) << 4;
        mins[j] = low >> 4 | ((high >> 4) & 3) << 4;
    }
    // The file's 12-byte packing (ggml's `get_scale_min_k4` read backwards): sub-blocks 0-3
    // keep 6 bits in bytes 0-7; 4-7 keep their low 4 bits in bytes 8-11 and their top 2 bits
    // in the top of bytes 0-7.
    let sc = &mut out[4..16];
    for j in 0..4 {
        sc[j] = scales[j] | (scales[j + 4] >> 4) << 6;
        sc[j + 4] = mins[j] | (mins[j + 4] >> 4) << 6;
        sc[j + 8] = (scales[j + 4] & 0x0F) | (mins[j + 4] & 0x0F) << 4;
    }
    for n in 0..32 {
        let at = AT_QS + (n * GROUP_ROWS + r) * 4;
        out[16 + 4 * n..16 + 4 * n + 4].copy_from_slice(&blk[at..at + 4]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pseudo-random bytes (every bit pattern of the scales occurs).
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 33) as u8
            })
            .collect()
    }

    #[test]
    fn packing_is_lossless() {
        for ty in [GgmlType::Q4_K, GgmlType::Q6_K] {
            for (rows, blocks) in [(16, 1), (32, 3), (48, 2)] {
                let rb = blocks * block_bytes(ty);
                let src = bytes(rows * rb, rows as u64);
                let mut packed = vec![0u8; src.len()];
                pack(ty, &src, &mut packed, rb);
                assert_ne!(packed, src);
                let mut back = vec![0u8; src.len()];
                unpack(ty, &packed, 0, &mut back, rb);
                if let Some(i) = back.iter().zip(&src).position(|(a, b)| a != b) {
                    panic!("{ty}: {rows} rows of {blocks} blocks: byte {i} (row {}) differs", i / rb);
                }
                let mut tail = vec![0u8; 16 * rb];
                unpack(ty, &packed, rows - 16, &mut tail, rb);
                assert_eq!(tail, src[(rows - 16) * rb..], "{ty}: {rows} rows: the last group alone");
            }
        }
    }
}
