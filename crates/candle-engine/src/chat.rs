//! Chat templates: the model's own Jinja template (`tokenizer.chat_template`)
//! rendered in minijinja's sandbox, which has no file, network or process
//! access, with the block whitespace rules of transformers' Jinja
//! environment. A model without a template gets the Gemma turn layout when
//! its vocabulary has Gemma's turn markers (some Gemma GGUFs ship none),
//! ChatML otherwise.

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
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            })
            .map_err(|e| Error::ChatTemplate(format!("rendering failed: {e}")))
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
    fn templates_cannot_reach_the_filesystem() {
        // minijinja has no file loader unless one is installed: includes fail.
        let t = ChatTemplate::new(Some("{% include '/etc/passwd' %}"), "", "").unwrap();
        assert!(t.render(&[], false).is_err());
    }
}
