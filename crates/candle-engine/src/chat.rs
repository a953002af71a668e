//! Chat templates: the model's own Jinja template (`tokenizer.chat_template`)
//! rendered in minijinja's sandbox, which has no file, network or process
//! access; ChatML when a model has none.

use crate::{Error, Result};
use serde::Serialize;

/// One turn of a conversation.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
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

/// A compiled chat template.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    /// Whether the model's own template is used (false: ChatML fallback).
    pub is_model_template: bool,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Compiles the model's template, or ChatML when `source` is `None`.
    pub fn new(source: Option<&str>, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = minijinja::Environment::new();
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
        env.add_template_owned("chat", source.unwrap_or(CHATML).to_string())
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
