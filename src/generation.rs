//! Reading one generation: tokens from the tap become text deltas, stop strings and limits
//! end it, and the reason it ended is ours to report.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokenizers::Tokenizer;

use crate::failure::{Failure, Outcome};
use crate::params::GenerationParams;
use crate::request::{TapEvent, TokenTap};
use crate::text_stream::{Decode, IncrementalDecoder, Matched, StopMatcher};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-generation token.
    Stop,
    /// `max_tokens` was reached, or the context window filled.
    Length,
    /// A stop string appeared; the text ends before it.
    StopSequence,
    /// The caller stopped reading.
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::StopSequence => "stop_sequence",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Figures for a finished generation.
#[derive(Clone, Debug)]
pub struct Finished {
    pub reason: FinishReason,
    /// The generated token ids (end-of-generation tokens excluded; a stop string may end the
    /// text inside the last of them).
    pub token_ids: Vec<u32>,
    pub tokens_generated: usize,
    pub prompt_tokens: usize,
    /// Seconds from submission to the first token (queueing and prompt processing).
    pub prompt_seconds: f64,
    /// Seconds from the first token to the end.
    pub decode_seconds: f64,
    pub total_seconds: f64,
    /// Each generated token's log-probability (and the most likely alternatives), when the
    /// request asked for them.
    pub token_logprobs: Option<Vec<crate::request::TokenLogprob>>,
}

/// One step of reading.
#[derive(Debug)]
pub enum Step {
    /// Nothing new within the timeout.
    Pending,
    /// New text.
    Text(String),
    /// The end: the last text (possibly empty) and the figures.
    Done(String, Finished),
}

struct TokenizerDecode<'a>(&'a Tokenizer);

impl Decode for TokenizerDecode<'_> {
    fn decode(&self, ids: &[u32]) -> String {
        self.0.decode(ids, false).unwrap_or_default()
    }
}

pub struct Generation {
    events: Receiver<TapEvent>,
    tap: Arc<TokenTap>,
    tokenizer: Arc<Tokenizer>,
    eog_ids: Vec<u32>,
    decoder: IncrementalDecoder,
    matcher: StopMatcher,
    max_tokens: usize,
    generated: Vec<u32>,
    prompt_tokens: usize,
    started: Instant,
    done: bool,
    /// Tokens the engine sampled while we were reading, end-of-generation tokens included.
    sampled_before_end: usize,
    sampled_after_end: usize,
}

impl Generation {
    pub fn new(
        events: Receiver<TapEvent>,
        tap: Arc<TokenTap>,
        tokenizer: Arc<Tokenizer>,
        eog_ids: Vec<u32>,
        prompt_ids: &[u32],
        params: GenerationParams,
    ) -> Self {
        Self {
            events,
            tap,
            tokenizer,
            eog_ids,
            decoder: IncrementalDecoder::new(prompt_ids),
            matcher: StopMatcher::new(params.stop),
            max_tokens: params.max_tokens,
            generated: Vec::new(),
            prompt_tokens: prompt_ids.len(),
            started: Instant::now(),
            done: false,
            sampled_before_end: 0,
            sampled_after_end: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Waits up to `timeout` for the next piece of text or the end.
    pub fn next_step(&mut self, timeout: Duration) -> Outcome<Step> {
        if self.done {
            return Err(Failure::invalid("this generation has already finished"));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let event = match self.events.recv_timeout(wait) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout) => return Ok(Step::Pending),
                Err(RecvTimeoutError::Disconnected) => {
                    self.done = true;
                    return Err(Failure::generation(
                        "the engine stopped without finishing the request",
                    ));
                }
            };
            if matches!(event, TapEvent::Token(_)) {
                self.sampled_before_end += 1;
            }
            match event {
                TapEvent::Token(t) if self.eog_ids.contains(&t) => {
                    return Ok(self.finish(FinishReason::Stop));
                }
                TapEvent::Token(t) => {
                    self.generated.push(t);
                    let piece = self.decoder.push(t, &TokenizerDecode(&self.tokenizer));
                    match self.matcher.push(&piece) {
                        Matched::Stop(text) => {
                            return Ok(self.finish_with(FinishReason::StopSequence, text));
                        }
                        Matched::Text(text) if self.generated.len() >= self.max_tokens => {
                            return Ok(self.finish_with(FinishReason::Length, text));
                        }
                        Matched::Text(text) if !text.is_empty() => return Ok(Step::Text(text)),
                        Matched::Text(_) => {}
                    }
                }
                TapEvent::EngineDone { reason } => {
                    // The engine ended the sequence before we did: the context window filled up.
                    let reason = if reason == "length" {
                        FinishReason::Length
                    } else {
                        FinishReason::Stop
                    };
                    return Ok(self.finish(reason));
                }
                TapEvent::EngineFailed(failure) => {
                    self.done = true;
                    self.tap.request_stop();
                    return Err(failure);
                }
            }
        }
    }

    /// Ends normally: releases text held back for an unfinished character or stop string.
    fn finish(&mut self, reason: FinishReason) -> Step {
        let tail = self.decoder.finish(&TokenizerDecode(&self.tokenizer));
        let text = match self.matcher.push(&tail) {
            Matched::Stop(text) => return self.finish_with(FinishReason::StopSequence, text),
            Matched::Text(text) => text + &self.matcher.flush(),
        };
        self.finish_with(reason, text)
    }

    fn finish_with(&mut self, reason: FinishReason, text: String) -> Step {
        self.done = true;
        self.tap.request_stop();
        Step::Done(text, self.figures(reason))
    }

    /// Stops the generation; the engine frees the sequence at its next step.
    pub fn cancel(&mut self) -> Option<Finished> {
        self.tap.request_stop();
        if self.done {
            return None;
        }
        self.done = true;
        Some(self.figures(FinishReason::Cancelled))
    }

    fn figures(&self, reason: FinishReason) -> Finished {
        let now = Instant::now();
        let first = self.tap.first_token_at().unwrap_or(now);
        Finished {
            reason,
            token_ids: self.generated.clone(),
            tokens_generated: self.generated.len(),
            // A multimodal prompt's length is known once the engine has expanded its images.
            prompt_tokens: self.tap.prompt_len().unwrap_or(self.prompt_tokens),
            prompt_seconds: first.saturating_duration_since(self.started).as_secs_f64(),
            decode_seconds: now.saturating_duration_since(first).as_secs_f64(),
            total_seconds: now.saturating_duration_since(self.started).as_secs_f64(),
            token_logprobs: self.tap.logprobs(self.generated.len()),
        }
    }
}

impl Generation {
    /// After the end, waits up to `timeout` for the engine to release the sequence and returns
    /// how many tokens it sampled in total for this request (the forced stop token included).
    /// `None` if the engine is still running it. Shows that a cancelled request really stopped.
    pub fn wait_engine_release(&mut self, timeout: Duration) -> Option<usize> {
        if !self.done {
            return None;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(wait) {
                Ok(TapEvent::Token(_)) => self.sampled_after_end += 1,
                Ok(TapEvent::EngineDone { .. }) | Ok(TapEvent::EngineFailed(_)) => {
                    return Some(self.sampled_total())
                }
                Err(RecvTimeoutError::Disconnected) => return Some(self.sampled_total()),
                Err(RecvTimeoutError::Timeout) => return None,
            }
        }
    }

    fn sampled_total(&self) -> usize {
        self.sampled_before_end + self.sampled_after_end
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        self.tap.request_stop();
    }
}
