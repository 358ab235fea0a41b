//! Our request type for the engine: `PcaiRequest` implements mistralrs's `RequestLike`.
//!
//! Every request reaches the engine as prompt token ids that we produced, with the engine's
//! own sampler reduced to an argmax over logits that our `TokenTap` has already decided. The
//! engine still applies the penalties (they need the token history it keeps) and runs the
//! model; choosing, counting, decoding and stopping are ours, so they behave the same for
//! every model and every batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use indexmap::IndexMap;
use mistralrs::{
    Constraint, CustomLogitsProcessor, MessageContent, RequestLike, RequestMessage, SamplingParams,
    StopTokens, Tensor, Tool, ToolChoice, WebSearchOptions,
};

use crate::params::GenerationParams;
use crate::sampling::{pick, PickSettings};

/// What the engine side of a generation reports to the reader.
#[derive(Debug)]
pub enum TapEvent {
    /// The token chosen for the next position.
    Token(u32),
    /// The engine finished the sequence; `reason` is its own finish reason.
    EngineDone { reason: String },
    /// The engine failed; the message is the engine's.
    /// The request failed in the engine (`InvalidRequest`, `Generation`) or the model was
    /// unloaded under it (`ModelClosed`); the failure as the user sees it.
    EngineFailed(crate::failure::Failure),
}

/// The logits processor that picks every token of one request and reports it.
pub struct TokenTap {
    settings: PickSettings,
    /// Known up front for token prompts; for multimodal prompts (expanded by the engine's
    /// processor) it is the context length at the first step.
    prompt_len: OnceLock<usize>,
    /// Forced when the reader wants the sequence to end (stop string, cancel): the engine
    /// treats it as end-of-sequence and frees the sequence after one more step at most.
    stop_token: u32,
    stop_requested: AtomicBool,
    first_token_at: OnceLock<Instant>,
    events: Sender<TapEvent>,
    logit_bias: Vec<(u32, f32)>,
    /// Log-probabilities of the chosen tokens (and the most likely alternatives), when asked for.
    logprobs: Option<Mutex<Vec<TokenLogprob>>>,
    top_logprobs: usize,
    constraint: Option<crate::output_constraint::OutputConstraint>,
}

/// A chosen token's log-probability, and the most likely tokens at its step with theirs.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub logprob: f32,
    /// Most likely first; as many as the request asked for (`top_logprobs`).
    pub top: Vec<(u32, f32)>,
}

impl TokenTap {
    pub fn new(
        params: &GenerationParams,
        seed: u64,
        prompt_len: Option<usize>,
        stop_token: u32,
        events: Sender<TapEvent>,
    ) -> Self {
        let known = OnceLock::new();
        if let Some(n) = prompt_len {
            let _ = known.set(n);
        }
        Self {
            settings: PickSettings {
                temperature: params.temperature,
                top_k: params.top_k,
                top_p: params.top_p,
                min_p: params.min_p,
                seed,
            },
            prompt_len: known,
            stop_token,
            stop_requested: AtomicBool::new(false),
            first_token_at: OnceLock::new(),
            events,
            logit_bias: params.logit_bias.clone(),
            logprobs: (params.logprobs || params.top_logprobs > 0).then(|| Mutex::new(Vec::new())),
            top_logprobs: params.top_logprobs,
            constraint: params.constraint.clone(),
        }
    }

    /// Asks the engine to end this sequence at its next step.
    pub fn request_stop(&self) {
        self.stop_requested.store(true, Ordering::Release);
    }

    pub fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::Acquire)
    }

    /// The log-probabilities of the first `n` chosen tokens, when they were asked for.
    pub fn logprobs(&self, n: usize) -> Option<Vec<TokenLogprob>> {
        let recorded = self.logprobs.as_ref()?;
        let recorded = recorded.lock().unwrap_or_else(PoisonError::into_inner);
        Some(recorded.iter().take(n).cloned().collect())
    }

    /// The grammar the answer must follow, for the engine.
    pub fn constraint(&self) -> Constraint {
        self.constraint
            .as_ref()
            .map_or(Constraint::None, |c| c.to_engine())
    }

    /// The prompt's length in tokens, once known.
    pub fn prompt_len(&self) -> Option<usize> {
        self.prompt_len.get().copied()
    }

    /// When the first token was chosen, i.e. when prompt processing ended.
    pub fn first_token_at(&self) -> Option<Instant> {
        self.first_token_at.get().copied()
    }

    fn choose(&self, logits: &[f32], context: &[u32]) -> u32 {
        if self.stop_requested.load(Ordering::Acquire) {
            return self.stop_token;
        }
        let prompt_len = *self.prompt_len.get_or_init(|| context.len());
        let step = context.len().saturating_sub(prompt_len);
        pick(logits, &self.settings, step).unwrap_or(self.stop_token)
    }
}

impl CustomLogitsProcessor for TokenTap {
    fn apply(&self, logits: &Tensor, context: &[u32]) -> mistralrs::Result<Tensor> {
        let mut values: Vec<f32> = logits.to_dtype(mistralrs::DType::F32)?.to_vec1()?;
        let n = values.len();
        for &(id, bias) in &self.logit_bias {
            if let Some(v) = values.get_mut(id as usize) {
                *v += bias;
            }
        }
        let mut token = self.choose(&values, context);
        if token as usize >= n {
            token = self.stop_token.min(n as u32 - 1);
        }
        if let Some(recorded) = &self.logprobs {
            let entry = token_logprob(&values, token as usize, self.top_logprobs);
            recorded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(entry);
        }
        let _ = self.first_token_at.set(Instant::now());
        // A reader that went away has nothing to receive; the sequence ends at the next step.
        if self.events.send(TapEvent::Token(token)).is_err() {
            self.request_stop();
        }
        values.fill(f32::NEG_INFINITY);
        values[token as usize] = 0.0;
        Tensor::from_vec(values, n, logits.device())
    }
}

/// What the model reads: token ids we made, or chat messages with images that the engine's
/// processor turns into tokens (it expands each image into the model's image tokens).
pub enum EnginePrompt {
    Tokens(Vec<u32>),
    Multimodal {
        messages: Vec<IndexMap<String, MessageContent>>,
        images: Vec<image::DynamicImage>,
        audios: Vec<mistralrs::core::AudioInput>,
    },
}

/// `log(softmax(logits))[index]`, computed stably.
#[cfg(test)]
fn log_softmax_at(logits: &[f32], index: usize) -> f32 {
    token_logprob(logits, index, 0).logprob
}

/// The log-probability of `index` and of the `top` most likely tokens (ties: lower id first).
fn token_logprob(logits: &[f32], index: usize, top: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&v| f64::from(v - max).exp()).sum();
    let log_z = f64::from(max) + sum.ln();
    let logprob = |v: f32| (f64::from(v) - log_z) as f32;
    let mut best: Vec<(u32, f32)> = Vec::new();
    if top > 0 {
        let mut finite: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| (i as u32, v))
            .collect();
        let by_value = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if finite.len() > top {
            finite.select_nth_unstable_by(top - 1, by_value);
            finite.truncate(top);
        }
        finite.sort_by(by_value);
        best = finite.into_iter().map(|(i, v)| (i, logprob(v))).collect();
    }
    TokenLogprob {
        logprob: logprob(logits[index]),
        top: best,
    }
}

/// A text-generation request in the form the engine takes (`RequestLike`).
pub struct PcaiRequest {
    prompt: EnginePrompt,
    sampling: SamplingParams,
    tap: Arc<TokenTap>,
}

impl PcaiRequest {
    /// `stop_ids` are the model's end-of-generation ids; the engine ends the sequence on them.
    pub fn new(
        prompt: EnginePrompt,
        params: &GenerationParams,
        stop_ids: Vec<u32>,
        tap: Arc<TokenTap>,
    ) -> Self {
        Self {
            prompt,
            sampling: engine_sampling(params, stop_ids),
            tap,
        }
    }
}

/// The engine-side sampling settings: penalties and limits only; token choice is the tap's.
pub fn engine_sampling(params: &GenerationParams, stop_ids: Vec<u32>) -> SamplingParams {
    let mut s = SamplingParams::neutral();
    // The tap has already chosen: it leaves one finite logit. Temperature 0 makes the engine
    // take that argmax in one pass; with no temperature it would sample at 1.0 (a softmax and a
    // weighted draw over the whole vocabulary for every sequence at every step).
    s.temperature = Some(0.0);
    s.top_k = Some(1);
    s.max_len = Some(params.max_tokens);
    // Only penalties that act: with any of them set, the engine counts the context into a
    // vocabulary-sized table and rewrites every logit, for every sequence at every step.
    s.repetition_penalty = (params.repetition_penalty != 1.0).then_some(params.repetition_penalty);
    s.presence_penalty = (params.presence_penalty != 0.0).then_some(params.presence_penalty);
    s.frequency_penalty = (params.frequency_penalty != 0.0).then_some(params.frequency_penalty);
    s.stop_toks = (!stop_ids.is_empty()).then_some(StopTokens::Ids(stop_ids));
    s
}

impl RequestLike for PcaiRequest {
    fn messages_ref(&self) -> &[IndexMap<String, MessageContent>] {
        match &self.prompt {
            EnginePrompt::Tokens(_) => &[],
            EnginePrompt::Multimodal { messages, .. } => messages,
        }
    }
    fn images_ref(&self) -> &[image::DynamicImage] {
        match &self.prompt {
            EnginePrompt::Tokens(_) => &[],
            EnginePrompt::Multimodal { images, .. } => images,
        }
    }
    fn take_messages(&mut self) -> RequestMessage {
        match std::mem::replace(&mut self.prompt, EnginePrompt::Tokens(Vec::new())) {
            EnginePrompt::Tokens(ids) => RequestMessage::CompletionTokens(ids),
            EnginePrompt::Multimodal {
                messages,
                images,
                audios,
            } => RequestMessage::MultimodalChat {
                images,
                audios,
                videos: Vec::new(),
                messages,
                enable_thinking: None,
                reasoning_effort: None,
            },
        }
    }
    fn take_logits_processors(&mut self) -> Option<Vec<Arc<dyn CustomLogitsProcessor>>> {
        Some(vec![self.tap.clone() as Arc<dyn CustomLogitsProcessor>])
    }
    fn take_adapters(&mut self) -> Option<Vec<String>> {
        None
    }
    fn return_logprobs(&self) -> bool {
        false
    }
    fn enable_search(&self) -> Option<bool> {
        None
    }
    fn take_constraint(&mut self) -> Constraint {
        self.tap.constraint()
    }
    fn take_tools(&mut self) -> Option<(Vec<Tool>, ToolChoice)> {
        None
    }
    fn take_sampling_params(&mut self) -> SamplingParams {
        self.sampling.clone()
    }
    fn take_web_search_options(&mut self) -> Option<WebSearchOptions> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn log_softmax_at_is_the_log_of_the_probability() {
        let logits = [0.0f32, 3f32.ln(), f32::NEG_INFINITY];
        assert!((log_softmax_at(&logits, 1) - 0.75f32.ln()).abs() < 1e-6);
        assert!((log_softmax_at(&logits, 0) - 0.25f32.ln()).abs() < 1e-6);
        assert_eq!(log_softmax_at(&logits, 2), f32::NEG_INFINITY);
    }

    fn tap(
        params: &GenerationParams,
        prompt_len: usize,
    ) -> (Arc<TokenTap>, std::sync::mpsc::Receiver<TapEvent>) {
        let (tx, rx) = channel();
        (
            Arc::new(TokenTap::new(params, 1, Some(prompt_len), 1, tx)),
            rx,
        )
    }

    #[test]
    fn request_carries_tokens_sampling_and_the_tap() {
        let params = GenerationParams {
            max_tokens: 7,
            repetition_penalty: 1.3,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..Default::default()
        };
        let (t, _rx) = tap(&params, 3);
        let mut req = PcaiRequest::new(
            EnginePrompt::Tokens(vec![2, 10, 11]),
            &params,
            vec![1, 106],
            t,
        );
        match req.take_messages() {
            RequestMessage::CompletionTokens(ids) => assert_eq!(ids, vec![2, 10, 11]),
            other => panic!("unexpected {other:?}"),
        }
        let s = req.take_sampling_params();
        assert_eq!(s.max_len, Some(7));
        assert_eq!(s.repetition_penalty, Some(1.3));
        assert_eq!(s.presence_penalty, Some(0.5));
        assert_eq!(s.frequency_penalty, Some(0.25));
        assert!(s.temperature == Some(0.0) && s.top_k == Some(1) && s.top_p.is_none());
        assert!(matches!(s.stop_toks, Some(StopTokens::Ids(ref ids)) if ids == &vec![1, 106]));
        assert_eq!(req.take_logits_processors().map(|p| p.len()), Some(1));
    }

    #[test]
    fn neutral_penalties_are_left_to_the_engine_unset() {
        let s = engine_sampling(&GenerationParams::default(), vec![]);
        assert_eq!(
            (
                s.repetition_penalty,
                s.presence_penalty,
                s.frequency_penalty
            ),
            (None, None, None)
        );
    }

    #[test]
    fn tap_picks_reports_and_masks() {
        let params = GenerationParams {
            temperature: 0.0,
            ..Default::default()
        };
        let (t, rx) = tap(&params, 2);
        let logits = Tensor::new(&[0.1f32, 0.2, 3.0, 0.5], &mistralrs::Device::Cpu).unwrap();
        let out: Vec<f32> = t.apply(&logits, &[5, 6]).unwrap().to_vec1().unwrap();
        assert_eq!(
            out,
            vec![f32::NEG_INFINITY, f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY]
        );
        assert!(matches!(rx.try_recv(), Ok(TapEvent::Token(2))));
        assert!(t.first_token_at().is_some());
    }

    #[test]
    fn top_logprobs_are_the_most_likely_tokens_in_order() {
        let logits = [1.0f32, 3.0, f32::NEG_INFINITY, 2.0, 3.0];
        let got = token_logprob(&logits, 3, 3);
        assert_eq!(
            got.top.iter().map(|t| t.0).collect::<Vec<_>>(),
            vec![1, 4, 3]
        );
        assert_eq!(got.logprob, got.top[2].1);
        let total: f32 = [1.0f32, 3.0, 2.0, 3.0]
            .iter()
            .map(|&v| (v - 3.0f32).exp())
            .sum();
        assert!((got.top[0].1 - (-total.ln())).abs() < 1e-6);
        // Fewer finite logits than asked: all of them.
        assert_eq!(token_logprob(&logits, 0, 10).top.len(), 4);
    }

    #[test]
    fn logit_bias_moves_the_choice() {
        let params = GenerationParams {
            temperature: 0.0,
            logit_bias: vec![(0, 10.0)],
            ..Default::default()
        };
        let (t, rx) = tap(&params, 1);
        let logits = Tensor::new(&[0.1f32, 0.2, 3.0], &mistralrs::Device::Cpu).unwrap();
        t.apply(&logits, &[5]).unwrap();
        assert!(matches!(rx.try_recv(), Ok(TapEvent::Token(0))));
    }

    #[test]
    fn a_stop_request_forces_the_stop_token() {
        let params = GenerationParams {
            temperature: 0.0,
            ..Default::default()
        };
        let (t, rx) = tap(&params, 1);
        t.request_stop();
        let logits = Tensor::new(&[0.1f32, 0.2, 3.0], &mistralrs::Device::Cpu).unwrap();
        let out: Vec<f32> = t.apply(&logits, &[5]).unwrap().to_vec1().unwrap();
        assert_eq!(out[1], 0.0);
        assert!(matches!(rx.try_recv(), Ok(TapEvent::Token(1))));
    }

    #[test]
    fn a_gone_reader_stops_the_sequence() {
        let params = GenerationParams {
            temperature: 0.0,
            ..Default::default()
        };
        let (t, rx) = tap(&params, 1);
        drop(rx);
        let logits = Tensor::new(&[0.1f32, 5.0, 3.0], &mistralrs::Device::Cpu).unwrap();
        t.apply(&logits, &[5]).unwrap();
        let out: Vec<f32> = t.apply(&logits, &[5, 1]).unwrap().to_vec1().unwrap();
        assert_eq!(out[1], 0.0);
    }
}
