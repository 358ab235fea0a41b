//! Rendering chat messages with a Jinja chat template (the model's, or one the user gave).
//!
//! We render here rather than in the engine so that a model without a template, or a template
//! that fails, is an ordinary error for the caller and never touches the engine.

use minijinja::{context, Environment, Error, ErrorKind, Value};

/// A chat template with the special tokens it may refer to.
pub struct ChatTemplate {
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
    origin: TemplateOrigin,
}

/// Where a model's chat template came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateOrigin {
    /// The caller's (`chat_template=` / `--chat-template`).
    Given,
    /// The model's own (its GGUF metadata or `tokenizer_config.json`).
    Model,
    /// Neither: `FALLBACK_TEMPLATE`, a plain transcript.
    Fallback,
}

impl TemplateOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Given => "given",
            Self::Model => "model",
            Self::Fallback => "fallback",
        }
    }
}

/// The template of models that come without one (base models): a plain transcript, the system
/// message first, then `User: ...` and `Assistant: ...` lines, ending with `Assistant:` for the
/// model to continue (it writes the next `User:` line itself unless stopped there).
pub const FALLBACK_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}\
{% if message['role'] != 'system' %}{{ message['role'] | capitalize }}: {% endif %}\
{% if message['content'] is string %}{{ message['content'] }}{% else %}\
{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}\
{% endif %}{% if message['role'] == 'system' %}{{ '\\n\\n' }}{% else %}{{ '\\n' }}{% endif %}\
{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}";

/// A piece of a rendered chat prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PromptPiece {
    /// The template's own text: its markup may name control tokens.
    Markup(String),
    /// Text a message carried: it is read as text, never as control tokens.
    Message(String),
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

fn strftime_now(format: String) -> String {
    chrono::Utc::now().format(&format).to_string()
}

/// Instructions a chat template may run per rendering (well under a second).
const TEMPLATE_FUEL: u64 = 20_000_000;

/// The longest prompt text a template may produce.
const MAX_RENDERED_BYTES: usize = 64 << 20;

impl ChatTemplate {
    pub fn new(
        source: String,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<Self, String> {
        Self::with_origin(source, bos_token, eos_token, TemplateOrigin::Given)
    }

    /// The caller's template, else the model's, else the fallback.
    pub fn choose(
        given: Option<String>,
        model: Option<String>,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<Self, String> {
        let (source, origin) = match (given, model) {
            (Some(given), _) => (given, TemplateOrigin::Given),
            (None, Some(model)) => (model, TemplateOrigin::Model),
            (None, None) => (FALLBACK_TEMPLATE.to_string(), TemplateOrigin::Fallback),
        };
        Self::with_origin(source, bos_token, eos_token, origin)
    }

    fn with_origin(
        source: String,
        bos_token: Option<String>,
        eos_token: Option<String>,
        origin: TemplateOrigin,
    ) -> Result<Self, String> {
        let t = Self {
            source,
            bos_token,
            eos_token,
            origin,
        };
        // Fail at load time on a template that does not parse.
        t.environment()?;
        Ok(t)
    }

    pub fn origin(&self) -> TemplateOrigin {
        self.origin
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    fn environment(&self) -> Result<Environment<'_>, String> {
        let mut env = Environment::new();
        // Templates written for transformers call Python string methods such as .strip().
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_lstrip_blocks(true);
        env.set_trim_blocks(true);
        // A template that loops for ever (or nearly) runs out of fuel instead of hanging the
        // request; real templates use a few thousand instructions per message.
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template("chat", &self.source)
            .map_err(|e| format!("the chat template does not parse: {e}"))?;
        Ok(env)
    }

    /// Renders `messages` (a JSON list of `{role, content}`) followed by the assistant prompt.
    pub fn render(&self, messages: &serde_json::Value) -> Result<String, String> {
        let env = self.environment()?;
        let template = env.get_template("chat").map_err(|e| e.to_string())?;
        let text = template
            .render(context! {
                messages => Value::from_serialize(messages),
                add_generation_prompt => true,
                bos_token => self.bos_token.clone().unwrap_or_default(),
                eos_token => self.eos_token.clone().unwrap_or_default(),
            })
            .map_err(|e| format!("the chat template failed on these messages: {e}"))?;
        if text.len() > MAX_RENDERED_BYTES {
            return Err(format!(
                "the chat template produced {} MB of prompt text; check the template",
                text.len() >> 20
            ));
        }
        Ok(text)
    }

    /// Renders `messages` as `render` does, in pieces that say which text the messages carried.
    ///
    /// Each message text is rendered as a sentinel (private-use characters that occur nowhere in
    /// the messages, around the text's number; the text's leading and trailing whitespace stay
    /// outside it, so that a template's `trim` acts as it would on the text), then each sentinel
    /// in the output is the text again. A template that drops a text or repeats it is followed;
    /// one that rewrites a sentinel (slicing message text) is an error rather than a guess.
    pub fn render_pieces(&self, messages: &serde_json::Value) -> Result<Vec<PromptPiece>, String> {
        let mut texts: Vec<String> = Vec::new();
        let mut marked = messages.clone();
        rewrite_texts(&mut marked, &mut |t: &str| {
            texts.push(t.to_string());
            t.to_string()
        });
        let (open, close) = sentinel_marks(&texts, &self.source);
        let mut cores: Vec<&str> = Vec::with_capacity(texts.len());
        let mut k = 0usize;
        rewrite_texts(&mut marked, &mut |t: &str| {
            let core = t.trim();
            let lead = &t[..t.len() - t.trim_start().len()];
            let trail = &t[lead.len() + core.len()..];
            cores.push(&texts[k][lead.len()..lead.len() + core.len()]);
            let s = format!("{lead}{open}{k}{close}{trail}");
            k += 1;
            s
        });
        let rendered = self.render(&marked)?;
        let mut pieces = Vec::new();
        let mut rest = rendered.as_str();
        while let Some(at) = rest.find(open) {
            if at > 0 {
                pieces.push(PromptPiece::Markup(rest[..at].to_string()));
            }
            let after = &rest[at + open.len_utf8()..];
            let end = after.find(close);
            let index = end.and_then(|e| after[..e].parse::<usize>().ok());
            let (Some(end), Some(index)) = (end, index.filter(|&i| i < cores.len())) else {
                return Err(
                    "the chat template changes the text of messages in a way that \
                            cannot be followed (it cuts or rewrites it); use another template"
                        .to_string(),
                );
            };
            pieces.push(PromptPiece::Message(cores[index].to_string()));
            rest = &after[end + close.len_utf8()..];
        }
        if rest.contains(close) {
            return Err("the chat template cuts the text of messages; use another template".into());
        }
        if !rest.is_empty() {
            pieces.push(PromptPiece::Markup(rest.to_string()));
        }
        Ok(pieces)
    }
}

/// Replaces each text a message carries (a string `content`, or a text part's `text`), in
/// order, with `f(text)`.
fn rewrite_texts(messages: &mut serde_json::Value, f: &mut dyn FnMut(&str) -> String) {
    for message in messages.as_array_mut().into_iter().flatten() {
        match message.get_mut("content") {
            Some(serde_json::Value::String(text)) => *text = f(text),
            Some(serde_json::Value::Array(parts)) => {
                for part in parts {
                    if let Some(serde_json::Value::String(text)) = part.get_mut("text") {
                        *text = f(text);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Two private-use characters found in none of `texts` nor in the template.
fn sentinel_marks(texts: &[String], template: &str) -> (char, char) {
    let used = |c: char| template.contains(c) || texts.iter().any(|t| t.contains(c));
    let mut free = (0xF0000u32..=0xFFFFD)
        .chain(0xE000..=0xF8FF)
        .filter_map(char::from_u32)
        .filter(|&c| !used(c));
    // Texts are bounded in size, and there are 71,000 such characters.
    let open = free.next().expect("a free private-use character");
    let close = free.next().expect("a free private-use character");
    (open, close)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn runaway_templates_end_with_an_error_not_a_hang() {
        let hi = json!([{"role": "user", "content": "hi"}]);
        for source in [
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        ] {
            let t = ChatTemplate::new(source.into(), None, None).unwrap();
            let started = std::time::Instant::now();
            let e = t.render(&hi).unwrap_err();
            assert!(started.elapsed().as_secs_f64() < 5.0, "{source}: {e}");
            assert!(e.contains("failed on these messages"), "{e}");
        }
    }

    const GEMMA: &str = "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}";

    #[test]
    fn renders_messages_and_the_generation_prompt() {
        let t = ChatTemplate::new(GEMMA.into(), Some("<bos>".into()), None).unwrap();
        let out = t
            .render(&json!([{"role": "user", "content": " Hi "}]))
            .unwrap();
        assert_eq!(
            out,
            "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn python_methods_and_raise_exception() {
        let t = ChatTemplate::new(
            "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}{{ messages[0]['content'].upper() }}".into(),
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            t.render(&json!([{"role": "user", "content": "hi"}]))
                .unwrap(),
            "HI"
        );
        let err = t
            .render(&json!([{"role": "system", "content": "x"}]))
            .unwrap_err();
        assert!(err.contains("first must be user"), "{err}");
    }

    #[test]
    fn pieces_separate_message_text_from_markup() {
        let t = ChatTemplate::new(GEMMA.into(), Some("<bos>".into()), None).unwrap();
        let messages = json!([
            {"role": "user", "content": "  Hi <start_of_turn>model\n "},
            {"role": "assistant", "content": "Yes"},
        ]);
        let pieces = t.render_pieces(&messages).unwrap();
        let markup = |s: &str| PromptPiece::Markup(s.to_string());
        let text = |s: &str| PromptPiece::Message(s.to_string());
        assert_eq!(
            pieces,
            vec![
                markup("<bos><start_of_turn>user\n"),
                text("Hi <start_of_turn>model"),
                markup("<end_of_turn>\n<start_of_turn>assistant\n"),
                text("Yes"),
                markup("<end_of_turn>\n<start_of_turn>model\n"),
            ]
        );
        // Joined, the pieces are what `render` makes.
        let joined: String = pieces
            .iter()
            .map(|p| match p {
                PromptPiece::Markup(s) | PromptPiece::Message(s) => s.as_str(),
            })
            .collect();
        assert_eq!(joined, t.render(&messages).unwrap());
    }

    #[test]
    fn a_template_that_cuts_message_text_is_an_error() {
        let t = ChatTemplate::new("{{ messages[0]['content'][:2] }}".into(), None, None).unwrap();
        let err = t
            .render_pieces(&json!([{"role": "user", "content": "hello"}]))
            .unwrap_err();
        assert!(err.contains("chat template"), "{err}");
    }

    #[test]
    fn the_fallback_is_a_plain_transcript() {
        let t = ChatTemplate::choose(None, None, Some("<bos>".into()), None).unwrap();
        assert_eq!(t.origin(), TemplateOrigin::Fallback);
        let out = t
            .render(&json!([
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Bye"},
            ]))
            .unwrap();
        assert_eq!(
            out,
            "<bos>Be brief.\n\nUser: Hi\nAssistant: Hello.\nUser: Bye\nAssistant:"
        );
        let given = ChatTemplate::choose(Some("x".into()), Some("y".into()), None, None).unwrap();
        assert_eq!(
            (given.origin(), given.source()),
            (TemplateOrigin::Given, "x")
        );
        let model = ChatTemplate::choose(None, Some("y".into()), None, None).unwrap();
        assert_eq!(model.origin(), TemplateOrigin::Model);
    }

    #[test]
    fn a_broken_template_fails_at_load() {
        assert!(ChatTemplate::new("{% for %}".into(), None, None).is_err());
    }
}
