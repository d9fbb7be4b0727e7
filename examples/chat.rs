//! A chat driven from a frame loop, as a game's dialogue system would run it.
//!
//! `cargo run --release --example chat -- MODEL.gguf`
//!
//! Type a line and press Enter. The reply is advanced by `ChatTurn::poll_next` once per
//! "frame" (a 16 ms tick that would draw the scene), so the loop never waits for the GPU.
//! `/retry` discards the last exchange and asks again; `/undo` forgets it; `/quit` leaves.
use std::io::{BufRead, Write};
use std::task::Poll;
use std::time::Duration;

use anyhow::Context;
use wllm::{Chat, ChatOptions, GenerateOptions, Model, SessionOptions};

const FRAME: Duration = Duration::from_millis(16);

fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).context("usage: chat MODEL")?;
    let model = Model::load(path)?;
    let session = model.session(&SessionOptions::default())?;
    let options = ChatOptions { system: Some("You are a friendly innkeeper.".into()), ..Default::default() };
    let mut chat = Chat::new(session, options)?;
    let mut last_user = None;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let user = match line.trim() {
            "/quit" => break,
            "/undo" => {
                // The reply, then the message it answered.
                chat.pop()?;
                chat.pop()?;
                continue;
            }
            "/retry" => {
                chat.pop()?;
                chat.pop()?;
                match last_user.clone() {
                    Some(text) => text,
                    None => continue,
                }
            }
            text => text.to_string(),
        };
        let opts = GenerateOptions { max_tokens: 200, ..Default::default() };
        chat.start(&user, opts)?;
        let frames = run_turn(&mut chat)?;
        let stats = chat.turn().map(|t| t.stats().clone()).unwrap_or_default();
        chat.commit();
        eprintln!("\n[{frames} frames, {:.1} tokens/s]", stats.generation_tps());
        last_user = Some(user);
    }
    Ok(())
}

/// Polls the open turn once per frame until the reply ends; returns the frames it took.
fn run_turn(chat: &mut Chat) -> anyhow::Result<u32> {
    let mut frames = 0;
    while let Some(turn) = chat.turn_mut() {
        frames += 1;
        match turn.poll_next() {
            Poll::Ready(Some(chunk)) => {
                print!("{}", chunk?.text);
                std::io::stdout().flush()?;
            }
            Poll::Ready(None) => break,
            // The GPU is still working: draw the frame and come back.
            Poll::Pending => std::thread::sleep(FRAME),
        }
    }
    Ok(frames)
}
