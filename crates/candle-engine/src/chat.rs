//! Chat templates: the model's own Jinja template (`tokenizer.chat_template`)
//! rendered in minijinja's sandbox, which has no file, network or process
//! access, with the block whitespace rules of transformers' Jinja
//! environment. A template comes with the model file, from strangers, so it
//! is also bounded in time (a work budget), in output and in recursion, and
//! a name it uses that nothing defines is an error naming it. A model
//! without a template gets the Gemma turn layout when its vocabulary has
//! Gemma's turn markers (some Gemma GGUFs ship none), ChatML otherwise.

use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// One turn of a conversation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// The ChatML layout used when a model ships no template.
const CHATML: &str = "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// Gemma's turn layout, as llama.cpp's built-in `gemma` chat format lays it
/// out: a system message is folded into the first user turn, the assistant
/// speaks as `model`. Written with block tags on their own lines so that it
/// also exercises the trim_blocks/lstrip_blocks rules.
const GEMMA_TURNS: &str = r#"{{ bos_token -}}
{% if messages and messages[0].role == 'system' %}
    {% set system_prefix = (messages[0].content | trim) ~ '\n\n' %}
    {% set turns = messages[1:] %}
{% else %}
    {% set system_prefix = '' %}
    {% set turns = messages %}
{% endif %}
{% for message in turns %}
    {% if (message.role == 'user') != (loop.index0 % 2 == 0) %}
        {{ raise_exception('Gemma turns must alternate between user and assistant, starting with the user') }}
    {% endif %}
<start_of_turn>{{ 'model' if message.role == 'assistant' else message.role }}
{{ system_prefix if loop.first else '' }}{{ message.content | trim }}<end_of_turn>
{% endfor %}
{% if add_generation_prompt %}
<start_of_turn>model
{% endif %}
"#;

/// Template instructions one render may execute. A turn of the SmolLM2 or
/// Gemma-3 template costs under 100 (`fuel_per_turn_of_the_real_templates`
/// measures them), so this renders conversations of tens of thousands of
/// turns, while a template whose loops multiply out to billions of
/// iterations stops within a second.
pub const TEMPLATE_FUEL: u64 = 5_000_000;

/// Bytes a rendered prompt may hold. A prompt must fit the model's context;
/// at a few bytes per token this is millions of tokens, beyond what any
/// context this engine loads holds.
pub const MAX_PROMPT_BYTES: usize = 64 << 20;

/// The markers whose presence in a vocabulary selects [`GEMMA_TURNS`].
const GEMMA_TURN_MARKERS: [&str; 2] = ["<start_of_turn>", "<end_of_turn>"];

/// A compiled chat template.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    /// Whether the model's own template is used (false: a built-in layout).
    pub is_model_template: bool,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Compiles the model's template, or ChatML when `source` is `None`.
    pub fn new(source: Option<&str>, bos_token: &str, eos_token: &str) -> Result<Self> {
        Self::compile(source, CHATML, bos_token, eos_token)
    }

    /// Compiles the model's template; without one, the layout its
    /// vocabulary implies: Gemma's when `tokenizer` has Gemma's turn
    /// markers, ChatML otherwise. The BOS/EOS texts come from `tokenizer`.
    ///
    /// ```
    /// use candle_engine::chat::{ChatTemplate, Message};
    /// use candle_engine::tokenizer::{GgufTokenizerSpec, Tokenizer};
    /// let tokens = vec!["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"];
    /// let tokenizer = Tokenizer::from_gguf(&GgufTokenizerSpec {
    ///     model: "llama",
    ///     token_types: vec![3; tokens.len()],
    ///     tokens,
    ///     bos: Some(2),
    ///     eos: Some(1),
    ///     ..GgufTokenizerSpec::default()
    /// })?;
    /// let chat = ChatTemplate::for_tokenizer(None, &tokenizer)?;
    /// assert_eq!(
    ///     chat.render(&[Message::new("user", "Hi")], true)?,
    ///     "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    /// );
    /// # Ok::<(), candle_engine::Error>(())
    /// ```
    pub fn for_tokenizer(source: Option<&str>, tokenizer: &Tokenizer) -> Result<Self> {
        let text_of = |id: Option<u32>| {
            id.and_then(|id| tokenizer.id_to_token(id))
                .unwrap_or_default()
        };
        let is_gemma = GEMMA_TURN_MARKERS
            .iter()
            .all(|marker| tokenizer.token_to_id(marker).is_some());
        Self::compile(
            source,
            if is_gemma { GEMMA_TURNS } else { CHATML },
            &text_of(tokenizer.bos()),
            &text_of(tokenizer.eos().first().copied()),
        )
    }

    fn compile(
        source: Option<&str>,
        fallback: &'static str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<Self> {
        let mut env = minijinja::Environment::new();
        // transformers renders templates with these two set; model templates
        // are written for them (a block tag's line leaves no blank line).
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // Names a template tests with `is defined` or `if` stay usable;
        // printing or iterating one that nothing defines fails, so that the
        // error can name it instead of the prompt silently losing text.
        env.set_undefined_behavior(minijinja::UndefinedBehavior::SemiStrict);
        env.set_fuel(Some(TEMPLATE_FUEL));
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        let is_model_template = source.is_some();
        env.add_template_owned("chat", source.unwrap_or(fallback).to_string())
            .map_err(|e| {
                Error::ChatTemplate(format!("the model's template does not compile: {e}"))
            })?;
        Ok(Self {
            env,
            is_model_template,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// The prompt text for `messages`, ending with the opening of the
    /// assistant's turn when `add_generation_prompt` is set.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| Error::ChatTemplate(e.to_string()))?;
        let mut output = BoundedOutput::default();
        // transformers passes `tools` and `documents` as None when there
        // are none; templates test them with `is not none`.
        let rendered = template.render_captured_to(
            minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
                tools => (),
                documents => (),
            },
            &mut output,
        );
        match rendered {
            Ok(_) => String::from_utf8(output.text)
                .map_err(|e| Error::ChatTemplate(format!("rendering produced invalid UTF-8: {e}"))),
            Err(_) if output.overflowed => Err(Error::ChatTemplate(format!(
                "rendering produced more than {MAX_PROMPT_BYTES} bytes of prompt"
            ))),
            Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => Err(Error::ChatTemplate(
                format!("rendering ran past its work budget of {TEMPLATE_FUEL} instructions"),
            )),
            Err(e) if e.kind() == minijinja::ErrorKind::UndefinedError => {
                Err(Error::ChatTemplate(format!(
                    "rendering failed: {e}; names the template uses that nothing defines: {}",
                    self.undefined_names(&template).join(", ")
                )))
            }
            Err(e) => Err(Error::ChatTemplate(format!("rendering failed: {e}"))),
        }
    }

    /// Top-level names `template` reads that neither it, the render
    /// context nor the environment's globals define (minijinja's undefined
    /// error does not say which name it met).
    fn undefined_names(&self, template: &minijinja::Template<'_, '_>) -> Vec<String> {
        const CONTEXT: [&str; 6] = [
            "messages",
            "add_generation_prompt",
            "bos_token",
            "eos_token",
            "tools",
            "documents",
        ];
        let mut names: Vec<String> = template
            .undeclared_variables(false)
            .into_iter()
            .filter(|name| !CONTEXT.contains(&name.as_str()))
            .filter(|name| !self.env.globals().any(|(global, _)| global == name))
            .collect();
        names.sort();
        names
    }
}

/// The rendered prompt, refusing to grow past [`MAX_PROMPT_BYTES`].
#[derive(Default)]
struct BoundedOutput {
    text: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for BoundedOutput {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + bytes.len() > MAX_PROMPT_BYTES {
            self.overflowed = true;
            return Err(std::io::Error::other("the prompt is too long"));
        }
        self.text.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_fallback_lays_out_turns_and_the_generation_prompt() {
        let t = ChatTemplate::new(None, "", "").unwrap();
        let text = t.render(&[Message::new("user", "Hi")], true).unwrap();
        assert_eq!(
            text,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_string_methods_and_raise_exception_work() {
        let source = "{% if messages[0].role != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}{{ messages[0].content.strip().upper() }}";
        let t = ChatTemplate::new(Some(source), "<s>", "</s>").unwrap();
        assert_eq!(
            t.render(&[Message::new("user", "  hi ")], false).unwrap(),
            "HI"
        );
        let err = t.render(&[Message::new("system", "x")], false).unwrap_err();
        assert!(
            err.to_string()
                .contains("first message must be from the user"),
            "{err}"
        );
    }

    #[test]
    fn a_template_that_does_not_compile_is_reported() {
        let err = ChatTemplate::new(Some("{% for %}"), "", "").err().unwrap();
        assert!(err.to_string().contains("does not compile"), "{err}");
    }

    #[test]
    fn loops_that_multiply_out_to_billions_of_iterations_run_out_of_budget() {
        let source = "{% for a in range(100000) %}{% for b in range(100000) %}{{ '' }}{% endfor %}{% endfor %}";
        let t = ChatTemplate::new(Some(source), "", "").unwrap();
        let err = t.render(&[], false).unwrap_err().to_string();
        assert!(err.contains("work budget"), "{err}");
    }

    #[test]
    fn a_prompt_larger_than_the_bound_is_refused() {
        let source = "{% for i in range(100) %}{{ 'x' * 1000000 }}{% endfor %}";
        let t = ChatTemplate::new(Some(source), "", "").unwrap();
        let err = t.render(&[], false).unwrap_err().to_string();
        assert!(err.contains("bytes of prompt"), "{err}");
    }

    #[test]
    fn an_undefined_name_is_reported_by_name_but_may_be_tested() {
        let t = ChatTemplate::new(Some("{{ greeting }}{{ messages[0].content }}"), "", "").unwrap();
        let err = t.render(&[Message::new("user", "Hi")], false).unwrap_err();
        assert!(err.to_string().contains("greeting"), "{err}");
        let source = "{% if greeting is defined %}{{ greeting }}{% endif %}\
            {% if custom %}x{% endif %}{% if tools is not none %}{{ tools }}{% endif %}\
            {{ messages[0].content }}";
        let t = ChatTemplate::new(Some(source), "", "").unwrap();
        assert_eq!(
            t.render(&[Message::new("user", "Hi")], false).unwrap(),
            "Hi"
        );
    }

    /// The measurement behind [`TEMPLATE_FUEL`]: instructions per turn of
    /// the templates the real models render with, SmolLM2's own and the
    /// Gemma layout (the Gemma-3 GGUF embeds none), as
    /// `scripts/gen_tokenizer_fixtures.py` stored them.
    #[test]
    fn fuel_per_turn_of_the_real_templates() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/gemma3/tokenizer.json"
        );
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut sources: Vec<&str> = fixture["chat"]
            .as_array()
            .unwrap()
            .iter()
            .map(|chat| chat["source"].as_str().unwrap())
            .collect();
        sources.dedup();
        assert_eq!(sources.len(), 2);
        let fuel_for = |source: &str, turns: usize| {
            let mut env = ChatTemplate::new(Some(source), "<bos>", "<eos>")
                .unwrap()
                .env;
            env.set_fuel(Some(u64::MAX / 2));
            let messages: Vec<Message> = (0..turns)
                .map(|i| Message::new(["user", "assistant"][i % 2], "some text"))
                .collect();
            let template = env.get_template("chat").unwrap();
            let context = minijinja::context! {
                messages, add_generation_prompt => true, bos_token => "<bos>", eos_token => "<eos>"
            };
            let rendered = template.render_captured(context).unwrap();
            rendered.state().fuel_levels().unwrap().0
        };
        for source in sources {
            let per_turn = (fuel_for(source, 200) - fuel_for(source, 100)) / 100;
            assert!(per_turn < 100, "{per_turn} instructions per turn");
            assert!(TEMPLATE_FUEL / per_turn > 10_000, "{per_turn}");
        }
    }

    #[test]
    fn templates_cannot_reach_the_filesystem() {
        // minijinja has no file loader unless one is installed: includes fail.
        let t = ChatTemplate::new(Some("{% include '/etc/passwd' %}"), "", "").unwrap();
        assert!(t.render(&[], false).is_err());
    }
}
