//! The shortest useful program: `cargo run --release --example generate -- MODEL.gguf [PROMPT]`.
fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = wllm::Model::load(args.next().unwrap_or_else(|| "model.gguf".into()))?;
    let prompt = model.tokenize(&args.next().unwrap_or_else(|| "The capital of France is".into()));
    let mut session = model.session(&Default::default())?;
    let opts = wllm::GenerateOptions { max_tokens: 32, ..Default::default() };
    for chunk in session.generate(&prompt, opts)? {
        print!("{}", chunk?.text);
    }
    println!();
    Ok(())
}
