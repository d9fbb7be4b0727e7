//! A write-only view of an output slice shared by the tasks of one parallel region, each of
//! which writes its own set of indices (matrix columns are interleaved between tasks, so the
//! slice cannot be split into disjoint sub-slices).

use std::marker::PhantomData;

#[derive(Clone, Copy)]
pub(crate) struct OutPtr<'a> {
    ptr: *mut f32,
    len: usize,
    _slice: PhantomData<&'a mut [f32]>,
}

// SAFETY: the pointer comes from a `&mut [f32]` borrowed for `'a`; tasks write disjoint
// indices (each row of W, each output row, belongs to one task), so no element is accessed
// by two threads.
unsafe impl Send for OutPtr<'_> {}
unsafe impl Sync for OutPtr<'_> {}

impl<'a> OutPtr<'a> {
    pub(crate) fn new(s: &'a mut [f32]) -> Self {
        OutPtr { ptr: s.as_mut_ptr(), len: s.len(), _slice: PhantomData }
    }

    /// `len` elements from `start`, for a task that owns that range.
    ///
    /// # Safety
    /// No other task may access `start..start + len` while the slice lives.
    #[inline(always)]
    pub(crate) unsafe fn slice(self, start: usize, len: usize) -> &'a mut [f32] {
        assert!(
            start <= self.len && len <= self.len - start,
            "output range {start}+{len} outside {}",
            self.len
        );
        // SAFETY: in bounds (checked); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }

    #[inline(always)]
    pub(crate) fn write(self, i: usize, v: f32) {
        assert!(i < self.len, "output index {i} outside {}", self.len);
        // SAFETY: in bounds (checked), and no other task writes index `i`.
        unsafe { self.ptr.add(i).write(v) }
    }
}
