//! How fast this machine's threads can stream memory: the ceiling of a decode step, which
//! reads every weight byte once. `wllm bench` prints it beside the rate decode reads weights at.

use std::time::Instant;

/// Bytes read per pass: far past any last-level cache, so every pass comes from DRAM.
const BUFFER_BYTES: usize = 1 << 30;
/// Passes measured; the best one counts (the first also faults nothing in: the buffer is
/// written before timing).
const PASSES: usize = 4;

/// Read bandwidth in bytes per second of `threads` threads each summing its own slice of a
/// 1 GiB buffer, best of a few passes. `None` when the buffer cannot be allocated.
pub fn read_bandwidth(threads: usize) -> Option<f64> {
    let words = BUFFER_BYTES / 8;
    let mut buffer: Vec<u64> = Vec::new();
    buffer.try_reserve_exact(words).ok()?;
    // Distinct values, so no page is shared with the zero page.
    buffer.extend((0..words as u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    let threads = threads.max(1);
    let slice = words.div_ceil(threads);
    let mut best = 0f64;
    for _ in 0..PASSES {
        let start = Instant::now();
        let total = std::thread::scope(|scope| {
            let handles: Vec<_> =
                buffer.chunks(slice).map(|part| scope.spawn(move || sum_words(part))).collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).fold(0u64, u64::wrapping_add)
        });
        std::hint::black_box(total);
        best = best.max(BUFFER_BYTES as f64 / start.elapsed().as_secs_f64());
    }
    Some(best)
}

/// A wrapping sum in eight independent lanes, which the compiler turns into vector adds with
/// no dependency chain to wait on: the loop is bound by the loads alone.
fn sum_words(words: &[u64]) -> u64 {
    let mut lanes = [0u64; 8];
    let (chunks, rest) = words.as_chunks::<8>();
    for chunk in chunks {
        for (lane, w) in lanes.iter_mut().zip(chunk) {
            *lane = lane.wrapping_add(*w);
        }
    }
    lanes.iter().chain(rest).fold(0u64, |s, w| s.wrapping_add(*w))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_every_word() {
        let words: Vec<u64> = (1..=21).collect();
        assert_eq!(super::sum_words(&words), 231);
    }
}
