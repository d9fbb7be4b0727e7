//! One request on the batcher, seen from async code: its events arrive on a channel, and
//! dropping the job (the client went away, so axum dropped the handler or the response body)
//! cancels it, which frees its sequence before the batcher's next step.

use tokio::sync::mpsc;
use wllm::CancelToken;
use wllm::batch::{BatchRequest, Batcher, Event};

use super::errors::ApiError;

pub struct Job {
    pub events: mpsc::UnboundedReceiver<Event>,
    _cancel: CancelOnDrop,
}

struct CancelOnDrop(CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Queues `request`; refusals (queue full, prompt too long, ...) come back at once as the
/// HTTP error they map to. `fields` names the fields the prompt and the constraint came from.
pub fn submit(batcher: &Batcher, mut request: BatchRequest, fields: [&str; 2]) -> Result<Job, ApiError> {
    let cancel = CancelToken::new();
    request.cancel = Some(cancel.clone());
    let (tx, events) = mpsc::unbounded_channel();
    // Runs on the batcher's thread: an unbounded send never blocks, and a closed receiver
    // (the job was dropped) tells the batcher to stop.
    batcher
        .submit(request, move |ev| tx.send(ev).is_ok())
        .map_err(|e| ApiError::from_submit(e, fields[0], fields[1]))?;
    Ok(Job { events, _cancel: CancelOnDrop(cancel) })
}
