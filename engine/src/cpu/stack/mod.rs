//! A contiguous range of transformer layers `[0, n)` run on the CPU, with their KV cache in
//! RAM: the token embedding, the layers and, when it runs them all, the output norm and head.
//! It runs the same layer plan as the GPU (`crate::layers`) with the CPU kernels.

mod experts;
mod forward;
mod profile;
mod weights;

use std::sync::Arc;

use wllm_loaders::ModelConfig;
use wllm_loaders::model::TensorSource;

pub use self::experts::CpuExperts;
pub use self::forward::softcap;
pub use self::profile::Profile;
pub use self::weights::CpuPacker;
use self::weights::{Loader, StackWeights};
use super::Isa;
use super::exec::{Exec, Team};
use super::kv::KvCache;
use super::recurrent::{RecurrentStates, Snapshot};
use crate::error::{EngineError, Result};
use crate::kv_type::CacheTypes;
use crate::layers::{ModelPlan, RopeTable, SeqSpan, logit_rows, token_positions};

/// Which rows of a batch [`CpuStack::logits`] returns.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LogitRows {
    Last,
    All,
}

/// Settings beyond the layer range.
#[derive(Clone, Debug)]
pub struct CpuOptions {
    /// Threads, the caller's included (0: one per core).
    pub threads: usize,
    /// Element types of K and V (default f32, exact; sessions ask for f16 unless told).
    pub cache: CacheTypes,
    /// Most tokens run through the layers at once; longer inputs go in chunks of this size.
    pub max_batch: usize,
    /// Instruction set (default: the best this CPU has).
    pub isa: Option<Isa>,
    /// Sequences the KV cache holds, `n_ctx` positions each (continuous batching).
    pub n_seq: u32,
}

impl Default for CpuOptions {
    fn default() -> Self {
        CpuOptions { threads: 0, cache: CacheTypes::F32, max_batch: 256, isa: None, n_seq: 1 }
    }
}

/// Activations of one chunk, reused between calls.
#[derive(Default)]
pub(crate) struct Scratch {
    pub x: Vec<f32>,
    pub h: Vec<f32>,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub attn: Vec<f32>,
    pub g: Vec<f32>,
    pub u: Vec<f32>,
    pub a: Vec<f32>,
    /// Gated attention's gate logits; a DeltaNet block's z gate.
    pub gate: Vec<f32>,
}

pub struct CpuStack {
    cfg: ModelConfig,
    plan: ModelPlan,
    isa: Isa,
    team: Team,
    w: StackWeights,
    kv: KvCache,
    /// The DeltaNet layers' states per sequence (empty without such layers).
    states: RecurrentStates,
    /// Per sequence: how many tokens its recurrent states have taken in.
    state_pos: Vec<usize>,
    /// Sequence 0's recurrent states after its first `.0` tokens, taken at the end of the last
    /// evaluation of more than one token (a prompt, a chat turn): where a truncation that the
    /// states cannot follow goes back to instead of to nothing.
    checkpoint: Option<(usize, Snapshot)>,
    /// (cos, sin) per position, indexed by [`RopeTable`]; empty where no layer reads it.
    rope: [Vec<[f32; 2]>; 2],
    /// Positions `0..n_filled` of the KV cache hold the current sequence.
    n_filled: usize,
    /// Positions per sequence; the cache holds `n_seq` sequences of `seq_ctx` each.
    seq_ctx: usize,
    n_seq: usize,
    max_batch: usize,
    scratch: Scratch,
    weight_bytes: u64,
    profile: Option<Profile>,
    // Last: the weights may borrow from the source (see `weights::Loader::matrix`).
    _src: Arc<dyn TensorSource>,
}

impl CpuStack {
    /// Layers `0..n_cpu_layers` of the model in `src`, plus the output norm and head if
    /// `with_head` (which needs every layer), with a KV cache of `n_ctx` positions and a pool
    /// of `threads` workers (0: one per core).
    pub fn new(
        cfg: &ModelConfig,
        src: Arc<dyn TensorSource>,
        n_cpu_layers: u32,
        with_head: bool,
        n_ctx: u32,
        threads: usize,
    ) -> Result<Self> {
        Self::with_options(
            cfg,
            src,
            n_cpu_layers,
            with_head,
            n_ctx,
            &CpuOptions { threads, ..CpuOptions::default() },
        )
    }

    pub fn with_options(
        cfg: &ModelConfig,
        src: Arc<dyn TensorSource>,
        n_cpu_layers: u32,
        with_head: bool,
        n_ctx: u32,
        opts: &CpuOptions,
    ) -> Result<Self> {
        if n_cpu_layers > cfg.n_layer {
            return Err(EngineError::InvalidArgument(format!(
                "{n_cpu_layers} CPU layers requested of a {}-layer model",
                cfg.n_layer
            )));
        }
        if with_head && n_cpu_layers != cfg.n_layer {
            return Err(EngineError::InvalidArgument(format!(
                "the output head runs on the CPU only with every layer there ({n_cpu_layers} of {})",
                cfg.n_layer
            )));
        }
        if n_ctx == 0 {
            return Err(EngineError::InvalidArgument("the context must hold at least one position".into()));
        }
        let threads = if opts.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            opts.threads
        };
        let team = Team::new(threads)
            .map_err(|e| EngineError::InvalidArgument(format!("cannot start {threads} CPU threads: {e}")))?;
        let w = Loader { src: &src }.load(cfg, n_cpu_layers as usize, with_head)?;
        let mut weight_bytes =
            w.token_embd.n_bytes() + w.layers.iter().map(weights::layer_bytes).sum::<u64>();
        if let Some((norm, head)) = &w.head {
            weight_bytes += 4 * norm.len() as u64 + head.as_ref().map_or(0, |h| h.n_bytes());
        }
        let n_ctx = n_ctx as usize;
        let n_seq = opts.n_seq.max(1) as usize;
        opts.cache.check_dims(cfg.head_dim, cfg.head_dim_v)?;
        let kv = KvCache::new(
            n_cpu_layers as usize,
            |il| !cfg.is_recurrent(il),
            n_ctx * n_seq,
            cfg.n_head_kv as usize,
            cfg.head_dim as usize,
            cfg.head_dim_v as usize,
            opts.cache,
        );
        let states = RecurrentStates::new(cfg, n_cpu_layers as usize, n_seq);
        let plan = ModelPlan::new(cfg, src.as_ref())?;
        let rope = [RopeTable::Global, RopeTable::Sliding]
            .map(|t| if plan.uses_table(t) { plan.rope.table(t, n_ctx as u32) } else { Vec::new() });
        Ok(CpuStack {
            cfg: cfg.clone(),
            isa: opts.isa.unwrap_or_else(Isa::best),
            team,
            w,
            kv,
            states,
            state_pos: vec![0; n_seq],
            checkpoint: None,
            rope,
            plan,
            n_filled: 0,
            seq_ctx: n_ctx,
            n_seq,
            max_batch: opts.max_batch.max(1),
            scratch: Scratch::default(),
            weight_bytes,
            profile: None,
            _src: src,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    pub fn isa(&self) -> Isa {
        self.isa
    }
    pub fn threads(&self) -> usize {
        self.team.threads()
    }
    pub fn n_layers(&self) -> usize {
        self.w.layers.len()
    }
    /// Positions per sequence.
    pub fn n_ctx(&self) -> usize {
        self.seq_ctx
    }
    /// Sequences the cache holds.
    pub fn n_seq(&self) -> usize {
        self.n_seq
    }
    /// Positions of the KV cache that hold the current sequence.
    pub fn n_filled(&self) -> usize {
        self.n_filled
    }
    /// Forgets the sequence.
    pub fn clear(&mut self) {
        self.n_filled = 0;
        self.state_pos[0] = 0;
        self.checkpoint = None;
    }
    /// Keeps positions `0..n` at most and returns how many it kept. Recurrent states hold every
    /// token so far and cannot be cut: with them it keeps the whole sequence, or goes back to
    /// the checkpoint when that lies at or before `n`, or else to nothing; the caller
    /// evaluates the tokens between what was kept and `n` again.
    pub fn truncate(&mut self, n: usize) -> usize {
        if !self.states.any() || n >= self.n_filled {
            self.n_filled = self.n_filled.min(n);
            return self.n_filled;
        }
        let kept = match &self.checkpoint {
            Some((at, snap)) if *at <= n && *at <= self.n_filled => {
                self.states.restore(0, snap);
                *at
            }
            _ => {
                self.checkpoint = None;
                0
            }
        };
        self.n_filled = kept;
        self.state_pos[0] = kept;
        kept
    }

    /// Whether this stack's layers carry recurrent states, which cannot be truncated.
    pub fn has_recurrent_state(&self) -> bool {
        self.states.any()
    }

    /// Checks that `seq`'s recurrent states hold exactly the tokens before `pos0` (or that the
    /// step starts the sequence over at 0), so a state never meets tokens it does not match.
    fn check_state_pos(&self, seq: usize, pos0: usize) -> Result<()> {
        if !self.states.any() || pos0 == 0 || self.state_pos.get(seq) == Some(&pos0) {
            return Ok(());
        }
        let held = match self.state_pos.get(seq) {
            Some(&usize::MAX) => "is left over from a step that failed".to_string(),
            Some(n) => format!("holds {n} tokens"),
            None => "does not exist".to_string(),
        };
        Err(EngineError::InvalidArgument(format!(
            "sequence {seq} continues at position {pos0}, but its recurrent state {held}; a recurrent \
             model cannot rewind, so evaluate the sequence again from position 0"
        )))
    }

    /// Starts (or restarts) timing every op kind; off by default.
    pub fn enable_profile(&mut self) {
        self.profile = Some(Profile::default());
    }
    /// Stops timing ops and forgets the times.
    pub fn disable_profile(&mut self) {
        self.profile = None;
    }
    /// Time per op kind since [`enable_profile`](Self::enable_profile).
    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_ref()
    }

    /// Bytes of weights this stack reads (mapped or owned).
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }
    /// Bytes that grow with the context: the KV cache and the RoPE tables.
    pub fn kv_bytes(&self) -> u64 {
        self.kv.bytes() + self.states.bytes() + 8 * (self.rope[0].len() + self.rope[1].len()) as u64
    }

    /// Embeds `tokens` at positions `pos0..`, runs them through this stack's layers, and
    /// leaves the hidden state (the residual stream after the last CPU layer, `tokens.len()`
    /// rows of `n_embd`) in `out_hidden`.
    pub fn forward(&mut self, tokens: &[u32], pos0: u32, out_hidden: &mut Vec<f32>) -> Result<()> {
        out_hidden.clear();
        self.run(tokens, pos0 as usize, |st, _| {
            out_hidden.extend_from_slice(&st.scratch.x);
            Ok(())
        })
    }

    /// Runs every layer and the head (the stack must have been built `with_head`) and returns
    /// the logits of the last token, or of every token, row-major.
    pub fn logits(&mut self, tokens: &[u32], pos0: u32, rows: LogitRows) -> Result<Vec<f32>> {
        if self.w.head.is_none() {
            return Err(EngineError::InvalidArgument(
                "this CPU stack was built without the output head".into(),
            ));
        }
        let mut out = Vec::new();
        let n = tokens.len();
        self.run(tokens, pos0 as usize, |st, done| {
            let n_chunk = st.scratch.x.len() / st.cfg.n_embd as usize;
            match rows {
                LogitRows::All => st.head(0..n_chunk, &mut out),
                LogitRows::Last if done == n => st.head(n_chunk - 1..n_chunk, &mut out),
                LogitRows::Last => Ok(()),
            }
        })?;
        Ok(out)
    }

    /// Runs every layer and the head and returns, per token, the log-probability of
    /// `targets[i]` after it ([`NO_TARGET`](crate::cpu::ops::log_softmax_at): 0). The head
    /// runs on a few rows at a time, so no more than those rows' logits exist at once.
    pub fn score(&mut self, tokens: &[u32], pos0: u32, targets: &[u32]) -> Result<Vec<f32>> {
        if self.w.head.is_none() {
            return Err(EngineError::InvalidArgument(
                "this CPU stack was built without the output head".into(),
            ));
        }
        if targets.len() != tokens.len() {
            return Err(EngineError::InvalidArgument(format!(
                "{} score targets for {} tokens",
                targets.len(),
                tokens.len()
            )));
        }
        // Rows per head call: enough to read the head's weights rarely, few enough that a
        // 262k vocabulary's logits stay small.
        const HEAD_ROWS: usize = 16;
        let v = self.cfg.n_vocab as usize;
        let mut out = Vec::with_capacity(tokens.len());
        let mut logits = Vec::new();
        self.run(tokens, pos0 as usize, |st, done| {
            let n_chunk = st.scratch.x.len() / st.cfg.n_embd as usize;
            let first = done - n_chunk;
            for r0 in (0..n_chunk).step_by(HEAD_ROWS) {
                let rows = r0..(r0 + HEAD_ROWS).min(n_chunk);
                logits.clear();
                st.head(rows.clone(), &mut logits)?;
                let at = first + rows.start;
                let ts = &targets[at..first + rows.end];
                let start = out.len();
                crate::cpu::ops::log_softmax_gather(&logits, v, ts, &mut out)?;
                if let Some(r) = out[start..].iter().position(|x| !x.is_finite()) {
                    let what = if out[start + r].is_nan() { "NaN" } else { "inf" };
                    return Err(EngineError::NonFiniteLogits {
                        what,
                        position: (pos0 as usize + at + r) as u64,
                    });
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Runs every layer and the final norm (the stack must have been built `with_head`) and
    /// returns each token's final-norm hidden state, `n_embd` values per token.
    pub fn final_hidden(&mut self, tokens: &[u32], pos0: u32) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.run(tokens, pos0 as usize, |st, _| st.normed_rows(&mut out))?;
        Ok(out)
    }

    /// One step over several sequences (continuous batching): `tokens` holds each span's
    /// tokens in span order. Leaves the hidden state of every token in `out_hidden`.
    pub fn forward_seqs(
        &mut self,
        tokens: &[u32],
        spans: &[SeqSpan],
        out_hidden: &mut Vec<f32>,
    ) -> Result<()> {
        out_hidden.clear();
        self.run_seqs(tokens, spans, |st, _| {
            out_hidden.extend_from_slice(&st.scratch.x);
            Ok(())
        })
    }

    /// Runs every layer and the head over several sequences and returns, row-major, the
    /// logits of the last token of every span that asks for them.
    pub fn logits_seqs(&mut self, tokens: &[u32], spans: &[SeqSpan]) -> Result<Vec<f32>> {
        if self.w.head.is_none() {
            return Err(EngineError::InvalidArgument(
                "this CPU stack was built without the output head".into(),
            ));
        }
        let wanted = logit_rows(spans);
        let mut out = Vec::new();
        self.run_seqs(tokens, spans, |st, chunk| {
            let rows: Vec<usize> = wanted
                .iter()
                .map(|&r| r as usize)
                .filter(|r| chunk.contains(r))
                .map(|r| r - chunk.start)
                .collect();
            if rows.is_empty() { Ok(()) } else { st.head_rows(&rows, &mut out) }
        })?;
        Ok(out)
    }

    /// Validates a multi-sequence step, then runs it in chunks, calling `each(self, rows)`
    /// after every chunk with its hidden state in `scratch.x`.
    fn run_seqs(
        &mut self,
        tokens: &[u32],
        spans: &[SeqSpan],
        mut each: impl FnMut(&mut CpuStack, std::ops::Range<usize>) -> Result<()>,
    ) -> Result<()> {
        let positions = token_positions(spans, self.n_seq as u32, self.seq_ctx as u32)?;
        if tokens.is_empty() || positions.len() != tokens.len() {
            return Err(EngineError::InvalidArgument(format!(
                "a step of {} tokens for spans of {}",
                tokens.len(),
                positions.len()
            )));
        }
        let n_vocab = self.cfg.n_vocab;
        if let Some(bad) = tokens.iter().find(|&&t| t >= n_vocab) {
            return Err(EngineError::InvalidArgument(format!(
                "token id {bad} is outside the vocabulary of {n_vocab}"
            )));
        }
        for s in spans {
            self.check_state_pos(s.seq as usize, s.pos0 as usize)?;
        }
        let mut done = 0;
        for (chunk, pos) in tokens.chunks(self.max_batch).zip(positions.chunks(self.max_batch)) {
            // A chunk that fails part way leaves states that match no token count.
            let seq_ctx = self.seq_ctx;
            for &[_, row0] in pos {
                self.state_pos[row0 as usize / seq_ctx] = usize::MAX;
            }
            self.chunk(chunk, pos)?;
            for &[p, row0] in pos {
                self.state_pos[row0 as usize / seq_ctx] = p as usize + 1;
            }
            each(self, done..done + chunk.len())?;
            done += chunk.len();
        }
        Ok(())
    }

    /// Validates the batch, then runs it in chunks, calling `each(self, tokens_done)` after
    /// every chunk with its hidden state in `scratch.x`.
    fn run(
        &mut self,
        tokens: &[u32],
        pos0: usize,
        mut each: impl FnMut(&mut CpuStack, usize) -> Result<()>,
    ) -> Result<()> {
        if tokens.is_empty() {
            return Err(EngineError::InvalidArgument("no tokens to evaluate".into()));
        }
        let n_vocab = self.cfg.n_vocab;
        if let Some(bad) = tokens.iter().find(|&&t| t >= n_vocab) {
            return Err(EngineError::InvalidArgument(format!(
                "token id {bad} is outside the vocabulary of {n_vocab}"
            )));
        }
        if pos0 > self.n_filled {
            return Err(EngineError::InvalidArgument(format!(
                "position {pos0} would leave a gap after the {} cached positions",
                self.n_filled
            )));
        }
        if pos0 + tokens.len() > self.seq_ctx {
            return Err(EngineError::ContextOverflow { n_tokens: pos0 + tokens.len(), n_ctx: self.seq_ctx });
        }
        self.check_state_pos(0, pos0)?;
        let mut done = 0;
        for chunk in tokens.chunks(self.max_batch) {
            let pos = pos0 + done;
            // The cache is rewritten from `pos` on, so later positions no longer belong.
            self.n_filled = pos;
            let positions: Vec<[u32; 2]> = (pos..pos + chunk.len()).map(|p| [p as u32, 0]).collect();
            if pos == 0 {
                self.checkpoint = None;
            }
            self.state_pos[0] = usize::MAX;
            self.chunk(chunk, &positions)?;
            self.n_filled = pos + chunk.len();
            self.state_pos[0] = self.n_filled;
            done += chunk.len();
            each(self, done)?;
        }
        // Decode steps (one token) take none: copying every state per token would cost more
        // than the step.
        if tokens.len() > 1 && self.states.any() {
            self.checkpoint = Some((self.n_filled, self.states.snapshot(0)));
        }
        Ok(())
    }
}
