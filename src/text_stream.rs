//! Turning a growing list of token ids into text deltas, and cutting the text at stop strings.
//!
//! Both streaming and non-streaming generation run through this one path, so the
//! concatenated deltas always equal the final text.

/// Decodes token ids to text. Implemented by the tokenizer adapter; a closure in tests.
pub trait Decode {
    fn decode(&self, ids: &[u32]) -> String;
}

impl<F: Fn(&[u32]) -> String> Decode for F {
    fn decode(&self, ids: &[u32]) -> String {
        self(ids)
    }
}

/// How many prompt tokens are kept as left context. SentencePiece decoders drop the leading
/// space of the first token they see; decoding every window after a few real tokens keeps
/// those spaces where they belong.
const PROMPT_CONTEXT: usize = 4;

/// Incremental detokenizer (the prefix/read-offset scheme used by HF text-generation-inference).
///
/// A delta is only released once it does not end in U+FFFD, so a character split over several
/// byte tokens is never emitted in halves.
pub struct IncrementalDecoder {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl IncrementalDecoder {
    pub fn new(prompt_ids: &[u32]) -> Self {
        let tail = &prompt_ids[prompt_ids.len().saturating_sub(PROMPT_CONTEXT)..];
        Self {
            ids: tail.to_vec(),
            prefix_offset: 0,
            read_offset: tail.len(),
        }
    }

    /// Adds one token and returns the text it completes (often empty mid-character).
    pub fn push(&mut self, token: u32, decoder: &impl Decode) -> String {
        self.ids.push(token);
        self.take_ready(decoder, false)
    }

    /// Releases whatever is still held back at the end of generation (an incomplete
    /// character comes out as U+FFFD, as a lossy decode would give it).
    pub fn finish(&mut self, decoder: &impl Decode) -> String {
        self.take_ready(decoder, true)
    }

    fn take_ready(&mut self, decoder: &impl Decode, flush: bool) -> String {
        if self.read_offset == self.ids.len() {
            return String::new();
        }
        let prefix = decoder.decode(&self.ids[self.prefix_offset..self.read_offset]);
        let full = decoder.decode(&self.ids[self.prefix_offset..]);
        if !flush && full.ends_with('\u{FFFD}') {
            return String::new();
        }
        let delta = match full.get(prefix.len()..) {
            Some(d) if full.starts_with(&prefix) => d.to_string(),
            // The decoder rewrote earlier text (rare normalisers): emit what is new by chars.
            _ => full.chars().skip(prefix.chars().count()).collect(),
        };
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        delta
    }
}

/// Holds text back until it cannot be the start of a stop string, and finds stop strings
/// that span several tokens.
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text received and not yet released.
    pending: String,
}

/// What the matcher lets through for one piece of text.
#[derive(Debug, PartialEq, Eq)]
pub enum Matched {
    /// Text that is safe to emit; more may follow.
    Text(String),
    /// A stop string was found: emit this text and end the generation.
    Stop(String),
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            pending: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> Matched {
        self.pending.push_str(text);
        if let Some(cut) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            let out = self.pending[..cut].to_string();
            self.pending.clear();
            return Matched::Stop(out);
        }
        let hold = self.longest_partial_stop();
        let safe = self.pending.len() - hold;
        let out = self.pending[..safe].to_string();
        self.pending.drain(..safe);
        Matched::Text(out)
    }

    /// Text still held back when generation ends for another reason.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Length of the longest suffix of `pending` that is a proper prefix of a stop string.
    /// Such a suffix always starts on a character boundary: a stop string starts with one.
    fn longest_partial_stop(&self) -> usize {
        let text = self.pending.as_bytes();
        let mut best = 0;
        for stop in &self.stops {
            let stop = stop.as_bytes();
            let max = (stop.len() - 1).min(text.len());
            for len in (best + 1..=max).rev() {
                if text[text.len() - len..] == stop[..len] {
                    best = len;
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy byte tokenizer: id = byte value, decoded lossily like a byte-fallback vocabulary.
    fn bytes(ids: &[u32]) -> String {
        String::from_utf8_lossy(&ids.iter().map(|&i| i as u8).collect::<Vec<_>>()).into_owned()
    }

    #[test]
    fn multibyte_characters_are_never_split() {
        let text = "añ€😀b";
        let mut dec = IncrementalDecoder::new(&[]);
        let mut out = Vec::new();
        for b in text.bytes() {
            let d = dec.push(b as u32, &bytes);
            assert!(!d.contains('\u{FFFD}'), "broken character in {d:?}");
            out.push(d);
        }
        out.push(dec.finish(&bytes));
        assert_eq!(out.concat(), text);
    }

    #[test]
    fn an_unfinished_character_is_flushed_lossily() {
        let mut dec = IncrementalDecoder::new(&[]);
        assert_eq!(dec.push(0xE2, &bytes), "");
        assert_eq!(dec.finish(&bytes), "\u{FFFD}");
    }

    #[test]
    fn leading_space_survives_a_space_stripping_decoder() {
        // Mimics SentencePiece: '_' is a space, and a leading space is dropped on decode.
        let vocab = ["Hello", "_world", "_again"];
        let sp = |ids: &[u32]| {
            let s: String = ids
                .iter()
                .map(|&i| vocab[i as usize])
                .collect::<String>()
                .replace('_', " ");
            s.strip_prefix(' ').map(str::to_string).unwrap_or(s)
        };
        let mut dec = IncrementalDecoder::new(&[0]);
        assert_eq!(dec.push(1, &sp), " world");
        assert_eq!(dec.push(2, &sp), " again");
    }

    #[test]
    fn stop_string_inside_one_piece() {
        let mut m = StopMatcher::new(vec!["\n\n".into()]);
        assert_eq!(m.push("abc\n\ndef"), Matched::Stop("abc".into()));
    }

    #[test]
    fn stop_string_across_pieces_is_held_then_cut() {
        let mut m = StopMatcher::new(vec!["STOP".into()]);
        assert_eq!(m.push("hello S"), Matched::Text("hello ".into()));
        assert_eq!(m.push("T"), Matched::Text(String::new()));
        assert_eq!(m.push("OP and more"), Matched::Stop(String::new()));
    }

    #[test]
    fn a_false_start_is_released() {
        let mut m = StopMatcher::new(vec!["STOP".into()]);
        assert_eq!(m.push("ST"), Matched::Text(String::new()));
        assert_eq!(m.push("AR"), Matched::Text("STAR".into()));
        assert_eq!(m.flush(), "");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let mut m = StopMatcher::new(vec!["zz".into(), "b".into()]);
        assert_eq!(m.push("a b zz"), Matched::Stop("a ".into()));
    }

    #[test]
    fn multibyte_stop_strings() {
        let mut m = StopMatcher::new(vec!["€€".into()]);
        assert_eq!(m.push("x€"), Matched::Text("x".into()));
        assert_eq!(m.push("€y"), Matched::Stop(String::new()));
    }

    #[test]
    fn without_stops_everything_passes() {
        let mut m = StopMatcher::new(vec![]);
        assert_eq!(m.push("abc"), Matched::Text("abc".into()));
    }
}
