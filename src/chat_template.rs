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
        let t = Self {
            source,
            bos_token,
            eos_token,
        };
        // Fail at load time on a template that does not parse.
        t.environment()?;
        Ok(t)
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
    fn a_broken_template_fails_at_load() {
        assert!(ChatTemplate::new("{% for %}".into(), None, None).is_err());
    }
}
