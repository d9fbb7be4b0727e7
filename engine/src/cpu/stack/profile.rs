//! Optional wall-clock time per op kind, for finding where a step goes.

use std::time::{Duration, Instant};

/// Accumulated time per op kind since profiling was enabled.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    pub embed: Duration,
    pub norms: Duration,
    pub qkv: Duration,
    pub rope: Duration,
    pub attention: Duration,
    pub attn_out: Duration,
    pub ffn_in: Duration,
    pub glu: Duration,
    pub ffn_out: Duration,
    pub head: Duration,
}

impl Profile {
    pub fn total(&self) -> Duration {
        self.embed
            + self.norms
            + self.qkv
            + self.rope
            + self.attention
            + self.attn_out
            + self.ffn_in
            + self.glu
            + self.ffn_out
            + self.head
    }
}

/// Adds the time since the last mark to a field when profiling is on.
pub(crate) struct Clock {
    on: bool,
    last: Instant,
}

impl Clock {
    pub fn new(on: bool) -> Self {
        Clock { on, last: Instant::now() }
    }
    pub fn mark(&mut self, field: &mut Duration) {
        if self.on {
            let now = Instant::now();
            *field += now - self.last;
            self.last = now;
        }
    }
}
