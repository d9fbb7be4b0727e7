/// Watches streamed text for stop strings (`--stop`).
///
/// Text that could still turn out to be the start of a stop string is held back until the next
/// chunk settles it, so the caller never prints part of a stop string. Matching is on the
/// decoded text, so a stop string split across several tokens is still found.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

/// What one [`StopMatcher::push`] settled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StopStep {
    /// Text that is safe to show. When `stop` is set this is everything before the stop string;
    /// the stop string and whatever followed it are cut.
    pub text: String,
    /// Index (into the list given to [`StopMatcher::new`]) of the stop string that ended
    /// generation, if one did.
    pub stop: Option<usize>,
}

impl StopMatcher {
    /// Empty stop strings are ignored: they would match before any text.
    pub fn new<I, S>(stops: I) -> StopMatcher
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let stops = stops.into_iter().map(Into::into).collect();
        StopMatcher { stops, held: String::new(), stopped: false }
    }

    pub fn stops(&self) -> &[String] {
        &self.stops
    }

    /// Whether a stop string has been seen; later pushes return nothing.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Text held back because it may begin a stop string.
    pub fn held(&self) -> &str {
        &self.held
    }

    /// Feeds the next piece of decoded text.
    pub fn push(&mut self, chunk: &str) -> StopStep {
        if self.stopped {
            return StopStep::default();
        }
        self.held.push_str(chunk);
        // The earliest match wins; among matches at one position, the one listed first.
        let hit = self
            .stops
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty())
            .filter_map(|(i, s)| self.held.find(s.as_str()).map(|at| (at, i)))
            .min();
        if let Some((at, index)) = hit {
            self.held.truncate(at);
            self.stopped = true;
            return StopStep { text: std::mem::take(&mut self.held), stop: Some(index) };
        }
        let keep_from = self.partial_match_start();
        let rest = self.held.split_off(keep_from);
        StopStep { text: std::mem::replace(&mut self.held, rest), stop: None }
    }

    /// Ends the stream: whatever was held back was not a stop string after all.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Start of the longest suffix of the held text that is a proper prefix of a stop string.
    fn partial_match_start(&self) -> usize {
        let held = self.held.as_str();
        held.char_indices()
            .map(|(i, _)| i)
            .find(|&i| self.stops.iter().any(|s| s.len() > held.len() - i && s.starts_with(&held[i..])))
            .unwrap_or(held.len())
    }
}
