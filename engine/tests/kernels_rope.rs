//! RoPE against the float64 reference, which computes every angle from the spec's base,
//! frequency scale and per-frequency factors (Llama 3's `rope_freqs.weight`), never from the
//! (cos, sin) table the kernels read. Both layouts, partial rotation, positions up to ~300,
//! factors none, Llama-3-shaped and random in [1, 8], with and without per-head q/k norms: the
//! GPU `rope_kv` kernel (q rotated in place, k and v into the cache) on every device
//! configuration, and the CPU `rope_in_place` (after `rms_norm_in_place`, as the CPU layers run
//! them) on every instruction set.

mod common;

use common::{Rng, check_close, gpus, reference};
use wllm_engine::Gpu;
use wllm_engine::cpu::Isa;
use wllm_engine::cpu::ops::{Rope, rms_norm_in_place, rope_in_place};
use wllm_engine::layers::{RopeSpec, RopeTable};
use wllm_engine::ops::rope::{RopeArgs, rope_kv};
use wllm_loaders::model::{RopeLayout, Yarn};

const EPS: f32 = 1e-6;
/// Positions in the cache: the two steps below reach 297.
const CTX: u32 = 300;
/// (first position, tokens): a short prompt, then a batch far into the context.
const STEPS: [(u32, u32); 2] = [(0, 3), (261, 37)];

/// Heads of one test case.
#[derive(Clone, Copy, Debug)]
struct Heads {
    n_head: u32,
    n_kv: u32,
    hd: u32,
    n_rot: u32,
    layout: RopeLayout,
    qk_norm: bool,
}

impl Heads {
    fn nq(&self) -> usize {
        (self.n_head * self.hd) as usize
    }
    fn nk(&self) -> usize {
        (self.n_kv * self.hd) as usize
    }
    /// A packed [q | k | v] row.
    fn stride(&self) -> usize {
        self.nq() + 2 * self.nk()
    }
}

const HEADS: [Heads; 5] = [
    Heads { n_head: 4, n_kv: 2, hd: 64, n_rot: 32, layout: RopeLayout::Normal, qk_norm: false },
    Heads { n_head: 4, n_kv: 2, hd: 64, n_rot: 32, layout: RopeLayout::Neox, qk_norm: false },
    Heads { n_head: 3, n_kv: 1, hd: 128, n_rot: 64, layout: RopeLayout::Neox, qk_norm: true },
    Heads { n_head: 2, n_kv: 2, hd: 80, n_rot: 48, layout: RopeLayout::Normal, qk_norm: true },
    Heads { n_head: 2, n_kv: 1, hd: 64, n_rot: 64, layout: RopeLayout::Normal, qk_norm: false },
];

/// Llama 3's factors (`rope_scaling` type "llama3": factor 8, low/high frequency factors 1 and
/// 4, 8192 original positions), as its converter writes `rope_freqs.weight`: 1 for
/// wavelengths under 2048 positions, 8 over 8192, smooth in between.
fn llama3_factors(n_rot: u32, base: f32) -> Vec<f32> {
    let (factor, low, high, old_ctx) = (8.0f64, 1.0f64, 4.0f64, 8192.0f64);
    (0..n_rot / 2)
        .map(|i| {
            let wavelen = 2.0 * std::f64::consts::PI * (base as f64).powf(2.0 * i as f64 / n_rot as f64);
            if wavelen < old_ctx / high {
                1.0
            } else if wavelen > old_ctx / low {
                factor as f32
            } else {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                (1.0 / ((1.0 - smooth) / factor + smooth)) as f32
            }
        })
        .collect()
}

/// The RoPE specs each case runs with, and which of their two tables the kernels read: no
/// factors, Llama 3's, random ones in [1, 8), and Llama 3's with the sliding-window base and a
/// linear position scale.
fn specs(h: &Heads, rng: &mut Rng) -> Vec<(RopeSpec, RopeTable)> {
    let half = (h.n_rot / 2) as usize;
    let random: Vec<f32> = (0..half).map(|_| 4.5 + 3.5 * rng.f32()).collect();
    let spec = |factors: Option<Vec<f32>>, freq_scale: f32| RopeSpec {
        n_rot: h.n_rot,
        layout: h.layout,
        bases: [10000.0, 500000.0],
        freq_scale,
        factors,
        yarn: None,
    };
    let llama3 = llama3_factors(h.n_rot, 10000.0);
    // The sliding table has its own base, so its factors follow that base's wavelengths.
    let llama3_sliding = llama3_factors(h.n_rot, 500000.0);
    // gpt-oss's YaRN: a ramp strictly inside the rotated pairs (orig_ctx 1024, base 10000).
    let yarn = Yarn { orig_ctx: 1024, beta_fast: 32.0, beta_slow: 1.0, attn_factor: 1.0 };
    vec![
        (RopeSpec { yarn: Some(yarn), ..spec(None, 0.25) }, RopeTable::Global),
        (spec(None, 1.0), RopeTable::Global),
        (spec(Some(llama3), 1.0), RopeTable::Global),
        (spec(Some(random), 1.0), RopeTable::Global),
        (spec(Some(llama3_sliding), 0.25), RopeTable::Sliding),
    ]
}

/// The reference q and k heads of some packed rows, and each element's budget scale: the
/// magnitude of the pair it belongs to.
#[derive(Default)]
struct Want {
    q: Vec<f64>,
    q_scale: Vec<f64>,
    k: Vec<f64>,
    k_scale: Vec<f64>,
}

/// [`Want`] for packed rows at positions `pos0..`, each head normed first when `norms` (q
/// weights then k weights) are given.
fn want_heads(
    h: &Heads,
    spec: &RopeSpec,
    which: RopeTable,
    rows: &[f32],
    pos0: u32,
    norms: Option<&[f32]>,
) -> Want {
    let hd = h.hd as usize;
    let mut w = Want::default();
    for (t, row) in rows.chunks(h.stride()).enumerate() {
        let pos = (pos0 as usize) + t;
        for (part, norm, out, scale) in [
            (&row[..h.nq()], norms.map(|n| &n[..hd]), &mut w.q, &mut w.q_scale),
            (&row[h.nq()..h.nq() + h.nk()], norms.map(|n| &n[hd..]), &mut w.k, &mut w.k_scale),
        ] {
            for head in part.chunks(hd) {
                let x: Vec<f64> = match norm {
                    Some(w) => reference::rms_norm(head, w, EPS),
                    None => head.iter().map(|&v| v as f64).collect(),
                };
                out.extend(reference::rope(&x, pos, spec, which));
                scale.extend(pair_magnitudes(&x, h.n_rot as usize, h.layout));
            }
        }
    }
    w
}

/// |x_a| + |x_b| for the pair each element belongs to (itself past `n_rot`).
fn pair_magnitudes(x: &[f64], n_rot: usize, layout: RopeLayout) -> Vec<f64> {
    let half = n_rot / 2;
    (0..x.len())
        .map(|e| {
            let partner = match layout {
                _ if e >= n_rot => e,
                RopeLayout::Normal => e ^ 1,
                RopeLayout::Neox if e < half => e + half,
                RopeLayout::Neox => e - half,
            };
            x[e].abs() + if partner == e { 0.0 } else { x[partner].abs() }
        })
        .collect()
}

/// One test case, the same for both backends: heads, the RoPE spec and which of its tables
/// the kernels read, the packed q|k|v rows of every step, and q-norm then k-norm weights.
struct Case {
    h: Heads,
    spec: RopeSpec,
    which: RopeTable,
    qkv: Vec<f32>,
    norms: Vec<f32>,
}

fn cases() -> Vec<Case> {
    let mut rng = Rng::new(21);
    let mut out = Vec::new();
    let total: u32 = STEPS.iter().map(|s| s.1).sum();
    for h in HEADS {
        for (spec, which) in specs(&h, &mut rng) {
            let qkv = rng.vec(total as usize * h.stride(), 1.5);
            let norms = rng.vec(2 * h.hd as usize, 1.0);
            out.push(Case { h, spec, which, qkv, norms });
        }
    }
    out
}

#[test]
fn gpu_rope_kv_with_frequency_factors() {
    let cases = cases();
    for (name, gpu) in gpus() {
        for c in &cases {
            run_gpu_case(name, &gpu, &c.h, &c.spec, c.which, &c.qkv, &c.norms);
        }
    }
}

fn run_gpu_case(
    name: &str,
    gpu: &Gpu,
    h: &Heads,
    spec: &RopeSpec,
    which: RopeTable,
    qkv_all: &[f32],
    norms: &[f32],
) {
    let (hd, stride) = (h.hd as usize, h.stride());
    let cache_len = (h.n_kv * CTX * h.hd) as u64 * 4;
    let k_cache = gpu.storage("k", cache_len);
    let v_cache = gpu.storage("v", cache_len);
    let table = gpu.storage_init("table", bytemuck::cast_slice(&spec.table(which, CTX)));
    let nb = gpu.storage_init("qk_norm", bytemuck::cast_slice(norms));
    let max_n = STEPS.iter().map(|s| s.1).max().unwrap() as usize;
    let qkv = gpu.storage("qkv", (max_n * stride * 4) as u64);
    let positions = gpu.storage("positions", (max_n * 8) as u64);
    let op = rope_kv(
        gpu,
        &RopeArgs {
            n_head: h.n_head,
            n_kv: h.n_kv,
            head_dim: h.hd,
            head_dim_v: h.hd,
            n_rot: h.n_rot,
            neox: h.layout == RopeLayout::Neox,
            ctx: CTX,
            eps: EPS,
            cache: wllm_engine::CacheTypes::F32,
            qkv: &qkv,
            k_cache: &k_cache,
            v_cache: &v_cache,
            table: &table,
            positions: &positions,
            qk_norm: h.qk_norm.then_some(&nb),
            gated: false,
        },
    )
    .unwrap();
    let rel = if h.qk_norm { 1e-5 } else { 2e-6 };
    let mut row0 = 0;
    for (pos0, n) in STEPS {
        let rows = &qkv_all[row0 * stride..(row0 + n as usize) * stride];
        row0 += n as usize;
        gpu.queue.write_buffer(&qkv, 0, bytemuck::cast_slice(rows));
        let pos: Vec<[u32; 2]> = (pos0..pos0 + n).map(|p| [p, 0]).collect();
        gpu.queue.write_buffer(&positions, 0, bytemuck::cast_slice(&pos));
        gpu.run(std::slice::from_ref(&op), n).unwrap();
        let want = want_heads(h, spec, which, rows, pos0, h.qk_norm.then_some(norms));
        let what = format!("[{name}] rope_kv {h:?} {which:?} factors={:?} pos0={pos0} n={n}", spec.factors);
        // q is rotated in place in the packed rows.
        let out = gpu.read_f32(&qkv).unwrap();
        let got_q: Vec<f32> =
            out.chunks(stride).take(n as usize).flat_map(|r| r[..h.nq()].to_vec()).collect();
        check_close(&format!("{what} q"), &got_q, &want.q, &want.q_scale, rel, 1e-7);
        // k and v go to the cache, [kv head][position][dim].
        let (kc, vc) = (gpu.read_f32(&k_cache).unwrap(), gpu.read_f32(&v_cache).unwrap());
        let cached = |c: &[f32]| -> Vec<f32> {
            (0..n as usize)
                .flat_map(|t| {
                    (0..h.n_kv as usize).flat_map(move |g| {
                        let at = (g * CTX as usize + pos0 as usize + t) * hd;
                        c[at..at + hd].to_vec()
                    })
                })
                .collect()
        };
        check_close(&format!("{what} k"), &cached(&kc), &want.k, &want.k_scale, rel, 1e-7);
        let want_v: Vec<f64> =
            rows.chunks(stride).flat_map(|r| r[h.nq() + h.nk()..].iter().map(|&v| v as f64)).collect();
        check_close(&format!("{what} v"), &cached(&vc), &want_v, &vec![0.0; want_v.len()], 0.0, 0.0);
    }
}

#[test]
fn cpu_rope_in_place_with_frequency_factors() {
    for Case { h, spec, which, qkv, norms } in cases() {
        let table = spec.table(which, CTX);
        let (hd, half) = (h.hd as usize, (h.n_rot / 2) as usize);
        let rope = Rope { n_rot: h.n_rot as usize, layout: h.layout };
        // The instruction set matters only to the norm.
        let isas = if h.qk_norm { Isa::available() } else { vec![Isa::best()] };
        for isa in isas {
            let mut row0 = 0;
            for (pos0, n) in STEPS {
                let rows = &qkv[row0 * h.stride()..(row0 + n as usize) * h.stride()];
                row0 += n as usize;
                let (mut got_q, mut got_k) = (Vec::new(), Vec::new());
                for (t, row) in rows.chunks(h.stride()).enumerate() {
                    let pos = pos0 as usize + t;
                    let cs = &table[pos * half..(pos + 1) * half];
                    for (part, norm, out) in [
                        (&row[..h.nq()], &norms[..hd], &mut got_q),
                        (&row[h.nq()..h.nq() + h.nk()], &norms[hd..], &mut got_k),
                    ] {
                        for head in part.chunks(hd) {
                            let mut x = head.to_vec();
                            if h.qk_norm {
                                rms_norm_in_place(isa, &mut x, norm, EPS).unwrap();
                            }
                            rope_in_place(rope, &mut x, cs).unwrap();
                            out.extend(x);
                        }
                    }
                }
                let want = want_heads(&h, &spec, which, rows, pos0, h.qk_norm.then_some(&norms));
                let what = format!(
                    "[{isa}] rope_in_place {h:?} {which:?} factors={:?} pos0={pos0} n={n}",
                    spec.factors
                );
                let rel = if h.qk_norm { 1e-5 } else { 2e-6 };
                check_close(&format!("{what} q"), &got_q, &want.q, &want.q_scale, rel, 1e-7);
                check_close(&format!("{what} k"), &got_k, &want.k, &want.k_scale, rel, 1e-7);
            }
        }
    }
}

#[test]
fn rope_table_holds_the_reference_angles() {
    for Case { h, spec, which, .. } in cases() {
        let half = (h.n_rot / 2) as usize;
        let table = spec.table(which, CTX);
        assert_eq!(table.len(), CTX as usize * half, "{h:?} {which:?}: table length");
        for (at, cs) in table.iter().enumerate() {
            let (s, c) = reference::rope_angle(&spec, which, at / half, at % half).sin_cos();
            // YaRN's magnitude factor scales both.
            let m = reference::rope_magnitude(&spec);
            let (s, c) = (s * m, c * m);
            // One rounding to f32 of a value within [-m, m].
            assert!(
                (cs[0] as f64 - c).abs() <= 6e-8 * m && (cs[1] as f64 - s).abs() <= 6e-8 * m,
                "{h:?} {which:?} factors={:?}: index {at} (position {}, pair {}): got {cs:?} want [{c}, {s}]",
                spec.factors,
                at / half,
                at % half
            );
        }
    }
}

#[test]
fn rope_table_with_unit_factors_is_the_table_without() {
    for h in HEADS {
        for which in [RopeTable::Global, RopeTable::Sliding] {
            let spec = |factors| RopeSpec {
                n_rot: h.n_rot,
                layout: h.layout,
                bases: [10000.0, 500000.0],
                freq_scale: 0.5,
                factors,
                yarn: None,
            };
            let plain = spec(None).table(which, CTX);
            let unit = spec(Some(vec![1.0; (h.n_rot / 2) as usize])).table(which, CTX);
            assert_eq!(plain.len(), unit.len(), "{h:?} {which:?}: length");
            for (i, (a, b)) in plain.iter().zip(&unit).enumerate() {
                assert!(
                    a[0].to_bits() == b[0].to_bits() && a[1].to_bits() == b[1].to_bits(),
                    "{h:?} {which:?}: index {i}: without factors {a:?}, unit factors {b:?}"
                );
            }
        }
    }
}
