//! A write-only view of an output slice shared by the tasks of one parallel region, each of
//! which writes its own set of indices (matrix columns are interleaved between tasks, so the
//! slice cannot be split into disjoint sub-slices).

use std::marker::PhantomData;

#[derive(Clone, Copy)]
pub(crate) struct OutPtr<'a> {
    ptr: *mut f32,
    len: usize,
    window: Option<Window>,
    _slice: PhantomData<&'a mut [f32]>,
}

/// Outputs `t · rows + r` of a kernel that sees `rows` rows of a matrix of `total` rows, from
/// row `first`: they go to `t · total + first + r`.
#[derive(Clone, Copy)]
struct Window {
    total: usize,
    first: usize,
    rows: usize,
}

// SAFETY: the pointer comes from a `&mut [f32]` borrowed for `'a`; tasks write disjoint
// indices (each row of W, each output row, belongs to one task), so no element is accessed
// by two threads.
unsafe impl Send for OutPtr<'_> {}
unsafe impl Sync for OutPtr<'_> {}

impl<'a> OutPtr<'a> {
    pub(crate) fn new(s: &'a mut [f32]) -> Self {
        OutPtr { ptr: s.as_mut_ptr(), len: s.len(), window: None, _slice: PhantomData }
    }

    /// This output (token-major, `total` values per token) as a kernel over rows
    /// `first..first + rows` of the matrix writes it: its index `t · rows + r` is row
    /// `first + r` of token `t`.
    pub(crate) fn window(self, total: usize, first: usize, rows: usize) -> Self {
        assert!(self.window.is_none() && first + rows <= total, "window {first}+{rows} of {total}");
        if first == 0 && rows == total {
            return self;
        }
        OutPtr { window: Some(Window { total, first, rows }), ..self }
    }

    /// `len` elements from `start`, for a task that owns that range.
    ///
    /// # Safety
    /// No other task may access `start..start + len` while the slice lives.
    #[inline(always)]
    pub(crate) unsafe fn slice(self, start: usize, len: usize) -> &'a mut [f32] {
        assert!(self.window.is_none(), "a window of rows has no contiguous slices");
        assert!(
            start <= self.len && len <= self.len - start,
            "output range {start}+{len} outside {}",
            self.len
        );
        // SAFETY: in bounds (checked); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }

    /// Where the kernel's index `i` lies in the slice.
    #[inline(always)]
    fn index(self, i: usize) -> usize {
        match self.window {
            Some(w) => i / w.rows * w.total + w.first + i % w.rows,
            None => i,
        }
    }

    /// `values` to indices `i..i + values.len()`, all of them rows of one token.
    #[inline(always)]
    pub(crate) fn write_run(self, i: usize, values: &[f32]) {
        if let Some(w) = self.window {
            assert!(i % w.rows + values.len() <= w.rows, "run {i}+{} crosses a token", values.len());
        }
        let i = self.index(i);
        assert!(
            i <= self.len && values.len() <= self.len - i,
            "output run {i}+{} outside {}",
            values.len(),
            self.len
        );
        // SAFETY: in bounds (checked), and no other task writes these indices.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), self.ptr.add(i), values.len()) }
    }

    #[inline(always)]
    pub(crate) fn write(self, i: usize, v: f32) {
        let i = self.index(i);
        assert!(i < self.len, "output index {i} outside {}", self.len);
        // SAFETY: in bounds (checked), and no other task writes index `i`.
        unsafe { self.ptr.add(i).write(v) }
    }
}
