//! What research tools ask of a model besides generation: the log-probability of each token
//! of a text ([`Session::score`]) and a pooled embedding of it ([`Session::embed`]). Both run
//! the one layer plan of every other step; only the asked-for values come back from the device.

use wllm_engine::exec::NO_TARGET;

use crate::error::{Error, Result};
use crate::session::Session;

/// How [`Session::embed`] pools the final-norm hidden states of a text's tokens into one
/// vector. Decoder models used as embedders (Qwen3-Embedding) take the last token's state.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pooling {
    /// The mean over every token.
    Mean,
    /// The last token's state: the only one that has seen the whole text in a causal model.
    Last,
    /// The first token's state (BERT's `[CLS]` convention).
    Cls,
}

impl Pooling {
    /// `mean`, `last` or `cls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Last => "last",
            Pooling::Cls => "cls",
        }
    }

    /// The pooling a model file asks for: llama.cpp's code in `<arch>.pooling_type`
    /// ([`ModelConfig::pooling_type`](crate::ModelConfig::pooling_type)); `None` for a code
    /// with no pooled vector (0: none, 4: rank) or one this library does not know.
    pub fn from_llama_code(code: u32) -> Option<Pooling> {
        match code {
            1 => Some(Pooling::Mean),
            2 => Some(Pooling::Cls),
            3 => Some(Pooling::Last),
            _ => None,
        }
    }
}

impl std::fmt::Display for Pooling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Pooling {
    type Err = Error;
    fn from_str(s: &str) -> Result<Pooling> {
        match s {
            "mean" => Ok(Pooling::Mean),
            "last" => Ok(Pooling::Last),
            "cls" => Ok(Pooling::Cls),
            other => Err(Error::InvalidOption {
                option: "pooling",
                message: format!("{other:?} is not one of mean, last, cls"),
            }),
        }
    }
}

/// Scales `v` to unit Euclidean length (a zero vector stays zero), as embedding APIs return
/// vectors for cosine similarity by dot product.
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
    }
}

/// Perplexity of scored tokens: `exp(-mean(logprobs))`, the mean taken in f64 (NaN for none).
pub fn perplexity(logprobs: &[f32]) -> f64 {
    let nll: f64 = logprobs.iter().map(|&x| -(x as f64)).sum();
    (nll / logprobs.len() as f64).exp()
}

impl Session {
    /// The log-probability of each token of `ids` given those before it:
    /// element `i` is `ln p(ids[i + 1] | cache, ids[..=i])`, so `ids.len() - 1` values (the
    /// first token is context only). `ids` follows what the cache already holds, and the cache
    /// holds all of `ids` afterwards; call [`clear`](Self::clear) first to score a text alone.
    ///
    /// The log-softmax over the vocabulary and the gather of each next token run where the
    /// output head runs (a WGSL kernel on the GPU, its CPU twin otherwise): one float per
    /// token comes back, never a logit row. Long inputs go in batches of
    /// [`n_batch`](Self::n_batch); an input that does not fit the context is refused before
    /// anything runs ([`Error::ContextOverflow`]). [`perplexity`](crate::perplexity) turns the
    /// result into a perplexity.
    ///
    /// ```no_run
    /// # fn f(model: &wllm::Model) -> wllm::Result<()> {
    /// let mut session = model.session(&Default::default())?;
    /// let ids = model.tokenize("The capital of France is Paris.");
    /// let logprobs = session.score(&ids)?;
    /// println!("perplexity {:.2}", wllm::perplexity(&logprobs));
    /// # Ok(()) }
    /// ```
    pub fn score(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        crate::generate::prompt::check(self, ids)?;
        let mut out = Vec::with_capacity(ids.len());
        let n_batch = self.n_batch();
        for (b, batch) in ids.chunks(n_batch).enumerate() {
            let start = b * n_batch;
            // Each token's target is the token after it; the text's last has none.
            let targets: Vec<u32> =
                (start..start + batch.len()).map(|i| ids.get(i + 1).copied().unwrap_or(NO_TARGET)).collect();
            self.check_files()?;
            let scores = self.exec.score(batch, &targets)?;
            self.history.extend_from_slice(batch);
            // A read of a file truncated during the step gave zeros: its output must not be used.
            self.check_files()?;
            out.extend(scores);
        }
        out.pop();
        Ok(out)
    }

    /// An embedding of `ids` alone (the cache is cleared first): the final-norm hidden state
    /// (what the output head would read) of its tokens, pooled, `n_embd` values. It comes from
    /// the same forward step as logits, stopped before the head. The states come back to the
    /// host a batch at a time and are pooled there. See
    /// [`embed_normalized`](Self::embed_normalized) for unit length.
    pub fn embed(&mut self, ids: &[u32], pooling: Pooling) -> Result<Vec<f32>> {
        self.clear();
        crate::generate::prompt::check(self, ids)?;
        let e = self.model.config().n_embd as usize;
        let mut pooled = vec![0f64; e];
        let n_batch = self.n_batch();
        for (b, batch) in ids.chunks(n_batch).enumerate() {
            self.check_files()?;
            let rows = self.exec.final_hidden(batch)?;
            self.history.extend_from_slice(batch);
            self.check_files()?;
            let row = |i: usize| &rows[i * e..(i + 1) * e];
            match pooling {
                Pooling::Mean => {
                    for r in rows.chunks_exact(e) {
                        pooled.iter_mut().zip(r).for_each(|(p, &x)| *p += x as f64);
                    }
                }
                Pooling::Cls if b == 0 => pooled.iter_mut().zip(row(0)).for_each(|(p, &x)| *p = x as f64),
                Pooling::Cls => {}
                Pooling::Last => {
                    pooled.iter_mut().zip(row(batch.len() - 1)).for_each(|(p, &x)| *p = x as f64)
                }
            }
        }
        if pooling == Pooling::Mean {
            pooled.iter_mut().for_each(|p| *p /= ids.len() as f64);
        }
        let out: Vec<f32> = pooled.into_iter().map(|p| p as f32).collect();
        if let Some(position) = out.iter().position(|x| !x.is_finite()) {
            let _ = position;
            // The last position's state is in every pooling's reach; name it.
            return Err(Error::NonFiniteLogits { what: "NaN", position: ids.len() as u64 - 1 });
        }
        Ok(out)
    }

    /// [`embed`](Self::embed), scaled to unit Euclidean length ([`l2_normalize`](crate::l2_normalize)),
    /// so that the dot product of two embeddings is their cosine similarity.
    pub fn embed_normalized(&mut self, ids: &[u32], pooling: Pooling) -> Result<Vec<f32>> {
        let mut v = self.embed(ids, pooling)?;
        l2_normalize(&mut v);
        Ok(v)
    }
}

/// A perplexity measured the way llama.cpp's `llama-perplexity` measures it
/// ([`Session::perplexity`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Perplexity {
    /// `exp(mean NLL)` over every scored token.
    pub ppl: f64,
    /// Its standard error as llama-perplexity prints it after `+/-`: the standard error of the
    /// mean NLL, times the perplexity.
    pub ppl_stderr: f64,
    /// The running perplexity after each chunk (llama-perplexity's `[1]…,[2]…` line).
    pub chunk_ppl: Vec<f64>,
    /// Tokens per chunk (the context of the measurement).
    pub n_ctx: usize,
    /// Tokens scored: `n_ctx - 1 - n_ctx / 2` per chunk.
    pub n_scored: usize,
}

impl Session {
    /// The perplexity of `tokens` (a whole text, tokenized with BOS as [`Model::tokenize`](crate::Model::tokenize)
    /// does) by llama-perplexity's method: the text is cut into non-overlapping chunks of
    /// `n_ctx` tokens (at most `max_chunks` of them), each evaluated from an empty cache with
    /// its first token replaced by BOS (for models that add one); the first half of each chunk
    /// is context only, and each later token is scored ([`score`](Self::score)). The result
    /// is `exp` of the mean negative log-likelihood over all scored tokens.
    ///
    /// The text must hold at least two chunks' worth of tokens, as llama-perplexity requires;
    /// `n_ctx` must be at least 2 and fit the session's context.
    pub fn perplexity(
        &mut self,
        tokens: &[u32],
        n_ctx: usize,
        max_chunks: Option<usize>,
    ) -> Result<Perplexity> {
        if n_ctx < 2 {
            return Err(Error::InvalidOption {
                option: "n_ctx",
                message: format!("{n_ctx}: a chunk needs at least 2 tokens"),
            });
        }
        if n_ctx > self.n_ctx() {
            return Err(Error::ContextOverflow { needed: n_ctx, n_ctx: self.n_ctx() });
        }
        if tokens.len() < 2 * n_ctx {
            return Err(Error::InvalidOption {
                option: "n_ctx",
                message: format!(
                    "the text has {} tokens; chunks of {n_ctx} need at least {}",
                    tokens.len(),
                    2 * n_ctx
                ),
            });
        }
        let n_chunks = (tokens.len() / n_ctx).min(max_chunks.unwrap_or(usize::MAX));
        if n_chunks == 0 {
            return Err(Error::InvalidOption { option: "max_chunks", message: "0: nothing to score".into() });
        }
        let tok = self.model.tokenizer();
        let bos = if tok.add_bos() { tok.bos() } else { None };
        let first = n_ctx / 2;
        let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
        let mut chunk_ppl = Vec::with_capacity(n_chunks);
        for c in 0..n_chunks {
            let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
            if let Some(b) = bos {
                chunk[0] = b;
            }
            self.clear();
            // Element i scores chunk[i + 1]: from `first` on, the second half's tokens after
            // the first of them.
            let lp = self.score(&chunk)?;
            for &x in &lp[first..] {
                let v = -(x as f64);
                nll += v;
                nll2 += v * v;
            }
            count += lp.len() - first;
            chunk_ppl.push((nll / count as f64).exp());
        }
        let mean = nll / count as f64;
        let ppl = mean.exp();
        let var = nll2 / count as f64 - mean * mean;
        let stderr = if var > 0.0 && count > 1 { (var / (count - 1) as f64).sqrt() } else { 0.0 };
        Ok(Perplexity { ppl, ppl_stderr: stderr * ppl, chunk_ppl, n_ctx, n_scored: count })
    }
}
