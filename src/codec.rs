//! Text to token ids and back, with the model's BOS rule. Shared by loaded models and the
//! standalone GGUF tokenizer.

use std::path::Path;
use std::sync::Arc;

use tokenizers::Tokenizer;

use crate::failure::{Failure, FailureKind, Outcome};
use crate::gguf_content;
use crate::gguf_header::read_gguf_header;
use crate::gguf_tokenizer::GgufVocab;

#[derive(Clone)]
pub struct Codec {
    tokenizer: Arc<Tokenizer>,
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

    pub fn tokenize(&self, text: &str, add_special_tokens: bool) -> Outcome<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode_fast(text, add_special_tokens)
            .map_err(|e| Failure::invalid(format!("cannot tokenize the text: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        if let (true, Some(bos)) = (add_special_tokens, self.bos_id) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
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
