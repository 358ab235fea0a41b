//! Sampling parameters as the user gave them, and their validation.
//!
//! Validation lives here, in one place, so that the Python layer and `cargo test` see the
//! same rules and the same messages.

/// Everything a caller can ask of one generation.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationParams {
    pub max_tokens: usize,
    /// `0.0` means greedy decoding.
    pub temperature: f64,
    pub top_p: f64,
    /// `0` disables top-k.
    pub top_k: usize,
    /// `0.0` disables min-p.
    pub min_p: f64,
    pub stop: Vec<String>,
    /// `None` draws a fresh seed for every request.
    pub seed: Option<u64>,
    /// `1.0` disables it.
    pub repetition_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// Added to the logits of these token ids before sampling (llama.cpp / OpenAI `logit_bias`).
    pub logit_bias: Vec<(u32, f32)>,
    /// Report each generated token's log-probability under the model (before sampling filters).
    pub logprobs: bool,
    /// Also report this many most likely tokens and their log-probabilities at each step.
    pub top_logprobs: usize,
    /// The grammar the answer must follow (structured output).
    pub constraint: Option<crate::output_constraint::OutputConstraint>,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            temperature: 0.8,
            top_p: 0.95,
            top_k: 40,
            min_p: 0.05,
            stop: Vec::new(),
            seed: None,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            logprobs: false,
            top_logprobs: 0,
            constraint: None,
        }
    }
}

/// Longest stop string we accept, in bytes: longer ones cannot be matched cheaply per token
/// and are always a mistake.
pub const MAX_STOP_BYTES: usize = 4096;
/// Most stop strings per request.
pub const MAX_STOP_STRINGS: usize = 64;
/// Most alternatives reported per token (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

impl GenerationParams {
    /// Checks every field; the message says which field is wrong and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_tokens < 1 {
            return Err(format!(
                "max_tokens must be at least 1, got {}",
                self.max_tokens
            ));
        }
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(format!(
                "temperature must be a finite number >= 0 (0 means greedy), got {}",
                self.temperature
            ));
        }
        if !self.top_p.is_finite() || self.top_p <= 0.0 || self.top_p > 1.0 {
            return Err(format!(
                "top_p must be in (0, 1] (1 disables it), got {}",
                self.top_p
            ));
        }
        if !self.min_p.is_finite() || !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!(
                "min_p must be in [0, 1] (0 disables it), got {}",
                self.min_p
            ));
        }
        if !self.repetition_penalty.is_finite() || self.repetition_penalty <= 0.0 {
            return Err(format!(
                "repetition_penalty must be a finite number > 0 (1 disables it), got {}",
                self.repetition_penalty
            ));
        }
        for (name, value) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !value.is_finite() || !(-2.0..=2.0).contains(&value) {
                return Err(format!(
                    "{name} must be in [-2, 2] (0 disables it), got {value}"
                ));
            }
        }
        if let Some((id, bias)) = self.logit_bias.iter().find(|(_, b)| b.is_nan()) {
            return Err(format!(
                "logit_bias for token {id} must be a number, got {bias}"
            ));
        }
        if self.top_logprobs > MAX_TOP_LOGPROBS {
            return Err(format!(
                "top_logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {}",
                self.top_logprobs
            ));
        }
        if self.stop.len() > MAX_STOP_STRINGS {
            return Err(format!(
                "at most {MAX_STOP_STRINGS} stop strings are allowed, got {}",
                self.stop.len()
            ));
        }
        for s in &self.stop {
            if s.is_empty() {
                return Err("stop strings must not be empty".to_string());
            }
            if s.len() > MAX_STOP_BYTES {
                return Err(format!(
                    "a stop string may be at most {MAX_STOP_BYTES} bytes, got one of {} bytes",
                    s.len()
                ));
            }
        }
        Ok(())
    }
}

/// Checks that a prompt of `prompt_tokens` leaves room for at least one new token.
pub fn check_context(prompt_tokens: usize, context_window: usize) -> Result<(), String> {
    if prompt_tokens == 0 {
        return Err("the prompt is empty: give at least one character of text".to_string());
    }
    if prompt_tokens >= context_window {
        return Err(format!(
            "the prompt is {prompt_tokens} tokens long, but the model's context window is \
             {context_window} tokens; shorten the prompt"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> GenerationParams {
        GenerationParams::default()
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(ok().validate(), Ok(()));
    }

    #[test]
    fn rejects_each_bad_field_with_its_name() {
        let cases: Vec<(GenerationParams, &str)> = vec![
            (
                GenerationParams {
                    max_tokens: 0,
                    ..ok()
                },
                "max_tokens",
            ),
            (
                GenerationParams {
                    temperature: -0.1,
                    ..ok()
                },
                "temperature",
            ),
            (
                GenerationParams {
                    temperature: f64::NAN,
                    ..ok()
                },
                "temperature",
            ),
            (GenerationParams { top_p: 0.0, ..ok() }, "top_p"),
            (GenerationParams { top_p: 1.5, ..ok() }, "top_p"),
            (
                GenerationParams {
                    min_p: -1.0,
                    ..ok()
                },
                "min_p",
            ),
            (
                GenerationParams {
                    repetition_penalty: 0.0,
                    ..ok()
                },
                "repetition_penalty",
            ),
            (
                GenerationParams {
                    presence_penalty: f32::INFINITY,
                    ..ok()
                },
                "presence_penalty",
            ),
            (
                GenerationParams {
                    frequency_penalty: 3.0,
                    ..ok()
                },
                "frequency_penalty",
            ),
            (
                GenerationParams {
                    logit_bias: vec![(5, f32::NAN)],
                    ..ok()
                },
                "logit_bias",
            ),
            (
                GenerationParams {
                    top_logprobs: MAX_TOP_LOGPROBS + 1,
                    ..ok()
                },
                "top_logprobs",
            ),
            (
                GenerationParams {
                    stop: vec![String::new()],
                    ..ok()
                },
                "stop strings",
            ),
            (
                GenerationParams {
                    stop: vec!["x".repeat(MAX_STOP_BYTES + 1)],
                    ..ok()
                },
                "stop string",
            ),
            (
                GenerationParams {
                    stop: vec!["x".into(); MAX_STOP_STRINGS + 1],
                    ..ok()
                },
                "stop strings",
            ),
        ];
        for (params, needle) in cases {
            let err = params.validate().expect_err(needle);
            assert!(err.contains(needle), "{err:?} should name {needle}");
        }
    }

    #[test]
    fn context_check_gives_both_lengths() {
        assert!(check_context(10, 100).is_ok());
        let err = check_context(100, 100).unwrap_err();
        assert!(
            err.contains("100 tokens long") && err.contains("100 tokens;"),
            "{err}"
        );
        assert!(check_context(0, 100).unwrap_err().contains("empty"));
    }
}
