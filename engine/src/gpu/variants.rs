//! Every kernel variant the engine can build, for a set of device capabilities. The portability
//! test translates each of them to SPIR-V, MSL and HLSL, so a shader that would fail on Metal or
//! DX12 fails CI on Linux; `--warm-up`-style tools can compile them all ahead of time.

use crate::gpu::device::Caps;
use crate::gpu::ops::argmax::ArgmaxKey;
use crate::gpu::ops::attention::{AttentionKey, AttentionPass, tiled_shape};
use crate::gpu::ops::delta_net::DeltaNetKey;
use crate::gpu::ops::delta_rule::{DeltaRuleKey, DeltaRulePass};
use crate::gpu::ops::elementwise::ElementwiseKey;
use crate::gpu::ops::get_rows::GetRowsKey;
use crate::gpu::ops::lane::{LaneIds, LaneKey};
use crate::gpu::ops::linear::Epilogue;
use crate::gpu::ops::logprob::LogprobKey;
use crate::gpu::ops::matmul::{MatmulKey, TILE_ROWS, TILE_TOKENS};
use crate::gpu::ops::matvec::MatvecKey;
use crate::gpu::ops::moe::MoeKey;
use crate::gpu::ops::norm::NormKey;
use crate::gpu::ops::rope::RopeKey;
use crate::gpu::pipeline::PipelineKey;
use crate::gpu::tensor::GPU_TYPES;
use crate::kv_type::{CacheTypes, KvType};

const EPILOGUES: [Epilogue; 8] = [
    Epilogue::Store,
    Epilogue::Add,
    Epilogue::GluSilu,
    Epilogue::GluGelu,
    Epilogue::GluOai,
    Epilogue::PairSilu,
    Epilogue::PairGelu,
    Epilogue::PairOai,
];

/// Override values to translate a variant with (tunables are not structure).
pub fn constants(key: &PipelineKey) -> Vec<(String, f64)> {
    use crate::gpu::pipeline::Kernel;
    let spec = match key {
        PipelineKey::Matvec(k) => k.spec(),
        PipelineKey::Matmul(k) => k.spec(),
        PipelineKey::Lane(k) => k.spec(),
        PipelineKey::GetRows(k) => k.spec(),
        PipelineKey::Norm(k) => k.spec(),
        PipelineKey::Rope(k) => k.spec(),
        PipelineKey::Attention(k) => k.spec(),
        PipelineKey::Elementwise(k) => k.spec(),
        PipelineKey::Argmax(k) => k.spec(),
        PipelineKey::Logprob(k) => k.spec(),
        PipelineKey::Moe(k) => k.spec(),
        PipelineKey::DeltaNet(k) => k.spec(),
        PipelineKey::DeltaRule(k) => k.spec(),
        PipelineKey::Hadamard(k) => k.spec(),
    };
    spec.constants
}

pub fn all(caps: &Caps) -> Vec<PipelineKey> {
    let mut out = Vec::new();
    for &t in GPU_TYPES {
        out.push(PipelineKey::GetRows(GetRowsKey { wtype: t }));
        for epi in EPILOGUES {
            // Biases go with plain stores (the q/k/v projections of qwen2, gpt-oss's router) and
            // residual adds (gpt-oss's attention output).
            for bias in [false, true] {
                if bias && !matches!(epi, Epilogue::Store | Epilogue::Add) {
                    continue;
                }
                out.push(PipelineKey::Matvec(MatvecKey {
                    wtype: t,
                    epilogue: epi,
                    bias,
                    ids: false,
                    wg: 64,
                    nr: 2,
                }));
                out.push(PipelineKey::Matmul(MatmulKey {
                    wtype: t,
                    epilogue: epi,
                    bias,
                    ids: false,
                    tile_rows: TILE_ROWS,
                    tile_tokens: TILE_TOKENS,
                }));
                for tokens in [1, 8] {
                    for broadcast in [false, true] {
                        if broadcast && !caps.subgroups {
                            continue;
                        }
                        out.push(PipelineKey::Lane(LaneKey {
                            wtype: t,
                            epilogue: epi,
                            bias,
                            ids: LaneIds::None,
                            rows: 2,
                            tokens,
                            wg: 64,
                            broadcast,
                        }));
                    }
                }
            }
            // Expert variants: gate (store), up (GLU on the gate), down (store); gpt-oss's
            // experts have biases.
            let expert_epi =
                matches!(epi, Epilogue::Store | Epilogue::GluSilu | Epilogue::GluGelu | Epilogue::GluOai);
            for bias in [false, true] {
                if !expert_epi || (bias && !matches!(epi, Epilogue::Store | Epilogue::GluOai)) {
                    continue;
                }
                out.push(PipelineKey::Matvec(MatvecKey {
                    wtype: t,
                    epilogue: epi,
                    bias,
                    ids: true,
                    wg: 64,
                    nr: 2,
                }));
                out.push(PipelineKey::Matmul(MatmulKey {
                    wtype: t,
                    epilogue: epi,
                    bias,
                    ids: true,
                    tile_rows: TILE_ROWS,
                    tile_tokens: TILE_TOKENS,
                }));
                for (ids, tokens) in [(LaneIds::Direct, 1), (LaneIds::Tiles, 8)] {
                    out.push(PipelineKey::Lane(LaneKey {
                        wtype: t,
                        epilogue: epi,
                        bias,
                        ids,
                        rows: 2,
                        tokens,
                        wg: 64,
                        broadcast: caps.subgroups,
                    }));
                }
            }
        }
    }
    for post_add in [false, true] {
        for (last_row, listed) in [(false, false), (true, false), (false, true)] {
            out.push(PipelineKey::Norm(NormKey { post_add, last_row, listed, wg: 256 }));
        }
    }
    // Every cache type with the common head sizes; mixed K/V types with one.
    let f16 = if caps.f16 { KvType::F16 } else { KvType::F32 };
    let mut caches: Vec<CacheTypes> =
        [KvType::F32, f16, KvType::Q8_0, KvType::Q4_0].iter().map(|&t| CacheTypes { k: t, v: t }).collect();
    caches.dedup();
    let mixed = CacheTypes { k: KvType::Q8_0, v: f16 };
    for &cache in caches.iter().chain([&mixed]) {
        for neox in [false, true] {
            for qk_norm in [false, true] {
                // Quantized sides rotate (head size 128: K by 128, V by 64).
                let k_rot = if cache.k.is_quantized() { 128 } else { 0 };
                let v_rot = if cache.v.is_quantized() { 64 } else { 0 };
                out.push(PipelineKey::Rope(RopeKey {
                    neox,
                    qk_norm,
                    cache,
                    k_rot,
                    v_rot,
                    gated: false,
                    wg: 64,
                }));
            }
        }
        let sizes: &[(u32, u32)] =
            if cache == mixed { &[(128, 128)] } else { &[(64, 64), (128, 128), (256, 256), (192, 128)] };
        for &(hd, hd_v) in sizes {
            for team_is_subgroup in [false, true] {
                if team_is_subgroup && !caps.subgroups {
                    continue;
                }
                for sinks in [false, true] {
                    // Sinks only with gpt-oss's head size; flash-decoding's passes with the
                    // common size and with sinks.
                    if sinks && hd != 64 {
                        continue;
                    }
                    let passes: &[AttentionPass] = if hd == 128 || sinks {
                        &[AttentionPass::Whole, AttentionPass::Split, AttentionPass::Reduce]
                    } else {
                        &[AttentionPass::Whole]
                    };
                    for (&pass, heads) in passes.iter().flat_map(|p| [(p, 1), (p, 4)]) {
                        // Reduce combines per head; the walking passes serve one or four heads.
                        if heads > 1 && pass == AttentionPass::Reduce {
                            continue;
                        }
                        out.push(PipelineKey::Attention(AttentionKey {
                            cache,
                            head_dim: hd,
                            head_dim_v: hd_v,
                            team: 8,
                            team_is_subgroup,
                            wg: 64,
                            sinks,
                            gated: false,
                            gate_after: false,
                            pass,
                            team_shuffle: false,
                            tile_keys: 0,
                            heads,
                        }));
                    }
                }
            }
            for team_shuffle in [false, true] {
                if team_shuffle && !caps.subgroups {
                    continue;
                }
                for sinks in [false, true] {
                    if sinks && hd != 64 {
                        continue;
                    }
                    let (team, wg, tile_keys) = tiled_shape(hd, hd_v);
                    out.push(PipelineKey::Attention(AttentionKey {
                        cache,
                        head_dim: hd,
                        head_dim_v: hd_v,
                        team,
                        team_is_subgroup: false,
                        wg,
                        sinks,
                        gated: false,
                        gate_after: false,
                        pass: AttentionPass::Tiled,
                        team_shuffle,
                        tile_keys,
                        heads: 1,
                    }));
                }
            }
        }
    }
    for gated in [false, true] {
        out.push(PipelineKey::Hadamard(crate::gpu::ops::hadamard::HadamardKey { gated }));
    }
    for stage2 in [false, true] {
        out.push(PipelineKey::Argmax(ArgmaxKey { stage2 }));
    }
    out.push(PipelineKey::Logprob(LogprobKey));
    for e in [
        ElementwiseKey::Add,
        ElementwiseKey::GluSilu,
        ElementwiseKey::GluGelu,
        ElementwiseKey::Softcap,
        ElementwiseKey::AddGated,
    ] {
        out.push(PipelineKey::Elementwise(e));
    }
    for renormalize in [false, true] {
        out.push(PipelineKey::Moe(MoeKey::Route { renormalize }));
    }
    for tile in [8, TILE_TOKENS] {
        out.push(PipelineKey::Moe(MoeKey::Plan { tile }));
    }
    out.push(PipelineKey::Moe(MoeKey::Combine));
    out.push(PipelineKey::DeltaNet(DeltaNetKey::Conv { wg: 256 }));
    out.push(PipelineKey::DeltaNet(DeltaNetKey::ConvState { wg: 256 }));
    // Head sizes 128 (real models) and the 32 of the tiny fixtures.
    for wg in [64, 32] {
        out.push(PipelineKey::DeltaNet(DeltaNetKey::QkNormGates { wg }));
        out.push(PipelineKey::DeltaNet(DeltaNetKey::GatedNorm { wg }));
    }
    // Gated DeltaNet head sizes: Qwen3.5 and Qwen3-Next use 128.
    for head_dim in [64, 128, 256] {
        let mut passes = vec![
            DeltaRulePass::Recurrent { team: 32, team_is_subgroup: false, wg: 128 },
            DeltaRulePass::ChunkPrepare,
            DeltaRulePass::ChunkState { cols: if head_dim <= 128 { 16 } else { 8 }, wg: 256 },
            DeltaRulePass::ChunkOutput { wg: 128 },
        ];
        if caps.subgroups {
            passes.push(DeltaRulePass::Recurrent { team: 32, team_is_subgroup: true, wg: 128 });
        }
        for pass in passes {
            out.push(PipelineKey::DeltaRule(DeltaRuleKey { head_dim, pass }));
        }
    }
    out
}
