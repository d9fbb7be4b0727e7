//! Which tensors a model needs, found by GGUF tensor name and checked against the
//! hyperparameters before anything is allocated or uploaded.

use std::borrow::Cow;

use super::ModelError;
use super::config::{DeltaNetConfig, ModelConfig};
use crate::ggml_type::GgmlType;

/// Name, element type and ggml-order dims of a stored tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorMeta {
    pub name: String,
    pub ggml_type: GgmlType,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
}

impl TensorMeta {
    pub fn dim(&self, i: usize) -> u64 {
        self.dims.get(i).copied().unwrap_or(1)
    }
    pub fn n_elements(&self) -> u64 {
        // Saturating: sources validate their dims, but a hand-built meta must not panic here.
        self.dims.iter().fold(1u64, |acc, &d| acc.saturating_mul(d))
    }
    pub fn n_bytes(&self) -> u64 {
        self.ggml_type.bytes_for(self.n_elements()).unwrap_or(0)
    }
}

/// A tensor's bytes: borrowed from a memory map, or owned after a conversion on load.
pub struct TensorBytes<'a> {
    pub meta: TensorMeta,
    pub bytes: Cow<'a, [u8]>,
}

/// Anything that holds named tensors in GGUF naming (a GGUF file, a safetensors directory).
pub trait TensorSource: Send + Sync {
    fn meta(&self, name: &str) -> Option<TensorMeta>;
    fn bytes(&self, name: &str) -> Option<TensorBytes<'_>>;
    /// Says the caller copied tensor `name` and will not read it here again soon: a source
    /// that maps a file may drop the tensor's pages from this process (they stay in the page
    /// cache; a later read faults them back in).
    fn release(&self, _name: &str) {}
    /// Whether `bytes(name)` are not the file's layout but one a [`Packer`] wrote for the CPU
    /// kernels.
    fn packed(&self, _name: &str) -> bool {
        false
    }
}

/// Rewrites tensors into a layout their reader prefers as they are copied out of the file
/// ([`crate::model::ResidentSource`]). The loaders know no layout but the file's; the engine
/// says which tensors its kernels want rewritten, and how.
pub trait Packer: Sync {
    /// Whether `meta` is rewritten.
    fn packs(&self, meta: &TensorMeta) -> bool;
    /// Writes `src`, the bytes of `meta` as the file has them, into `dst` (as long).
    fn pack(&self, meta: &TensorMeta, src: &[u8], dst: &mut [u8]) -> Result<(), String>;
}

// Lets wrappers such as `QuantizingSource` hold a shared, type-erased source.
impl<T: TensorSource + ?Sized> TensorSource for std::sync::Arc<T> {
    fn meta(&self, name: &str) -> Option<TensorMeta> {
        (**self).meta(name)
    }
    fn bytes(&self, name: &str) -> Option<TensorBytes<'_>> {
        (**self).bytes(name)
    }
    fn release(&self, name: &str) {
        (**self).release(name)
    }
    fn packed(&self, name: &str) -> bool {
        (**self).packed(name)
    }
}

/// A GGUF presents the halves of a fused `ffn_gate_up_exps` ([n_embd, 2·n_ff, n_expert]:
/// per expert its n_ff gate rows, then its n_ff up rows, as llama.cpp's converter writes with
/// `--fuse-gate-up-exps`) as the `ffn_gate_exps` and `ffn_up_exps` every backend reads: each
/// half is gathered into its own bytes when asked for.
impl TensorSource for crate::gguf::GgufFile {
    fn meta(&self, name: &str) -> Option<TensorMeta> {
        if let Some(t) = self.tensor(name) {
            return Some(TensorMeta { name: t.name.clone(), ggml_type: t.ggml_type, dims: t.dims.clone() });
        }
        let (fused, _) = fused_half(self, name)?;
        let mut dims = fused.dims.clone();
        dims[1] /= 2;
        Some(TensorMeta { name: name.to_string(), ggml_type: fused.ggml_type, dims })
    }
    fn bytes(&self, name: &str) -> Option<TensorBytes<'_>> {
        if let Some(t) = self.tensor(name) {
            return Some(TensorBytes { meta: self.meta(name)?, bytes: Cow::Borrowed(self.tensor_data(t)) });
        }
        let (fused, second) = fused_half(self, name)?;
        let meta = self.meta(name)?;
        let row = fused.ggml_type.bytes_for(fused.dims[0])? as usize;
        let half = row * meta.dims[1] as usize;
        let data = self.tensor_data(fused);
        let mut out = Vec::with_capacity(half * meta.dims[2] as usize);
        for expert in data.chunks_exact(2 * half) {
            out.extend_from_slice(if second { &expert[half..] } else { &expert[..half] });
        }
        Some(TensorBytes { meta, bytes: Cow::Owned(out) })
    }
    fn release(&self, name: &str) {
        if let (Some(t), crate::gguf::Backing::Mmap(map)) = (self.tensor(name), self.backing()) {
            map.release(t.data.start, t.data.end);
        }
    }
}

/// The fused tensor `name` (a `ffn_gate_exps` or `ffn_up_exps` the file lacks) is half of, and
/// whether it is the second (up) half.
fn fused_half<'a>(f: &'a crate::gguf::GgufFile, name: &str) -> Option<(&'a crate::gguf::TensorInfo, bool)> {
    let (stem, second) = match name.strip_suffix(".ffn_gate_exps.weight") {
        Some(stem) => (stem, false),
        None => (name.strip_suffix(".ffn_up_exps.weight")?, true),
    };
    let fused = f.tensor(&format!("{stem}.ffn_gate_up_exps.weight"))?;
    // A 3-D tensor of an even number of rows per expert; anything else is left unresolved,
    // so that the missing tensor is reported by its own name.
    (fused.dims.len() == 3 && fused.dims[1] % 2 == 0).then_some((fused, second))
}

/// The per-layer tensors: the one per-layer weights type of every backend. `M` is how a
/// backend holds a matrix, `V` a vector (norm weights, biases); the loaders describe them by
/// [`TensorMeta`]. Optional ones exist only for the architectures that use them.
#[derive(Clone, Debug)]
pub struct LayerWeights<M, V = M> {
    pub attn_norm: V,
    /// The attention projections; `None` in Gated DeltaNet layers. With an output gate
    /// (Qwen3.5), `attn_q` yields per head the query and then the gate logits.
    pub attn_q: Option<M>,
    pub attn_k: Option<M>,
    pub attn_v: Option<M>,
    pub attn_output: Option<M>,
    /// A Gated DeltaNet layer's tensors, in place of attention.
    pub delta_net: Option<DeltaNetWeights<M, V>>,
    pub attn_q_bias: Option<V>,
    pub attn_k_bias: Option<V>,
    pub attn_v_bias: Option<V>,
    pub attn_q_norm: Option<V>,
    pub attn_k_norm: Option<V>,
    pub attn_output_bias: Option<V>,
    /// Per-head logits that join the attention softmax's denominator (gpt-oss).
    pub attn_sinks: Option<V>,
    pub post_attention_norm: Option<V>,
    pub ffn_norm: V,
    pub ffn: FfnWeights<M, V>,
    pub post_ffw_norm: Option<V>,
}

/// Biases of a MoE block (gpt-oss): the router's, and each expert's gate, up and down ones
/// stacked like the experts' rows (`[n_ff_exp, n_expert]`, `[n_embd, n_expert]` in ggml order).
#[derive(Clone, Debug)]
pub struct MoeBiases<V> {
    pub router: V,
    pub gate: V,
    pub up: V,
    pub down: V,
}

impl<V> MoeBiases<V> {
    pub fn try_map<W, E>(&self, mut f: impl FnMut(&V) -> Result<W, E>) -> Result<MoeBiases<W>, E> {
        Ok(MoeBiases {
            router: f(&self.router)?,
            gate: f(&self.gate)?,
            up: f(&self.up)?,
            down: f(&self.down)?,
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &V> {
        [&self.router, &self.gate, &self.up, &self.down].into_iter()
    }
}

/// A Gated DeltaNet layer (llama.cpp names).
#[derive(Clone, Debug)]
pub struct DeltaNetWeights<M, V> {
    /// `attn_qkv`: [n_embd, 2·key_dim + value_dim], the convolution's input channels.
    pub qkv: M,
    /// `attn_gate`: [n_embd, value_dim], the z gate of the output norm.
    pub z: M,
    pub beta_alpha: BetaAlpha<M>,
    /// `ssm_conv1d`: [conv_kernel, channels], each channel's taps, oldest first.
    pub conv: V,
    /// `ssm_dt.bias`: `[n_v_heads]`, added to alpha before the softplus.
    pub dt_bias: V,
    /// `ssm_a`: `[n_v_heads]`, the (negative) decay rate, `-exp(A_log)`.
    pub a: V,
    /// `ssm_norm`: `[head_dim]`, the gated RMS norm's weight.
    pub norm: V,
    /// `ssm_out`: [value_dim, n_embd].
    pub out: M,
}

/// The beta (write strength) and alpha (decay) projections, [n_embd, n_v_heads] each.
#[derive(Clone, Debug)]
pub enum BetaAlpha<M> {
    Separate {
        beta: M,
        alpha: M,
    },
    /// `ssm_ba`: [n_embd, 2·n_v_heads], per key head its group's betas then its alphas.
    Fused(M),
}

impl<M> BetaAlpha<M> {
    fn try_map<N, E>(&self, mut f: impl FnMut(&M) -> Result<N, E>) -> Result<BetaAlpha<N>, E> {
        Ok(match self {
            BetaAlpha::Separate { beta, alpha } => BetaAlpha::Separate { beta: f(beta)?, alpha: f(alpha)? },
            BetaAlpha::Fused(m) => BetaAlpha::Fused(f(m)?),
        })
    }
    fn iter(&self) -> Vec<&M> {
        match self {
            BetaAlpha::Separate { beta, alpha } => vec![beta, alpha],
            BetaAlpha::Fused(m) => vec![m],
        }
    }
}

impl<M, V> DeltaNetWeights<M, V> {
    /// The same layer with each matrix converted by `mat` and each vector by `vec`.
    pub fn try_map<N, W, E>(
        &self,
        mut mat: impl FnMut(&M) -> Result<N, E>,
        mut vec: impl FnMut(&V) -> Result<W, E>,
    ) -> Result<DeltaNetWeights<N, W>, E> {
        Ok(DeltaNetWeights {
            qkv: mat(&self.qkv)?,
            z: mat(&self.z)?,
            beta_alpha: self.beta_alpha.try_map(&mut mat)?,
            conv: vec(&self.conv)?,
            dt_bias: vec(&self.dt_bias)?,
            a: vec(&self.a)?,
            norm: vec(&self.norm)?,
            out: mat(&self.out)?,
        })
    }
    pub fn matrices(&self) -> impl Iterator<Item = &M> {
        let mut v = vec![&self.qkv, &self.z];
        v.extend(self.beta_alpha.iter());
        v.push(&self.out);
        v.into_iter()
    }
    pub fn vectors(&self) -> impl Iterator<Item = &V> {
        [&self.conv, &self.dt_bias, &self.a, &self.norm].into_iter()
    }
}

/// The shared expert every token runs beside the routed ones (Qwen3.5 MoE, Qwen3-Next).
#[derive(Clone, Debug)]
pub struct SharedExpert<M> {
    /// `ffn_gate_inp_shexp`: `[n_embd]`, one logit per token; the output is scaled by its sigmoid.
    pub gate_inp: M,
    pub gate: M,
    pub up: M,
    pub down: M,
}

impl<M> SharedExpert<M> {
    fn try_map<N, E>(&self, mut f: impl FnMut(&M) -> Result<N, E>) -> Result<SharedExpert<N>, E> {
        Ok(SharedExpert {
            gate_inp: f(&self.gate_inp)?,
            gate: f(&self.gate)?,
            up: f(&self.up)?,
            down: f(&self.down)?,
        })
    }
}

#[derive(Clone, Debug)]
pub enum FfnWeights<M, V = M> {
    Dense {
        gate: M,
        up: M,
        down: M,
    },
    /// Stacked experts: `gate_exps`/`up_exps` are [n_embd, n_ff_exp, n_expert] in ggml order.
    Moe {
        router: M,
        gate_exps: M,
        up_exps: M,
        down_exps: M,
        biases: Option<MoeBiases<V>>,
        shared: Option<SharedExpert<M>>,
    },
    /// A MoE block whose router and experts another backend holds (`--cpu-moe`: the GPU runs
    /// the layer's attention, the CPU its experts). [`ModelWeights::resolve`] never makes it.
    Elsewhere,
}

impl<M, V> FfnWeights<M, V> {
    /// The same block with each matrix converted by `f` and each bias by `vec`.
    pub fn try_map<N, W, E>(
        &self,
        mut f: impl FnMut(&M) -> Result<N, E>,
        vec: impl FnMut(&V) -> Result<W, E>,
    ) -> Result<FfnWeights<N, W>, E> {
        Ok(match self {
            FfnWeights::Dense { gate, up, down } => {
                FfnWeights::Dense { gate: f(gate)?, up: f(up)?, down: f(down)? }
            }
            FfnWeights::Moe { router, gate_exps, up_exps, down_exps, biases, shared } => FfnWeights::Moe {
                router: f(router)?,
                gate_exps: f(gate_exps)?,
                up_exps: f(up_exps)?,
                down_exps: f(down_exps)?,
                biases: biases.as_ref().map(|b| b.try_map(vec)).transpose()?,
                shared: shared.as_ref().map(|s| s.try_map(&mut f)).transpose()?,
            },
            FfnWeights::Elsewhere => FfnWeights::Elsewhere,
        })
    }

    /// The matrices.
    pub fn iter(&self) -> impl Iterator<Item = &M> {
        let mats: Vec<&M> = match self {
            FfnWeights::Dense { gate, up, down } => vec![gate, up, down],
            FfnWeights::Moe { router, gate_exps, up_exps, down_exps, shared, .. } => {
                let mut v = vec![router, gate_exps, up_exps, down_exps];
                if let Some(s) = shared {
                    v.extend([&s.gate_inp, &s.gate, &s.up, &s.down]);
                }
                v
            }
            FfnWeights::Elsewhere => Vec::new(),
        };
        mats.into_iter()
    }

    /// The biases (MoE blocks that have them).
    pub fn vectors(&self) -> impl Iterator<Item = &V> {
        let biases = match self {
            FfnWeights::Moe { biases: Some(b), .. } => Some(b),
            _ => None,
        };
        biases.into_iter().flat_map(MoeBiases::iter)
    }
}

/// The tensors of one layer as the file describes them.
pub type LayerMetas = LayerWeights<TensorMeta>;

#[derive(Clone, Debug)]
pub struct ModelWeights<T> {
    pub token_embd: T,
    pub output_norm: T,
    /// `None` when the output head is tied to `token_embd`.
    pub output: Option<T>,
    /// Per-frequency RoPE divisors (Llama 3.x `rope_freqs.weight`), one per rotated pair,
    /// shared by every layer.
    pub rope_freqs: Option<T>,
    pub layers: Vec<LayerWeights<T>>,
}

impl<T> ModelWeights<T> {
    /// The output projection (tied or not).
    pub fn output_head(&self) -> &T {
        self.output.as_ref().unwrap_or(&self.token_embd)
    }
}

impl ModelWeights<TensorMeta> {
    /// Finds every tensor the config calls for and checks its shape.
    pub fn resolve(cfg: &ModelConfig, src: &dyn TensorSource) -> Result<Self, ModelError> {
        let e = cfg.n_embd as u64;
        let v = cfg.n_vocab as u64;
        let req = |name: String, shape: &[u64]| -> Result<TensorMeta, ModelError> {
            let t = src.meta(&name).ok_or_else(|| ModelError::MissingTensor(name.clone()))?;
            check_shape(&t, shape)?;
            Ok(t)
        };
        let opt = |name: String, shape: &[u64]| -> Result<Option<TensorMeta>, ModelError> {
            match src.meta(&name) {
                None => Ok(None),
                Some(t) => check_shape(&t, shape).map(|_| Some(t)),
            }
        };

        let token_embd = req("token_embd.weight".into(), &[e, v])?;
        let output_norm = req("output_norm.weight".into(), &[e])?;
        let output = opt("output.weight".into(), &[e, v])?;
        let rope_freqs = opt("rope_freqs.weight".into(), &[cfg.rope_dim as u64 / 2])?;

        // In u64: a hand-built config could overflow the u32 helpers.
        let hd = cfg.head_dim as u64;
        let q = hd * cfg.n_head as u64;
        let kd = hd * cfg.n_head_kv as u64;
        let vd = cfg.head_dim_v as u64 * cfg.n_head_kv as u64;
        // Grows as layers resolve: a bogus n_layer fails at the first missing tensor instead.
        let mut layers = Vec::with_capacity((cfg.n_layer as usize).min(256));
        // With an output gate the q projection yields the gate logits after each head's query.
        let q_rows = if cfg.attn_output_gate { 2 * q } else { q };
        for il in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{il}.{s}");
            let recurrent = cfg.is_recurrent(il as usize);
            let delta_net = match (&cfg.delta_net, recurrent) {
                (Some(d), true) => Some(resolve_delta_net(d, e, il, &req, src)?),
                (None, true) => {
                    return Err(ModelError::BadHyperparameter(format!(
                        "layer {il} is recurrent but the model has no DeltaNet sizes"
                    )));
                }
                (_, false) => None,
            };
            let attn = |s: &str, shape: &[u64]| -> Result<Option<TensorMeta>, ModelError> {
                if recurrent { Ok(None) } else { req(n(s), shape).map(Some) }
            };
            let (q_norm, k_norm) = if cfg.has_qk_norm && !recurrent {
                (Some(req(n("attn_q_norm.weight"), &[hd])?), Some(req(n("attn_k_norm.weight"), &[hd])?))
            } else {
                (None, None)
            };
            let (qb, kb, vb) = if cfg.has_qkv_bias && !recurrent {
                (
                    Some(req(n("attn_q.bias"), &[q])?),
                    Some(req(n("attn_k.bias"), &[kd])?),
                    Some(req(n("attn_v.bias"), &[vd])?),
                )
            } else {
                (None, None, None)
            };
            let ffn = match &cfg.moe {
                None => {
                    let f = cfg.n_ff as u64;
                    FfnWeights::Dense {
                        gate: req(n("ffn_gate.weight"), &[e, f])?,
                        up: req(n("ffn_up.weight"), &[e, f])?,
                        down: req(n("ffn_down.weight"), &[f, e])?,
                    }
                }
                Some(m) => {
                    let (f, x) = (m.n_ff_expert as u64, m.n_expert as u64);
                    let biases = match cfg.has_moe_biases {
                        false => None,
                        true => Some(MoeBiases {
                            router: req(n("ffn_gate_inp.bias"), &[x])?,
                            gate: req(n("ffn_gate_exps.bias"), &[f, x])?,
                            up: req(n("ffn_up_exps.bias"), &[f, x])?,
                            down: req(n("ffn_down_exps.bias"), &[e, x])?,
                        }),
                    };
                    let shared = match m.shared_expert_ff {
                        None => None,
                        Some(s) => {
                            let s = s as u64;
                            Some(SharedExpert {
                                gate_inp: req(n("ffn_gate_inp_shexp.weight"), &[e])?,
                                gate: req(n("ffn_gate_shexp.weight"), &[e, s])?,
                                up: req(n("ffn_up_shexp.weight"), &[e, s])?,
                                down: req(n("ffn_down_shexp.weight"), &[s, e])?,
                            })
                        }
                    };
                    FfnWeights::Moe {
                        router: req(n("ffn_gate_inp.weight"), &[e, x])?,
                        gate_exps: req(n("ffn_gate_exps.weight"), &[e, f, x])?,
                        up_exps: req(n("ffn_up_exps.weight"), &[e, f, x])?,
                        down_exps: req(n("ffn_down_exps.weight"), &[f, e, x])?,
                        biases,
                        shared,
                    }
                }
            };
            let (post_attn, post_ffw) = if cfg.has_post_norms {
                (
                    Some(req(n("post_attention_norm.weight"), &[e])?),
                    Some(req(n("post_ffw_norm.weight"), &[e])?),
                )
            } else {
                (None, None)
            };
            let attn_output_bias = if cfg.has_attn_out_bias && !recurrent {
                Some(req(n("attn_output.bias"), &[e])?)
            } else {
                None
            };
            let attn_sinks = if cfg.has_attn_sinks && !recurrent {
                Some(req(n("attn_sinks.weight"), &[cfg.n_head as u64])?)
            } else {
                None
            };
            layers.push(LayerWeights {
                attn_norm: req(n("attn_norm.weight"), &[e])?,
                attn_q: attn("attn_q.weight", &[e, q_rows])?,
                attn_k: attn("attn_k.weight", &[e, kd])?,
                attn_v: attn("attn_v.weight", &[e, vd])?,
                attn_output: attn("attn_output.weight", &[cfg.head_dim_v as u64 * cfg.n_head as u64, e])?,
                delta_net,
                attn_q_bias: qb,
                attn_k_bias: kb,
                attn_v_bias: vb,
                attn_q_norm: q_norm,
                attn_k_norm: k_norm,
                attn_output_bias,
                attn_sinks,
                post_attention_norm: post_attn,
                ffn_norm: req(n(&format!("{}.weight", cfg.ffn_norm_name)), &[e])?,
                ffn,
                post_ffw_norm: post_ffw,
            });
        }
        Ok(ModelWeights { token_embd, output_norm, output, rope_freqs, layers })
    }

    /// Every weight tensor in a fixed order (for uploads and memory plans). `rope_freqs` is not
    /// among them: it becomes part of the RoPE tables, which the plans count with the context.
    pub fn all(&self) -> Vec<&TensorMeta> {
        let mut out = vec![&self.token_embd, &self.output_norm];
        out.extend(self.output.iter());
        for l in &self.layers {
            out.extend(l.iter());
        }
        out
    }

    /// Bytes one decode token reads: every tensor once, except the embedding table when the
    /// output head is its own matrix (the token's row only), and of each expert tensor the
    /// `n_used` of `n_expert` experts a token is routed to.
    pub fn decode_bytes(&self, n_expert: u32, n_used: u32) -> u64 {
        let all = self.all();
        let skip_embd = usize::from(self.output.is_some());
        all.iter()
            .skip(skip_embd)
            .map(|t| {
                let bytes = t.n_bytes();
                let routed = n_expert > 0 && t.name.contains("_exps");
                if routed { bytes / u64::from(n_expert) * u64::from(n_used.min(n_expert)) } else { bytes }
            })
            .sum()
    }
}

/// Finds a required tensor and checks its shape.
type Require<'a> = dyn Fn(String, &[u64]) -> Result<TensorMeta, ModelError> + 'a;

/// A DeltaNet layer's tensors, shapes from `d`.
fn resolve_delta_net(
    d: &DeltaNetConfig,
    e: u64,
    il: u32,
    req: &Require<'_>,
    src: &dyn TensorSource,
) -> Result<DeltaNetWeights<TensorMeta, TensorMeta>, ModelError> {
    let n = |s: &str| format!("blk.{il}.{s}");
    let (nv, vd, ch) = (d.n_v_heads as u64, d.value_dim() as u64, d.conv_channels() as u64);
    if src.meta(&n("attn_qkv.weight")).is_none() && src.meta(&n("ssm_in.weight")).is_some() {
        return Err(ModelError::Unsupported(format!(
            "{}: the legacy fused qkvz projection of early Qwen3-Next conversions; reconvert the model \
             with a current llama.cpp",
            n("ssm_in.weight")
        )));
    }
    let beta_alpha = match d.fused_beta_alpha {
        true => BetaAlpha::Fused(req(n("ssm_ba.weight"), &[e, 2 * nv])?),
        false => BetaAlpha::Separate {
            beta: req(n("ssm_beta.weight"), &[e, nv])?,
            alpha: req(n("ssm_alpha.weight"), &[e, nv])?,
        },
    };
    Ok(DeltaNetWeights {
        qkv: req(n("attn_qkv.weight"), &[e, ch])?,
        z: req(n("attn_gate.weight"), &[e, vd])?,
        beta_alpha,
        conv: req(n("ssm_conv1d.weight"), &[d.conv_kernel as u64, ch])?,
        dt_bias: req(n("ssm_dt.bias"), &[nv])?,
        a: req(n("ssm_a"), &[nv])?,
        norm: req(n("ssm_norm.weight"), &[d.head_dim as u64])?,
        out: req(n("ssm_out.weight"), &[vd, e])?,
    })
}

impl<M, V> LayerWeights<M, V> {
    /// The same layer with each matrix converted by `mat` and each vector by `vec`.
    pub fn try_map<N, W, E>(
        &self,
        mut mat: impl FnMut(&M) -> Result<N, E>,
        mut vec: impl FnMut(&V) -> Result<W, E>,
    ) -> Result<LayerWeights<N, W>, E> {
        let mut opt = |v: &Option<V>| v.as_ref().map(&mut vec).transpose();
        Ok(LayerWeights {
            attn_q_bias: opt(&self.attn_q_bias)?,
            attn_k_bias: opt(&self.attn_k_bias)?,
            attn_v_bias: opt(&self.attn_v_bias)?,
            attn_q_norm: opt(&self.attn_q_norm)?,
            attn_k_norm: opt(&self.attn_k_norm)?,
            attn_output_bias: opt(&self.attn_output_bias)?,
            attn_sinks: opt(&self.attn_sinks)?,
            post_attention_norm: opt(&self.post_attention_norm)?,
            post_ffw_norm: opt(&self.post_ffw_norm)?,
            attn_norm: vec(&self.attn_norm)?,
            ffn_norm: vec(&self.ffn_norm)?,
            attn_q: self.attn_q.as_ref().map(&mut mat).transpose()?,
            attn_k: self.attn_k.as_ref().map(&mut mat).transpose()?,
            attn_v: self.attn_v.as_ref().map(&mut mat).transpose()?,
            attn_output: self.attn_output.as_ref().map(&mut mat).transpose()?,
            delta_net: self.delta_net.as_ref().map(|d| d.try_map(&mut mat, &mut vec)).transpose()?,
            ffn: self.ffn.try_map(mat, vec)?,
        })
    }

    /// The matrices, attention first.
    pub fn matrices(&self) -> impl Iterator<Item = &M> {
        [&self.attn_q, &self.attn_k, &self.attn_v, &self.attn_output]
            .into_iter()
            .flatten()
            .chain(self.delta_net.iter().flat_map(|d| d.matrices()))
            .chain(self.ffn.iter())
    }

    /// The vectors that exist: norm weights and biases.
    pub fn vectors(&self) -> impl Iterator<Item = &V> {
        [&self.attn_norm, &self.ffn_norm].into_iter().chain(
            [
                &self.attn_q_bias,
                &self.attn_k_bias,
                &self.attn_v_bias,
                &self.attn_q_norm,
                &self.attn_k_norm,
                &self.attn_output_bias,
                &self.attn_sinks,
                &self.post_attention_norm,
                &self.post_ffw_norm,
            ]
            .into_iter()
            .flatten()
            .chain(self.delta_net.iter().flat_map(|d| d.vectors()))
            .chain(self.ffn.vectors()),
        )
    }
}

impl<T> LayerWeights<T> {
    /// Every tensor of the layer.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.matrices().chain(self.vectors())
    }
}

fn check_shape(t: &TensorMeta, expected: &[u64]) -> Result<(), ModelError> {
    // Trailing 1s are insignificant in ggml shapes.
    let trim = |d: &[u64]| {
        let mut v = d.to_vec();
        while v.len() > 1 && v.last() == Some(&1) {
            v.pop();
        }
        v
    };
    if trim(&t.dims) != trim(expected) {
        return Err(ModelError::ShapeMismatch {
            tensor: t.name.clone(),
            found: t.dims.clone(),
            expected: expected.to_vec(),
        });
    }
    Ok(())
}
