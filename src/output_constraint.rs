//! Structured output: the grammar a request's answer must follow (a JSON schema, a regular
//! expression or a Lark grammar), enforced by the engine's constrained decoding (llguidance).
//!
//! A grammar is compiled here once before the request is submitted, so that a bad schema or
//! grammar is the caller's `InvalidRequest` before anything is generated, with llguidance's
//! own words for what is wrong.

use std::sync::Arc;

use mistralrs::core::llguidance::api::TopLevelGrammar;
use mistralrs::core::LlgFactory;
use mistralrs::Constraint;

use crate::failure::{Failure, Outcome};

/// What a request's answer must match.
#[derive(Clone, Debug, PartialEq)]
pub enum OutputConstraint {
    /// A JSON schema (`{"type": "object", ...}`); `{}` or `true` is any JSON value.
    JsonSchema(serde_json::Value),
    /// A regular expression the whole answer matches.
    Regex(String),
    /// A Lark grammar (llguidance's dialect; `start` is the top rule).
    Lark(String),
}

impl OutputConstraint {
    /// What the field is called where the caller gave it, for messages.
    fn name(&self) -> &'static str {
        match self {
            Self::JsonSchema(_) => "response_format's JSON schema",
            Self::Regex(_) => "regex",
            Self::Lark(_) => "grammar",
        }
    }

    fn grammar(&self) -> TopLevelGrammar {
        match self {
            Self::JsonSchema(schema) => TopLevelGrammar::from_json_schema(schema.clone()),
            Self::Regex(regex) => TopLevelGrammar::from_regex(regex),
            Self::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
        }
    }

    /// The engine's form of it.
    pub fn to_engine(&self) -> Constraint {
        match self {
            Self::JsonSchema(schema) => Constraint::JsonSchema(schema.clone()),
            Self::Regex(regex) => Constraint::Regex(regex.clone()),
            Self::Lark(lark) => Constraint::Lark(lark.clone()),
        }
    }
}

/// The model's tokens as llguidance sees them (built at the first constrained request) and the
/// tokens a finished grammar ends on.
pub struct GrammarTokens {
    tokens: Option<Arc<LlgFactory>>,
    eos: Vec<u32>,
}

impl GrammarTokens {
    pub fn new(tokens: Option<Arc<LlgFactory>>, eos: Vec<u32>) -> Self {
        Self { tokens, eos }
    }

    /// Compiles `constraint` for this model; the error names the field and what is wrong.
    pub fn check(&self, constraint: &OutputConstraint) -> Outcome<()> {
        let tokens = self.tokens.as_ref().ok_or_else(|| {
            Failure::invalid("this model does not support structured output (no token table)")
        })?;
        let factory = tokens.factory(&self.eos).map_err(|e| {
            Failure::generation(format!(
                "cannot prepare structured output for this model: {e}"
            ))
        })?;
        factory
            .create_parser(constraint.grammar())
            .map(drop)
            .map_err(|e| Failure::invalid(format!("invalid {}: {e}", constraint.name())))
    }
}
