//! Writes a GGUF file with a released model's shapes and synthetic weights, for speed and
//! memory measurements of models that cannot be downloaded here (their text is noise).
//!
//! `synthetic_gguf PRESET OUT.gguf [--sparse] [--seed N] [--type T]`: PRESET is one of
//! `wllm::loaders::synthetic::SyntheticModel::PRESETS` (`gpt-oss-20b`, `gpt-oss-120b`,
//! `qwen35-9b`, `mistral-7b`, `llama2-7b`); `--type` writes the preset's Q4_K matrices in
//! another type (`iq2_xxs`, `q8_0`, …);
//! `--sparse` writes zeros as holes (no disk; plans and load paths only), otherwise seeded
//! random blocks with small finite scales.

use wllm::loaders::GgmlType;
use wllm::loaders::synthetic::{Fill, SyntheticModel};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        eprintln!(
            "usage: synthetic_gguf PRESET OUT.gguf [--sparse] [--seed N] [--type T]; presets: {}",
            SyntheticModel::PRESETS.join(", ")
        );
        std::process::exit(2)
    };
    let (Some(preset), Some(out)) = (args.first(), args.get(1)) else { usage() };
    let Some(mut model) = SyntheticModel::preset(preset) else { usage() };
    if let Some(i) = args.iter().position(|a| a == "--type") {
        let ty = args.get(i + 1).and_then(|t| GgmlType::from_name(t));
        match ty.and_then(|ty| model.with_matrix_type(ty)) {
            Some(m) => model = m,
            None => {
                eprintln!("--type: not a type name, or the preset's rows are not whole blocks of it");
                std::process::exit(2)
            }
        }
    }
    let seed = match args.iter().position(|a| a == "--seed") {
        Some(i) => args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or_else(|| usage()),
        None => 1,
    };
    let fill = if args.iter().any(|a| a == "--sparse") { Fill::Zeros } else { Fill::Random { seed } };
    let t0 = std::time::Instant::now();
    match model.write(out, fill) {
        Ok(n) => eprintln!(
            "{out}: {preset}, {:.2} GiB ({fill:?}) in {:.1} s",
            n as f64 / (1u64 << 30) as f64,
            t0.elapsed().as_secs_f64()
        ),
        Err(e) => {
            eprintln!("{out}: {e}");
            std::process::exit(1)
        }
    }
}
