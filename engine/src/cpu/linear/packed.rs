//! Matrices in the 16-row packed layout (`quant::packed`): which ones the loader rewrites, and
//! how the kernels that read rows in the file's layout (several tokens, prefill, embedding
//! rows) see them: each task unpacks the groups it covers into a buffer of its thread, which
//! stays in the cache, so the weights still stream from memory once per call.

use std::cell::RefCell;

use wllm_loaders::GgmlType;

use super::{OutPtr, WeightView};
use crate::cpu::Isa;
use crate::cpu::quant::packed::{self as layout, GROUP_ROWS};
use crate::error::{EngineError, Result};

/// Whether the CPU kernels of `isa` read a `ty` matrix of `rows` rows per expert (all its rows
/// when it is not a stack of experts) faster in the packed layout: Q4_K and Q6_K on AVX-512
/// VNNI.
pub fn packs(isa: Isa, ty: GgmlType, rows: usize) -> bool {
    isa.is_avx512_vnni() && layout_fits(ty, rows)
}

/// Whether `rows` rows of `ty` have a packed layout.
pub(crate) fn layout_fits(ty: GgmlType, rows: usize) -> bool {
    layout::has_layout(ty) && layout::fits(rows)
}

/// Whether rows `r0..r1` of a packed matrix are whole groups.
pub(crate) fn cuts_groups(r0: usize, r1: usize) -> bool {
    r0.is_multiple_of(GROUP_ROWS) && r1.is_multiple_of(GROUP_ROWS)
}

/// Rewrites `src`, rows of `ty` with `cols` elements in the file's layout, into the packed
/// layout in `dst` (as long as `src`).
pub fn pack(ty: GgmlType, cols: usize, src: &[u8], dst: &mut [u8]) -> Result<()> {
    let (bs, ts) = (ty.block_size() as usize, ty.type_size() as usize);
    let rb = cols.checked_div(bs).unwrap_or(0) * ts;
    let rows = src.len().checked_div(rb).unwrap_or(0);
    if !layout_fits(ty, rows) || !cols.is_multiple_of(bs) || rows * rb != src.len() || src.len() != dst.len()
    {
        return Err(EngineError::InvalidArgument(format!(
            "{} bytes of {ty} rows of {cols} (into {}) have no packed layout",
            src.len(),
            dst.len()
        )));
    }
    layout::pack(ty, src, dst, rb);
    Ok(())
}

thread_local! {
    /// The rows of the groups a task on this thread unpacked.
    static ROWS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f(view, first)` with rows `r0..r1` of `w` readable in the file's layout in `view`,
/// whose row 0 is row `first` of `w`: `w` itself (`first` = 0), or for a packed `w` the groups
/// that hold those rows, unpacked. `f` must not call this again.
pub(crate) fn in_row_layout<R>(
    w: WeightView<'_>,
    r0: usize,
    r1: usize,
    f: impl FnOnce(WeightView<'_>, usize) -> R,
) -> R {
    if !w.packed {
        return f(w, 0);
    }
    let first = r0 / GROUP_ROWS * GROUP_ROWS;
    let last = r1.next_multiple_of(GROUP_ROWS).min(w.rows);
    let rb = w.row_bytes();
    ROWS.with_borrow_mut(|buf| {
        buf.resize((last - first) * rb, 0);
        layout::unpack(w.ty, w.bytes, first, buf, rb);
        f(WeightView { rows: last - first, bytes: buf, packed: false, ..w }, first)
    })
}

/// Rows of a packed matrix per GEMM task: whole groups and whole panels of any instruction
/// set (4, 6, 8 or 12 rows), so each task unpacks its groups once.
const PANEL_TASK_ROWS: usize = 48;

/// The tasks `(job, r0, r1)` of a GEMM over `jobs` in panels of `mr` rows: one panel each, or
/// for a packed matrix [`PANEL_TASK_ROWS`] rows each.
pub(crate) fn panel_tasks(jobs: &[(WeightView<'_>, OutPtr<'_>)], mr: usize) -> Vec<(usize, usize, usize)> {
    let mut tasks = Vec::new();
    for (i, (w, _)) in jobs.iter().enumerate() {
        let step = if w.packed { PANEL_TASK_ROWS } else { mr };
        debug_assert!(!w.packed || PANEL_TASK_ROWS.is_multiple_of(mr));
        tasks.extend((0..w.rows).step_by(step).map(|r| (i, r, (r + step).min(w.rows))));
    }
    tasks
}

/// Up to this many tokens multiply packed matrices in matvec passes of four tokens on the
/// packed kernels rather than in the GEMM, whose tasks unpack the groups first: a pass reads
/// the weights at about the rate the GEMM multiplies, and the unpacking costs the GEMM most at
/// small batches (7B shape, 2 threads, tokens/s through passes vs the GEMM: 16 tokens 20.7
/// vs 8.8, 64 tokens 21.9 vs 19.9, 256 tokens 19.8 vs 22.3). The AMX GEMM multiplies about
/// twice as fast and overtakes the passes sooner (Xeon, 2 threads, passes vs AMX: 16 tokens
/// 17.6 vs 15.5, 24 tokens 18.7 vs 17.5, 32 tokens 19.4 vs 23.4).
pub(crate) fn passed_tokens(isa: Isa) -> usize {
    #[cfg(target_arch = "x86_64")]
    if isa.is_amx() {
        return 24;
    }
    let _ = isa;
    64
}

/// Whether `w` multiplies on the packed kernels of `isa`.
pub(crate) fn passes(isa: Isa, w: WeightView<'_>) -> bool {
    w.packed && isa.is_avx512_vnni()
}
