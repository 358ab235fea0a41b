//! Text to token ids and back, with the model's BOS rule. Shared by loaded models and the
//! standalone GGUF tokenizer.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use tokenizers::Tokenizer;

use crate::chat_template::PromptPiece;
use crate::failure::{Failure, FailureKind, Outcome};
use crate::gguf_content;
use crate::gguf_header::read_gguf_header;
use crate::gguf_tokenizer::GgufVocab;

#[derive(Clone)]
pub struct Codec {
    tokenizer: Arc<Tokenizer>,
    /// The ids of the tokenizer's special added tokens (control tokens), found at first need.
    special_ids: Arc<OnceLock<HashSet<u32>>>,
    /// Put first when special tokens are added, unless the tokenizer already did.
    bos_id: Option<u32>,
    /// Counted once: the tokenizer counts by building its whole vocabulary as a map (for
    /// 262,144 tokens, tens of milliseconds of one core at every request).
    vocab_size: u32,
}

impl Codec {
    pub fn new(tokenizer: Arc<Tokenizer>, bos_id: Option<u32>) -> Self {
        let vocab_size = tokenizer.get_vocab_size(true) as u32;
        Self::with_vocab_size(tokenizer, bos_id, vocab_size)
    }

    /// A tokenizer whose vocabulary size is known (a GGUF file's token count): counting it costs
    /// a copy of the vocabulary.
    pub fn with_vocab_size(
        tokenizer: Arc<Tokenizer>,
        bos_id: Option<u32>,
        vocab_size: u32,
    ) -> Self {
        Self {
            tokenizer,
            special_ids: Arc::default(),
            bos_id,
            vocab_size,
        }
    }

    /// Our conversion of a GGUF vocabulary.
    pub fn from_vocab(vocab: &GgufVocab) -> Result<Self, String> {
        Ok(Self::with_vocab_size(
            Arc::new(Self::tokenizer_from_vocab(vocab)?),
            vocab.bos_id.filter(|_| vocab.add_bos),
            vocab.tokens.len() as u32,
        ))
    }

    /// Our conversion of a GGUF vocabulary to a tokenizer.
    pub fn tokenizer_from_vocab(vocab: &GgufVocab) -> Result<Tokenizer, String> {
        vocab.to_tokenizer().map_err(|e| format!("tokenizer: {e}"))
    }

    /// The tokenizer of a GGUF file, without loading its weights.
    pub fn from_gguf_file(path: &Path) -> Outcome<(Self, GgufVocab)> {
        let format =
            |e: String| Failure::new(FailureKind::ModelFormat, format!("{}: {e}", path.display()));
        if !path.is_file() {
            return Err(Failure::new(
                FailureKind::ModelNotFound,
                format!("no GGUF file at {}; check the path", path.display()),
            ));
        }
        read_gguf_header(path).map_err(format)?;
        let content = gguf_content::read_content(path).map_err(format)?;
        let vocab = gguf_content::read_vocab(&content).map_err(format)?;
        let codec = Self::from_vocab(&vocab).map_err(format)?;
        Ok((codec, vocab))
    }

    /// The BOS id put first when special tokens are added (None when the model adds none).
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    pub fn vocab_size(&self) -> u32 {
        self.vocab_size
    }

    /// Token ids of `text`. With `parse_special`, the texts of control tokens in it
    /// (`<start_of_turn>`, `<|im_start|>`) become those tokens; without, they are text, as in
    /// llama.cpp's `parse_special=false` (other added tokens match either way).
    pub fn tokenize(
        &self,
        text: &str,
        add_special_tokens: bool,
        parse_special: bool,
    ) -> Outcome<Vec<u32>> {
        let enc = if parse_special {
            self.tokenizer.encode_fast(text, add_special_tokens)
        } else {
            self.tokenizer
                .encode_fast_special_as_text(text, add_special_tokens)
        }
        .map_err(|e| Failure::invalid(format!("cannot tokenize the text: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        if let (true, Some(bos)) = (add_special_tokens, self.bos_id) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    fn special_ids(&self) -> &HashSet<u32> {
        self.special_ids.get_or_init(|| {
            self.tokenizer
                .get_added_tokens_decoder()
                .into_iter()
                .filter(|(_, token)| token.special)
                .map(|(id, _)| id)
                .collect()
        })
    }

    /// Token ids of a rendered chat prompt: the control tokens the template's markup names are
    /// control tokens; text that messages carried is read as text. Where no message text holds a
    /// control token's text, the ids equal those of the joined prompt read with `parse_special`.
    pub fn tokenize_pieces(&self, pieces: &[PromptPiece]) -> Outcome<Vec<u32>> {
        let special = self.special_ids();
        let mut ids = Vec::new();
        let mut run = String::new();
        let flush = |run: &mut String, ids: &mut Vec<u32>| -> Outcome<()> {
            if !run.is_empty() {
                ids.extend(self.tokenize(run, false, false)?);
                run.clear();
            }
            Ok(())
        };
        for piece in pieces {
            match piece {
                PromptPiece::Message(text) => run.push_str(text),
                PromptPiece::Markup(markup) => {
                    let enc = self.tokenizer.encode(markup.as_str(), false).map_err(|e| {
                        Failure::invalid(format!("cannot tokenize the chat template's text: {e}"))
                    })?;
                    let mut at = 0;
                    for (&id, &(start, end)) in enc.get_ids().iter().zip(enc.get_offsets()) {
                        if special.contains(&id) && start >= at && end <= markup.len() {
                            run.push_str(&markup[at..start]);
                            flush(&mut run, &mut ids)?;
                            ids.push(id);
                            at = end;
                        }
                    }
                    run.push_str(&markup[at..]);
                }
            }
        }
        flush(&mut run, &mut ids)?;
        Ok(ids)
    }

    /// Fails when an id is not in the vocabulary; `what` names the ids in the message.
    pub fn check_ids(&self, ids: impl IntoIterator<Item = u32>, what: &str) -> Outcome<()> {
        let vocab = self.vocab_size();
        match ids.into_iter().find(|&i| i >= vocab) {
            Some(bad) => Err(Failure::invalid(format!(
                "{what} {bad} is outside the vocabulary (0..{vocab})"
            ))),
            None => Ok(()),
        }
    }

    pub fn detokenize(&self, ids: &[u32], skip_special_tokens: bool) -> Outcome<String> {
        self.check_ids(ids.iter().copied(), "token id")?;
        self.tokenizer
            .decode(ids, skip_special_tokens)
            .map_err(|e| Failure::invalid(format!("cannot decode the tokens: {e}")))
    }
}
