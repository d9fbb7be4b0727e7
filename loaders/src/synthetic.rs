//! GGUF files with a released model's shapes, metadata and tensor types but synthetic weights:
//! all zeros (a sparse file: big-model memory plans and load paths checked without the disk)
//! or seeded random blocks (speed measurements of models that cannot be downloaded here). The
//! text such a model writes is noise; its speed and its memory are the real model's.

use std::path::Path;

use crate::ggml_type::GgmlType;
use crate::gguf::{GgufWriteError, GgufWriter, MetaValue};

/// A model's metadata and tensor list.
pub struct SyntheticModel {
    pub name: String,
    pub metadata: Vec<(String, MetaValue)>,
    /// Name, type, ggml-order dims.
    pub tensors: Vec<(String, GgmlType, Vec<u64>)>,
}

/// What the weights hold.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Fill {
    /// Zeros, as holes in the file.
    Zeros,
    /// Uniform random quants with small, finite scales, from this seed.
    Random { seed: u64 },
}

/// What tells the 7B-class dense presets apart.
struct Dense {
    ff: u64,
    n_kv: u64,
    ctx: u32,
    theta: f32,
}

/// The numbers of a gpt-oss model (`gpt-oss-20b` and `gpt-oss-120b` differ in depth and
/// expert count only).
struct GptOss {
    n_layer: u64,
    n_expert: u64,
}

impl SyntheticModel {
    /// A preset by name: `gpt-oss-20b`, `gpt-oss-120b` (llama.cpp's `MXFP4_MOE` types: experts
    /// MXFP4, other matrices Q8_0, the router, norms, biases and sinks F32).
    pub fn preset(name: &str) -> Option<SyntheticModel> {
        match name {
            "gpt-oss-20b" => Some(Self::gpt_oss(name, GptOss { n_layer: 24, n_expert: 32 })),
            "gpt-oss-120b" => Some(Self::gpt_oss(name, GptOss { n_layer: 36, n_expert: 128 })),
            "qwen35-9b" => Some(Self::qwen35_9b(name)),
            "mistral-7b" => {
                Some(Self::llama_dense(name, Dense { ff: 14336, n_kv: 8, ctx: 32_768, theta: 1e6 }))
            }
            "llama2-7b" => {
                Some(Self::llama_dense(name, Dense { ff: 11008, n_kv: 32, ctx: 4096, theta: 1e4 }))
            }
            _ => None,
        }
    }

    /// The names [`preset`](Self::preset) knows.
    pub const PRESETS: &'static [&'static str] =
        &["gpt-oss-20b", "gpt-oss-120b", "qwen35-9b", "mistral-7b", "llama2-7b"];

    /// A 7B-class Llama-architecture model (Mistral-7B and Llama-2-7B share 32 layers, hidden
    /// 4096, 32 heads of 128 and a 32000-piece vocabulary; they differ in FFN width, KV heads,
    /// trained context and RoPE base), every matrix Q4_K with random blocks (the embeddings
    /// and the output too, as the "all-Q4_K" file), norms F32.
    fn llama_dense(name: &str, m: Dense) -> SyntheticModel {
        let (e, vocab, n_layer, n_head, head) = (4096u64, 32_000u64, 32u64, 32u64, 128u64);
        let a = |k: &str| format!("llama.{k}");
        let mut metadata: Vec<(String, MetaValue)> = vec![
            ("general.architecture".into(), "llama".into()),
            ("general.name".into(), format!("{name} (synthetic weights)").into()),
            (a("block_count"), (n_layer as u32).into()),
            (a("context_length"), m.ctx.into()),
            (a("embedding_length"), (e as u32).into()),
            (a("feed_forward_length"), (m.ff as u32).into()),
            (a("attention.head_count"), (n_head as u32).into()),
            (a("attention.head_count_kv"), (m.n_kv as u32).into()),
            (a("attention.layer_norm_rms_epsilon"), 1e-5f32.into()),
            (a("rope.freq_base"), m.theta.into()),
            (a("rope.dimension_count"), (head as u32).into()),
        ];
        metadata.extend(placeholder_vocab(vocab as usize));
        let (q4, f32_) = (GgmlType::Q4_K, GgmlType::F32);
        let mut tensors = ends(q4, e, vocab);
        let kv = m.n_kv * head;
        for il in 0..n_layer {
            let mut t =
                |n: &str, ty, dims: &[u64]| tensors.push((format!("blk.{il}.{n}"), ty, dims.to_vec()));
            t("attn_norm.weight", f32_, &[e]);
            t("attn_q.weight", q4, &[e, n_head * head]);
            t("attn_k.weight", q4, &[e, kv]);
            t("attn_v.weight", q4, &[e, kv]);
            t("attn_output.weight", q4, &[n_head * head, e]);
            t("ffn_norm.weight", f32_, &[e]);
            t("ffn_gate.weight", q4, &[e, m.ff]);
            t("ffn_up.weight", q4, &[e, m.ff]);
            t("ffn_down.weight", q4, &[m.ff, e]);
        }
        SyntheticModel { name: name.to_string(), metadata, tensors }
    }

    /// Qwen3.5-9B's shapes as its Hugging Face config gives them (32 layers, every fourth full
    /// attention; hidden 4096, FFN 12288; attention 16 heads of 256 over 4 KV heads, a quarter
    /// of each head rotated; DeltaNet 16 key and 32 value heads of 128, 4 convolution taps;
    /// vocabulary 248320), every matrix Q4_K with random blocks; norms, gates' vectors and the
    /// convolution F32. llama.cpp's own check only names the depth (32 layers: 4B or 9B).
    fn qwen35_9b(name: &str) -> SyntheticModel {
        let (e, ff, vocab, n_layer) = (4096u64, 12288u64, 248_320u64, 32u64);
        let (n_head, n_kv, head) = (16u64, 4u64, 256u64);
        let (nk, nv, d, taps) = (16u64, 32u64, 128u64, 4u64);
        let a = |k: &str| format!("qwen35.{k}");
        let mut metadata: Vec<(String, MetaValue)> = vec![
            ("general.architecture".into(), "qwen35".into()),
            ("general.name".into(), format!("{name} (synthetic weights)").into()),
            (a("block_count"), (n_layer as u32).into()),
            (a("context_length"), 262_144u32.into()),
            (a("embedding_length"), (e as u32).into()),
            (a("feed_forward_length"), (ff as u32).into()),
            (a("attention.head_count"), (n_head as u32).into()),
            (a("attention.head_count_kv"), (n_kv as u32).into()),
            (a("attention.key_length"), (head as u32).into()),
            (a("attention.value_length"), (head as u32).into()),
            (a("attention.layer_norm_rms_epsilon"), 1e-6f32.into()),
            (a("rope.freq_base"), 10_000_000f32.into()),
            (a("rope.dimension_count"), 64u32.into()),
            // llama.cpp requires the sections for qwen35 (text positions make them plain NeoX).
            (a("rope.dimension_sections"), vec![11i32, 11, 10, 0].into()),
            (a("ssm.conv_kernel"), (taps as u32).into()),
            (a("ssm.inner_size"), ((nv * d) as u32).into()),
            (a("ssm.state_size"), (d as u32).into()),
            (a("ssm.time_step_rank"), (nv as u32).into()),
            (a("ssm.group_count"), (nk as u32).into()),
            (a("full_attention_interval"), 4u32.into()),
        ];
        metadata.extend(placeholder_vocab(vocab as usize));
        let (q4, f32_) = (GgmlType::Q4_K, GgmlType::F32);
        let mut tensors = ends(q4, e, vocab);
        let (kd, vd) = (nk * d, nv * d);
        for il in 0..n_layer {
            let mut t =
                |n: &str, ty, dims: &[u64]| tensors.push((format!("blk.{il}.{n}"), ty, dims.to_vec()));
            t("attn_norm.weight", f32_, &[e]);
            t("post_attention_norm.weight", f32_, &[e]);
            if (il + 1) % 4 == 0 {
                t("attn_q.weight", q4, &[e, 2 * n_head * head]);
                t("attn_k.weight", q4, &[e, n_kv * head]);
                t("attn_v.weight", q4, &[e, n_kv * head]);
                t("attn_q_norm.weight", f32_, &[head]);
                t("attn_k_norm.weight", f32_, &[head]);
                t("attn_output.weight", q4, &[n_head * head, e]);
            } else {
                t("attn_qkv.weight", q4, &[e, 2 * kd + vd]);
                t("attn_gate.weight", q4, &[e, vd]);
                t("ssm_beta.weight", q4, &[e, nv]);
                t("ssm_alpha.weight", q4, &[e, nv]);
                t("ssm_conv1d.weight", f32_, &[taps, 2 * kd + vd]);
                t("ssm_dt.bias", f32_, &[nv]);
                t("ssm_a", f32_, &[nv]);
                t("ssm_norm.weight", f32_, &[d]);
                t("ssm_out.weight", q4, &[vd, e]);
            }
            t("ffn_gate.weight", q4, &[e, ff]);
            t("ffn_up.weight", q4, &[e, ff]);
            t("ffn_down.weight", q4, &[ff, e]);
        }
        SyntheticModel { name: name.to_string(), metadata, tensors }
    }

    fn gpt_oss(name: &str, g: GptOss) -> SyntheticModel {
        // Shapes and hyperparameters of the released checkpoints' GGUF conversion.
        let (e, head, n_head, n_kv, ff, vocab) = (2880u64, 64u64, 64u64, 8u64, 2880u64, 201_088u64);
        let a = |k: &str| format!("gpt-oss.{k}");
        let mut metadata: Vec<(String, MetaValue)> = vec![
            ("general.architecture".into(), "gpt-oss".into()),
            ("general.name".into(), format!("{name} (synthetic weights)").into()),
            (a("block_count"), (g.n_layer as u32).into()),
            (a("context_length"), 131_072u32.into()),
            (a("embedding_length"), (e as u32).into()),
            (a("feed_forward_length"), (ff as u32).into()),
            (a("expert_feed_forward_length"), (ff as u32).into()),
            (a("attention.head_count"), (n_head as u32).into()),
            (a("attention.head_count_kv"), (n_kv as u32).into()),
            (a("attention.key_length"), (head as u32).into()),
            (a("attention.value_length"), (head as u32).into()),
            (a("attention.layer_norm_rms_epsilon"), 1e-5f32.into()),
            (a("attention.sliding_window"), 128u32.into()),
            (a("rope.freq_base"), 150_000f32.into()),
            (a("rope.scaling.type"), "yarn".into()),
            (a("rope.scaling.factor"), 32f32.into()),
            (a("rope.scaling.original_context_length"), 4096u32.into()),
            (a("expert_count"), (g.n_expert as u32).into()),
            (a("expert_used_count"), 4u32.into()),
        ];
        metadata.extend(placeholder_vocab(vocab as usize));
        let (q8, f32_, mx) = (GgmlType::Q8_0, GgmlType::F32, GgmlType::MXFP4);
        let mut tensors = ends(q8, e, vocab);
        let (q, kv, x) = (n_head * head, n_kv * head, g.n_expert);
        for il in 0..g.n_layer {
            let mut t =
                |n: &str, ty, dims: &[u64]| tensors.push((format!("blk.{il}.{n}"), ty, dims.to_vec()));
            t("attn_norm.weight", f32_, &[e]);
            t("post_attention_norm.weight", f32_, &[e]);
            for (n, rows) in [("attn_q", q), ("attn_k", kv), ("attn_v", kv)] {
                t(&format!("{n}.weight"), q8, &[e, rows]);
                t(&format!("{n}.bias"), f32_, &[rows]);
            }
            t("attn_output.weight", q8, &[q, e]);
            t("attn_output.bias", f32_, &[e]);
            t("attn_sinks.weight", f32_, &[n_head]);
            t("ffn_gate_inp.weight", f32_, &[e, x]);
            t("ffn_gate_inp.bias", f32_, &[x]);
            for n in ["ffn_gate_exps", "ffn_up_exps"] {
                t(&format!("{n}.weight"), mx, &[e, ff, x]);
                t(&format!("{n}.bias"), f32_, &[ff, x]);
            }
            t("ffn_down_exps.weight", mx, &[ff, e, x]);
            t("ffn_down_exps.bias", f32_, &[e, x]);
        }
        SyntheticModel { name: name.to_string(), metadata, tensors }
    }

    /// The same model with every `Q4_K` matrix in `ty` instead (the dense presets then give a
    /// 7B-class file in another quant type, for speed comparisons across types). `None` when
    /// a `Q4_K` matrix's rows are not whole blocks of `ty`.
    pub fn with_matrix_type(mut self, ty: GgmlType) -> Option<SyntheticModel> {
        for (_, t, dims) in self.tensors.iter_mut().filter(|(_, t, _)| *t == GgmlType::Q4_K) {
            if !dims[0].is_multiple_of(ty.block_size()) {
                return None;
            }
            *t = ty;
        }
        Some(self)
    }

    /// Bytes of all tensors (without the header).
    pub fn weight_bytes(&self) -> u64 {
        self.tensors.iter().map(|(_, ty, dims)| ty.bytes_for(dims.iter().product()).unwrap_or(0)).sum()
    }

    /// Writes the file; returns its size.
    pub fn write(&self, path: impl AsRef<Path>, fill: Fill) -> Result<u64, GgufWriteError> {
        let mut w = GgufWriter::new();
        for (k, v) in &self.metadata {
            w.add_metadata(k.clone(), v.clone())?;
        }
        for (i, (name, ty, dims)) in self.tensors.iter().enumerate() {
            match fill {
                Fill::Zeros => w.add_tensor_zeros(name.clone(), *ty, dims)?,
                Fill::Random { seed } => {
                    let (ty, seed) = (*ty, seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    w.add_tensor_with(name.clone(), ty, dims, move |at, chunk| {
                        random_blocks(ty, seed, at, chunk)
                    })?
                }
            };
        }
        w.write_file(path)
    }
}

/// The tensors outside the layers: the embedding table and the output head in `ty`, the final
/// norm F32.
fn ends(ty: GgmlType, e: u64, vocab: u64) -> Vec<(String, GgmlType, Vec<u64>)> {
    vec![
        ("token_embd.weight".to_string(), ty, vec![e, vocab]),
        ("output_norm.weight".to_string(), GgmlType::F32, vec![e]),
        ("output.weight".to_string(), ty, vec![e, vocab]),
    ]
}

/// A SentencePiece-style vocabulary of `n` pieces (specials, the 256 byte pieces, then
/// numbered ones), enough for both engines to load the file; text through it is meaningless.
fn placeholder_vocab(n: usize) -> Vec<(String, MetaValue)> {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    tokens.extend((0..256).map(|b| format!("<0x{b:02X}>")));
    let first_numbered = tokens.len();
    tokens.extend((first_numbered..n).map(|i| format!("▁t{i}")));
    let types: Vec<i32> = (0..n)
        .map(|i| {
            if i < 3 {
                3
            } else if i < first_numbered {
                6
            } else {
                1
            }
        })
        .collect();
    let scores: Vec<f32> = (0..n).map(|i| -(i as f32)).collect();
    vec![
        ("tokenizer.ggml.model".into(), "llama".into()),
        ("tokenizer.ggml.tokens".into(), tokens.into()),
        ("tokenizer.ggml.scores".into(), scores.into()),
        ("tokenizer.ggml.token_type".into(), types.into()),
        ("tokenizer.ggml.bos_token_id".into(), 1u32.into()),
        ("tokenizer.ggml.eos_token_id".into(), 2u32.into()),
    ]
}

/// SplitMix64: a seeded stream with no dependency, the same on every platform.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Bytes `at..at + chunk.len()` of a tensor of random `ty` blocks from `seed`. Each block is a
/// function of its index alone, so chunks may cut blocks anywhere. Quants are uniform; scales
/// are small and finite so activations stay in range through many layers (random scale bytes
/// could be NaN, infinite or huge).
pub fn random_blocks(ty: GgmlType, seed: u64, at: u64, chunk: &mut [u8]) {
    let size = ty.type_size();
    let mut block = vec![0u8; size as usize];
    let mut i = 0usize;
    while i < chunk.len() {
        let pos = at + i as u64;
        let (index, offset) = (pos / size, (pos % size) as usize);
        let mut state = seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
        for b in block.chunks_mut(8) {
            let r = splitmix(&mut state).to_le_bytes();
            b.copy_from_slice(&r[..b.len()]);
        }
        fix_scales(ty, &mut block, splitmix(&mut state));
        let n = (size as usize - offset).min(chunk.len() - i);
        chunk[i..i + n].copy_from_slice(&block[offset..offset + n]);
        i += n;
    }
}

/// Byte offsets of a block type's f16 scale fields (d, and dmin where there is one).
fn f16_scale_offsets(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL | IQ4_XS | IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ1_S => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    }
}

/// Overwrites a random block's float fields with small finite values (`r` random bits), so
/// that weights stay finite and well below 10 whatever the quants and sub-block scales.
fn fix_scales(ty: GgmlType, block: &mut [u8], r: u64) {
    // A value in [-scale, scale) from 24 random bits.
    let small = |bits: u64, scale: f32| ((bits & 0xFF_FFFF) as f32 / (1 << 23) as f32 - 1.0) * scale;
    let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
    match ty {
        GgmlType::F32 => {
            for (j, v) in block.chunks_exact_mut(4).enumerate() {
                v.copy_from_slice(&small(r.rotate_left(j as u32 * 7), 0.05).to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (j, v) in block.chunks_exact_mut(2).enumerate() {
                v.copy_from_slice(&f16(small(r.rotate_left(j as u32 * 7), 0.05)));
            }
        }
        GgmlType::BF16 => {
            for (j, v) in block.chunks_exact_mut(2).enumerate() {
                v.copy_from_slice(
                    &half::bf16::from_f32(small(r.rotate_left(j as u32 * 7), 0.05)).to_le_bytes(),
                );
            }
        }
        // Q8_K's one scale is an f32.
        GgmlType::Q8_K => block[..4].copy_from_slice(&(4e-4 + small(r, 1e-4)).to_le_bytes()),
        // Scales 2^(e - 128) with e in 118..=121: values up to 12 * 2^-7.
        GgmlType::MXFP4 => block[0] = 118 + (r % 4) as u8,
        // IQ1_M's f16 is spread over the top nibbles of its four scale words at 48.
        GgmlType::IQ1_M => {
            let d = half::f16::from_f32(2e-3 + small(r, 5e-4)).to_bits();
            for (i, w) in block[48..56].chunks_exact_mut(2).enumerate() {
                let nibble = (d >> (4 * i)) & 0xF;
                let word = (u16::from_le_bytes([w[0], w[1]]) & 0x0FFF) | (nibble << 12);
                w.copy_from_slice(&word.to_le_bytes());
            }
        }
        _ => {
            // Largest quant magnitudes: 127 (Q8_0), 31 (5-bit), 15 or fewer elsewhere; the
            // codebook types reach 480 (IQ3_XXS: grid value 62 times (0.5 + 15) / 2), still
            // about 1 with this unit.
            let unit = if ty == GgmlType::Q8_0 { 4e-4 } else { 2e-3 };
            for (j, &at) in f16_scale_offsets(ty).iter().enumerate() {
                block[at..at + 2].copy_from_slice(&f16(unit + small(r >> (24 * j), unit / 4.0)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_blocks_do_not_depend_on_chunking() {
        let ty = GgmlType::Q8_0;
        let mut whole = vec![0u8; 34 * 10];
        random_blocks(ty, 7, 0, &mut whole);
        let mut pieces = vec![0u8; 34 * 10];
        let (a, b) = pieces.split_at_mut(45);
        random_blocks(ty, 7, 0, a);
        random_blocks(ty, 7, 45, b);
        assert_eq!(whole, pieces);
        let values = crate::quant::dequantize(ty, &whole, 320).unwrap();
        assert!(values.iter().all(|v| v.is_finite() && v.abs() < 0.1), "{values:?}");
    }

    #[test]
    fn matrix_type_replaces_every_q4_k_matrix() {
        let q4 = SyntheticModel::preset("mistral-7b").unwrap();
        let iq = SyntheticModel::preset("mistral-7b").unwrap().with_matrix_type(GgmlType::IQ2_XXS).unwrap();
        assert_eq!(q4.tensors.len(), iq.tensors.len());
        for ((name, a, dims), (_, b, _)) in q4.tensors.iter().zip(&iq.tensors) {
            let want = if *a == GgmlType::Q4_K { GgmlType::IQ2_XXS } else { *a };
            assert_eq!(*b, want, "{name} {dims:?}");
        }
        // 2.0625 of Q4_K's 4.5 bits per weight, less the F32 norms.
        let ratio = iq.weight_bytes() as f64 / q4.weight_bytes() as f64;
        assert!((0.45..0.47).contains(&ratio), "{ratio}");
    }

    #[test]
    fn random_blocks_of_every_type_are_finite_and_small() {
        for ty in GgmlType::all().filter(|&t| crate::quant::is_supported(t)) {
            let n = 4 * ty.block_size().max(32);
            let mut bytes = vec![0u8; ty.bytes_for(n).unwrap() as usize];
            random_blocks(ty, 3, 0, &mut bytes);
            let values = crate::quant::dequantize(ty, &bytes, n as usize).unwrap();
            let worst =
                values.iter().fold(0f32, |m, v| if v.is_finite() { m.max(v.abs()) } else { f32::INFINITY });
            assert!(worst < 10.0, "{ty}: largest |weight| {worst}");
            assert!(values.iter().any(|&v| v != 0.0), "{ty}: all zero");
        }
    }

    /// A decode token reads every tensor but the untied embedding table, and of the expert
    /// tensors only the routed share.
    #[test]
    fn decode_bytes_leave_out_the_embedding_table_and_unrouted_experts() {
        use crate::model::{ModelConfig, ModelWeights};
        let dir = std::env::temp_dir().join(format!("wllm-decode-bytes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["mistral-7b", "gpt-oss-20b"] {
            let model = SyntheticModel::preset(name).unwrap();
            let path = dir.join(format!("{name}.gguf"));
            model.write(&path, Fill::Zeros).unwrap();
            let file = crate::gguf::GgufFile::open(&path).unwrap();
            let cfg = ModelConfig::from_gguf(&file).unwrap();
            let w = ModelWeights::resolve(&cfg, &file).unwrap();
            let bytes = |pick: &dyn Fn(&str) -> bool| -> u64 {
                model
                    .tensors
                    .iter()
                    .filter(|t| pick(&t.0))
                    .map(|(_, ty, d)| ty.bytes_for(d.iter().product()).unwrap())
                    .sum()
            };
            let embd = bytes(&|n| n == "token_embd.weight");
            let experts = bytes(&|n| n.contains("_exps"));
            let rest = model.weight_bytes() - embd - experts;
            let (n_expert, n_used) = cfg.moe.as_ref().map_or((0, 0), |m| (m.n_expert, m.n_expert_used));
            let routed = if n_expert > 0 { experts / u64::from(n_expert) * u64::from(n_used) } else { 0 };
            let got = w.decode_bytes(n_expert, n_used);
            assert_eq!(got, rest + routed, "{name}");
            assert!(got < model.weight_bytes());
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn presets_have_the_released_sizes() {
        let gib = |m: &SyntheticModel| m.weight_bytes() as f64 / (1u64 << 30) as f64;
        let (small, big) =
            (SyntheticModel::preset("gpt-oss-20b").unwrap(), SyntheticModel::preset("gpt-oss-120b").unwrap());
        // ggml-org's MXFP4 conversions: 12.1 GB and 63.4 GB files (11.3 and 59.0 GiB).
        assert!((gib(&small) - 11.3).abs() < 0.3, "{}", gib(&small));
        assert!((gib(&big) - 59.0).abs() < 0.8, "{}", gib(&big));
        assert!(SyntheticModel::preset("gpt-oss-7b").is_none());
        // Q4_K at 4.5 bits a weight over 8.95 billion weights (the vision tower left out).
        let q = SyntheticModel::preset("qwen35-9b").unwrap();
        assert!((gib(&q) - 4.69).abs() < 0.05, "{}", gib(&q));
        // 7.24 and 6.74 billion weights at 4.5 bits (norms aside).
        let (mistral, llama2) =
            (SyntheticModel::preset("mistral-7b").unwrap(), SyntheticModel::preset("llama2-7b").unwrap());
        assert!((gib(&mistral) - 3.79).abs() < 0.05, "{}", gib(&mistral));
        assert!((gib(&llama2) - 3.53).abs() < 0.05, "{}", gib(&llama2));
    }
}
