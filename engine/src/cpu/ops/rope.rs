//! Rotary position embedding of one head, from a (cos, sin) table row computed in f64
//! ([`RopeSpec::table`](crate::layers::RopeSpec::table)): pair `i` turns by position × frequency `i`.

use wllm_loaders::model::RopeLayout;

use crate::error::{EngineError, Result};

/// How a head is rotated.
#[derive(Copy, Clone, Debug)]
pub struct Rope {
    /// Leading dimensions rotated; the rest pass through.
    pub n_rot: usize,
    pub layout: RopeLayout,
}

/// Rotates `x` (one head) by the table row `cs` of its position (`n_rot / 2` pairs).
pub fn rope_in_place(r: Rope, x: &mut [f32], cs: &[[f32; 2]]) -> Result<()> {
    let half = r.n_rot / 2;
    if r.n_rot > x.len() || !r.n_rot.is_multiple_of(2) || cs.len() < half {
        return Err(EngineError::InvalidArgument(format!(
            "rope: {} rotated of a {}-element head with {} table pairs",
            r.n_rot,
            x.len(),
            cs.len()
        )));
    }
    match r.layout {
        RopeLayout::Normal => {
            for (p, c) in x[..r.n_rot].chunks_exact_mut(2).zip(cs) {
                let (x0, x1) = (p[0], p[1]);
                p[0] = x0 * c[0] - x1 * c[1];
                p[1] = x0 * c[1] + x1 * c[0];
            }
        }
        RopeLayout::Neox => {
            let (a, b) = x[..r.n_rot].split_at_mut(half);
            for ((x0, x1), c) in a.iter_mut().zip(b.iter_mut()).zip(cs) {
                let (v0, v1) = (*x0, *x1);
                *x0 = v0 * c[0] - v1 * c[1];
                *x1 = v0 * c[1] + v1 * c[0];
            }
        }
    }
    Ok(())
}
