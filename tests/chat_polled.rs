//! A chat driven from a frame loop: `Chat::start` and `ChatTurn::poll_next` give the blocking
//! chat's tokens, commit and discard end a turn, and seeded, popped or edited history keeps
//! the cache exact.

mod support;

use std::task::Poll;

use wllm::{
    Chat, ChatMessage, ChatOptions, Error, GenerateOptions, Model, SamplerConfig, SessionOptions, TurnInfo,
};

fn tiny() -> Option<Model> {
    Model::load(support::data_dir().join("models/tiny-llama-q8_0.gguf")).ok()
}

/// Greedy, past end-of-generation tokens, so that replies are long enough to compare.
fn greedy() -> GenerateOptions {
    GenerateOptions {
        max_tokens: 10,
        sampling: SamplerConfig::greedy(),
        stop_at_eog: false,
        ..Default::default()
    }
}

fn chat(model: &Model, history: Vec<ChatMessage>) -> Chat {
    // Small batches: the later turns' prompts take several.
    let session = model.session(&SessionOptions { n_ctx: Some(512), n_batch: 16 }).unwrap();
    let options = ChatOptions { system: Some("be brief".into()), ..Default::default() };
    Chat::with_history(session, options, history).unwrap()
}

type Turn = (Vec<u32>, String, TurnInfo);

fn blocking_turn(chat: &mut Chat, text: &str) -> Turn {
    let mut reply = chat.send(text, greedy()).unwrap();
    let ids: Vec<u32> = reply.by_ref().filter_map(|c| c.unwrap().token).collect();
    (ids, reply.text().to_string(), reply.info())
}

/// Polls the turn to its end, as a frame loop would, and commits it.
fn polled_turn(chat: &mut Chat, text: &str) -> Turn {
    chat.start(text, greedy()).unwrap();
    let mut ids = Vec::new();
    loop {
        match chat.turn_mut().expect("open").poll_next() {
            Poll::Pending => std::thread::yield_now(),
            Poll::Ready(Some(chunk)) => ids.extend(chunk.unwrap().token),
            Poll::Ready(None) => break,
        }
    }
    let turn = chat.turn().unwrap();
    assert!(turn.is_finished());
    let (text, info) = (turn.text().to_string(), turn.info());
    assert_eq!(turn.ids(), ids);
    assert_eq!(chat.commit().map(|m| m.content.clone()), Some(text.clone()));
    (ids, text, info)
}

const TEXTS: [&str; 3] = ["hello there", "how are you today", "tell me a story about a cat"];

#[test]
fn polled_chat_equals_blocking_chat_token_for_token() {
    let Some(model) = tiny() else { return };
    let (mut blocking, mut polled) = (chat(&model, vec![]), chat(&model, vec![]));
    for (i, text) in TEXTS.into_iter().enumerate() {
        let (b, p) = (blocking_turn(&mut blocking, text), polled_turn(&mut polled, text));
        assert_eq!(b.0.len(), 10, "turn {i}");
        assert_eq!(b, p, "turn {i}");
        if i > 0 {
            assert!(p.2.reused_tokens > 0, "turn {i} reused nothing: {:?}", p.2);
        }
    }
    assert_eq!(blocking.messages(), polled.messages());
    assert_eq!(blocking.session().tokens(), polled.session().tokens());
}

#[test]
fn discard_puts_the_conversation_back_and_an_open_turn_blocks_others() {
    let Some(model) = tiny() else { return };
    let mut c = chat(&model, vec![]);
    polled_turn(&mut c, TEXTS[0]);
    let before = c.messages();
    c.start(TEXTS[1], greedy()).unwrap();
    let _ = c.turn_mut().unwrap().poll_next();
    assert!(matches!(c.start(TEXTS[2], greedy()).err(), Some(Error::ReplyOpen)));
    assert!(matches!(c.send(TEXTS[2], greedy()).err(), Some(Error::ReplyOpen)));
    assert!(matches!(c.pop(), Err(Error::ReplyOpen)));
    assert!(c.discard());
    assert!(!c.discard() && c.commit().is_none(), "no turn open");
    assert_eq!(c.messages(), before);
    // The discarded turn's cache is cut back: the turn again gives what it gives fresh.
    let again = polled_turn(&mut c, TEXTS[1]);
    let mut fresh = chat(&model, vec![]);
    polled_turn(&mut fresh, TEXTS[0]);
    assert_eq!(polled_turn(&mut fresh, TEXTS[1]).0, again.0);

    // The blocking reply can be discarded as well.
    let before = c.messages();
    let mut reply = c.send(TEXTS[2], greedy()).unwrap();
    reply.next();
    reply.discard();
    assert_eq!(c.messages(), before);
}

#[test]
fn seeded_popped_and_edited_history_gives_a_fresh_chats_tokens() {
    let Some(model) = tiny() else { return };
    let mut c = chat(&model, vec![]);
    polled_turn(&mut c, TEXTS[0]);
    polled_turn(&mut c, TEXTS[1]);

    // Seeded from the messages (system first): the next turn as the continued chat's.
    let mut seeded = chat(&model, c.messages());
    assert_eq!(seeded.messages(), c.messages());
    let s = polled_turn(&mut seeded, TEXTS[2]);
    assert_eq!(s.2.reused_tokens, 0, "a fresh session");
    let continued = blocking_turn(&mut c, TEXTS[2]);
    assert_eq!(s.0, continued.0);
    assert!(continued.2.reused_tokens > 0);

    // Popped back to before the second turn, which then answers as it did.
    let popped: Vec<String> = (0..4).map(|_| c.pop().unwrap().unwrap().role).collect();
    assert_eq!(popped, ["assistant", "user", "assistant", "user"]);
    let first = c.history().to_vec();
    assert_eq!(first.len(), 2);

    // Edited: the first reply rewritten. The cache is cut where the text changed, and the
    // turn gives what a chat seeded with the edited history gives.
    c.history_mut().unwrap()[1].content = "I am a cat.".into();
    let edited = c.history().to_vec();
    let e = polled_turn(&mut c, TEXTS[1]);
    assert!(e.2.reused_tokens > 0 && e.2.evaluated_tokens > 0, "{:?}", e.2);
    let mut reference = chat(&model, edited);
    assert_eq!(polled_turn(&mut reference, TEXTS[1]).0, e.0);
}
