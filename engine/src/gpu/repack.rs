//! The GPU layout of quantized weights.
//!
//! GGUF blocks are 17 to 210 bytes and mostly not 4-byte aligned (Q8_0 is 34 bytes), so reading
//! them straight from the file's layout costs several unaligned word loads per block. On load we
//! split every block into a *payload* of quant bits, a whole number of 16-byte vectors read with
//! one aligned `vec4<u32>` load each, and a few 32-bit words of *metadata* (scales, minimums, high
//! bits). A buffer holds all payloads (row-major by row, then block) followed by all metadata.
//! The split is written straight into the mapped GPU buffer while reading the memory map, so it
//! costs no extra host copy. Float types keep their bytes; their "block" is a 32-element run.

use wllm_loaders::GgmlType;

/// Bytes of payload (a multiple of 16) and metadata (a multiple of 4, or 1 or 2 for the
/// types whose blocks pack their one-byte or two-byte metadata four or two to a word) per block.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct GpuLayout {
    /// Elements per block.
    pub elems: u32,
    /// Bytes of the GGUF block.
    pub src: u32,
    pub payload: u32,
    pub meta: u32,
}

pub fn layout(t: GgmlType) -> Option<GpuLayout> {
    use GgmlType::*;
    let (elems, src, payload, meta) = match t {
        F32 => (32, 128, 128, 0),
        F16 | BF16 => (32, 64, 64, 0),
        Q4_0 => (32, 18, 16, 2),
        Q4_1 => (32, 20, 16, 4),
        Q5_0 => (32, 22, 16, 8),
        Q5_1 => (32, 24, 16, 8),
        Q8_0 => (32, 34, 32, 2),
        MXFP4 => (32, 17, 16, 1),
        IQ4_NL => (32, 18, 16, 2),
        IQ4_XS => (256, 136, 128, 8),
        IQ2_XXS => (256, 66, 64, 2),
        IQ2_XS => (256, 74, 64, 12),
        IQ2_S => (256, 82, 64, 20),
        IQ3_XXS => (256, 98, 96, 2),
        IQ3_S => (256, 110, 96, 16),
        IQ1_S => (256, 50, 48, 2),
        IQ1_M => (256, 56, 48, 8),
        Q2_K => (256, 84, 64, 20),
        Q3_K => (256, 110, 96, 16),
        Q4_K => (256, 144, 128, 16),
        Q5_K => (256, 176, 160, 16),
        Q6_K => (256, 210, 192, 20),
        _ => return None,
    };
    Some(GpuLayout { elems, src, payload, meta })
}

/// Where each byte range of a GGUF block goes: (from, to, payload or meta, at).
fn pieces(t: GgmlType) -> &'static [(usize, usize, bool, usize)] {
    use GgmlType::*;
    const P: bool = true;
    const M: bool = false;
    match t {
        Q4_0 => &[(0, 2, M, 0), (2, 18, P, 0)],
        Q4_1 => &[(0, 4, M, 0), (4, 20, P, 0)],
        Q5_0 => &[(0, 2, M, 0), (2, 6, M, 4), (6, 22, P, 0)],
        Q5_1 => &[(0, 8, M, 0), (8, 24, P, 0)],
        Q8_0 => &[(0, 2, M, 0), (2, 34, P, 0)],
        MXFP4 => &[(0, 1, M, 0), (1, 17, P, 0)],
        IQ4_NL => &[(0, 2, M, 0), (2, 18, P, 0)],
        // d scales_h scales_l[4] qs[128] -> meta: d | scales_h << 16, scales_l; payload: qs
        IQ4_XS => &[(0, 8, M, 0), (8, 136, P, 0)],
        // The codebook types: d | grid indices, signs and run scales -> meta: d (IQ2_XXS, IQ3_XXS,
        // IQ1_S: packed), the byte arrays read once per run; payload: what is read per group.
        // d qs[64] / d qs[64] scales_and_signs[32] / d qs[32] qh[16]
        IQ2_XXS => &[(0, 2, M, 0), (2, 66, P, 0)],
        IQ3_XXS => &[(0, 2, M, 0), (2, 98, P, 0)],
        IQ1_S => &[(0, 2, M, 0), (2, 50, P, 0)],
        // d qs[64] scales[8] -> meta: d, pad, scales
        IQ2_XS => &[(0, 2, M, 0), (66, 74, M, 4), (2, 66, P, 0)],
        // d qs[32] signs[32] qh[8] scales[8] -> meta: d, pad, qh, scales; payload: qs, signs
        IQ2_S => &[(0, 2, M, 0), (66, 82, M, 4), (2, 66, P, 0)],
        // d qs[64] qh[8] signs[32] scales[4] -> meta: d, pad, qh, scales; payload: qs, signs
        IQ3_S => &[(0, 2, M, 0), (66, 74, M, 4), (106, 110, M, 12), (2, 66, P, 0), (74, 106, P, 64)],
        // qs[32] qh[16] scales[8] -> meta: scales; payload: qs, qh
        IQ1_M => &[(48, 56, M, 0), (0, 48, P, 0)],
        // scales[16] qs[64] d dmin -> meta: d dmin, scales; payload: qs
        Q2_K => &[(80, 84, M, 0), (0, 16, M, 4), (16, 80, P, 0)],
        // hmask[32] qs[64] scales[12] d -> meta: d, pad, scales; payload: hmask, qs
        Q3_K => &[(108, 110, M, 0), (96, 108, M, 4), (0, 96, P, 0)],
        // d dmin scales[12] | (qh[32]) qs[128]
        Q4_K => &[(0, 16, M, 0), (16, 144, P, 0)],
        Q5_K => &[(0, 16, M, 0), (16, 176, P, 0)],
        // ql[128] qh[64] scales[16] d -> meta: d, pad, scales; payload: ql, qh
        Q6_K => &[(208, 210, M, 0), (192, 208, M, 4), (0, 192, P, 0)],
        _ => &[],
    }
}

/// Bytes of the GPU form of `n_blocks` blocks: payload region, then metadata region (whole
/// words).
pub fn gpu_bytes(l: &GpuLayout, n_blocks: u64) -> (u64, u64) {
    let payload = n_blocks * l.payload as u64;
    (payload, payload + (n_blocks * l.meta as u64).next_multiple_of(4))
}

/// Writes the GPU form of `src` (whole GGUF blocks) through `put(offset, bytes)`: payloads from
/// offset 0, metadata from `gpu_bytes(..).0`. Bytes never written (metadata padding) stay zero.
pub fn repack(t: GgmlType, src: &[u8], put: &mut dyn FnMut(usize, &[u8])) {
    let Some(l) = layout(t) else { return };
    if !t.is_quantized() {
        put(0, src);
        return;
    }
    let n = src.len() / l.src as usize;
    let meta_at = gpu_bytes(&l, n as u64).0 as usize;
    let (p, m) = (l.payload as usize, l.meta as usize);
    for (i, b) in src.chunks_exact(l.src as usize).enumerate() {
        for &(from, to, payload, at) in pieces(t) {
            let dst = if payload { i * p + at } else { meta_at + i * m + at };
            put(dst, &b[from..to]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_type_table() {
        for t in GgmlType::all() {
            if let Some(l) = layout(t) {
                assert_eq!(l.payload % 16, 0, "{t}");
                assert!(l.meta % 4 == 0 || l.meta == 1 || l.meta == 2, "{t}");
                if t.is_quantized() {
                    assert_eq!(l.src as u64, t.type_size(), "{t}");
                    assert_eq!(l.elems as u64, t.block_size(), "{t}");
                } else {
                    assert_eq!(l.src as u64, 32 * t.type_size(), "{t}");
                }
                // Every byte of the block lands once, inside its region.
                if t.is_quantized() {
                    let mut seen = vec![0u32; l.src as usize];
                    for &(from, to, payload, at) in pieces(t) {
                        let cap = if payload { l.payload } else { l.meta } as usize;
                        assert!(at + (to - from) <= cap, "{t}");
                        seen[from..to].iter_mut().for_each(|s| *s += 1);
                    }
                    assert!(seen.iter().all(|&s| s == 1), "{t}: {seen:?}");
                }
            }
        }
    }
}
