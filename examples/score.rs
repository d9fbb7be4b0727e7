//! Per-token log-probabilities and embeddings:
//! `cargo run --release --example score -- MODEL.gguf [TEXT]`.
//!
//! Prints each token with its log-probability given the tokens before it, the text's
//! perplexity, and the cosine similarity of the text's embedding with two others.
use wllm::Pooling;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = wllm::Model::load(args.next().unwrap_or_else(|| "model.gguf".into()))?;
    let text = args.next().unwrap_or_else(|| "The capital of France is Paris.".into());
    let mut session = model.session(&Default::default())?;
    let ids = model.tokenize(&text);
    // Element i is ln p(ids[i + 1] | ids[..=i]); only these floats leave the device.
    let logprobs = session.score(&ids)?;
    for (id, lp) in ids[1..].iter().zip(&logprobs) {
        println!("{lp:>8.3}  {:?}", model.detokenize(&[*id]));
    }
    println!("perplexity {:.2}", wllm::perplexity(&logprobs));
    // Unit-length embeddings, so a dot product is a cosine similarity.
    let mut embed = |t: &str| -> anyhow::Result<Vec<f32>> {
        Ok(session.embed_normalized(&model.tokenize(t), Pooling::Last)?)
    };
    let here = embed(&text)?;
    for other in ["Paris is the capital of France.", "Bananas are rich in potassium."] {
        let cos: f32 = here.iter().zip(embed(other)?).map(|(a, b)| a * b).sum();
        println!("cosine {cos:.3}  {other:?}");
    }
    Ok(())
}
