//! `wllm tokenize`: token ids and pieces of a text.

use std::path::PathBuf;

use anyhow::{Context, Result};
use wllm::loaders::{GgufFile, Tokenizer};

#[derive(clap::Args)]
pub struct Args {
    /// A .gguf file, or a directory with tokenizer.json.
    pub model: PathBuf,
    pub text: String,
    /// Turn special-token text such as `<|im_start|>` into its id.
    #[arg(long)]
    pub parse_special: bool,
    /// Do not add BOS/EOS even where the model asks for them.
    #[arg(long)]
    pub no_special: bool,
    /// Print `{"ids":[...]}` as the last line instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let tok = if a.model.is_dir() {
        hf_tokenizer(&a.model)?
    } else {
        let f = GgufFile::open(&a.model)?;
        Tokenizer::from_gguf(&f)
            .with_context(|| format!("building the tokenizer of {}", a.model.display()))?
    };
    let ids = tok.encode(&a.text, !a.no_special, a.parse_special);
    if a.json {
        outln!("{}", serde_json::json!({ "ids": ids }));
        return Ok(());
    }
    for id in &ids {
        let piece = tok.token_to_piece_special(*id);
        outln!("{id:>8} -> {:?}", String::from_utf8_lossy(&piece));
    }
    outln!("{} tokens", ids.len());
    Ok(())
}

#[cfg(feature = "safetensors")]
fn hf_tokenizer(dir: &std::path::Path) -> Result<Tokenizer> {
    let cfg = dir.join("tokenizer_config.json");
    Ok(Tokenizer::from_hf_files(dir.join("tokenizer.json"), cfg.exists().then_some(cfg.as_path()))?)
}

#[cfg(not(feature = "safetensors"))]
fn hf_tokenizer(dir: &std::path::Path) -> Result<Tokenizer> {
    anyhow::bail!("{}: this wllm was built without the `safetensors` feature", dir.display())
}
