//! Prompts: the checkpoint's chat template rendered with minijinja (as transformers renders it with
//! Jinja2: `trim_blocks`, `lstrip_blocks`), and the expansion of each `<image>` marker into its tile
//! tags and `<image>` tokens (spec section 8.1).

use std::path::Path;

use minijinja::Environment;
use serde_json::Value;

use super::template_guard;
use crate::error::{Error, Result};
use crate::limits::{
    MAX_CONTENT_ITEMS, MAX_CONVERSATION_BYTES, MAX_MESSAGES, MAX_RENDERED_BYTES, TEMPLATE_FUEL,
};

/// `<fake_token_around_image>`.
pub const FAKE_IMAGE_TOKEN: &str = "<fake_token_around_image>";
/// `<image>`.
pub const IMAGE_TOKEN: &str = "<image>";
/// `<global-img>`.
pub const GLOBAL_IMAGE_TAG: &str = "<global-img>";
/// `<end_of_utterance>`.
pub const END_OF_UTTERANCE: &str = "<end_of_utterance>";

/// Finds the chat template of a checkpoint: `chat_template.jinja`, `chat_template.json`,
/// `processor_config.json`'s or `tokenizer_config.json`'s `chat_template`.
pub fn find_chat_template(dir: &Path) -> Result<Option<String>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja)
            .map(Some)
            .map_err(|e| Error::io(&jinja, e));
    }
    for name in [
        "chat_template.json",
        "processor_config.json",
        "tokenizer_config.json",
    ] {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.clone(),
            message: e.to_string(),
        })?;
        match v.get("chat_template") {
            Some(Value::String(s)) => return Ok(Some(s.clone())),
            // A list of named templates: take "default".
            Some(Value::Array(list)) => {
                let default = list
                    .iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some("default"));
                if let Some(s) = default
                    .and_then(|t| t.get("template"))
                    .and_then(Value::as_str)
                {
                    return Ok(Some(s.to_string()));
                }
            }
            _ => {}
        }
    }
    Ok(None)
}

/// Renders a chat template over `messages` (transformers' message format).
pub fn render_chat(
    template: &str,
    messages: &Value,
    add_generation_prompt: bool,
    special: &Value,
) -> Result<String> {
    let mut env = Environment::new();
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .expect("the default delimiters are valid"),
    );
    minijinja_contrib::add_to_environment(&mut env);
    // Python's string methods, and the bounded operators and filters that replace minijinja's.
    template_guard::install(&mut env);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    // A checkpoint's template is code from a stranger: bound its instructions and its output.
    env.set_fuel(Some(TEMPLATE_FUEL));
    // `a + b` on lists builds a lazy concatenation for free, and the built-in `length` walks it
    // without charging fuel: doubling a list sixty times and taking its length never ends.
    env.add_filter("length", bounded_length);
    env.add_filter("count", bounded_length);
    // minijinja's parser has the first word on the syntax; the bounded source is what runs.
    Environment::new()
        .template_from_str(template)
        .map_err(|e| Error::input(format!("the chat template does not parse: {e}")))?;
    let bounded = template_guard::bound_source(template).map_err(|e| {
        Error::input(format!(
            "the chat template is refused: its expressions cannot be checked for the size of \
             the values they build ({e})"
        ))
    })?;
    env.add_template_owned("chat", bounded)
        .map_err(|e| Error::input(format!("the chat template does not parse: {e}")))?;
    let tmpl = env.get_template("chat").expect("just added");
    let mut ctx = serde_json::Map::new();
    if let Value::Object(m) = special {
        ctx.extend(m.clone());
    }
    ctx.insert("messages".into(), messages.clone());
    ctx.insert(
        "add_generation_prompt".into(),
        Value::Bool(add_generation_prompt),
    );
    let mut out = BoundedWriter(Vec::new());
    match tmpl.render_captured_to(minijinja::value::Serde(&ctx), &mut out) {
        Ok(_) => {}
        Err(_) if out.0.len() > MAX_RENDERED_BYTES => {
            return Err(Error::input(format!(
                "the chat template's output exceeds {MAX_RENDERED_BYTES} bytes"
            )))
        }
        Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => {
            return Err(Error::input(format!(
                "the chat template ran out of fuel: it needs more than {TEMPLATE_FUEL} \
                 instructions for this conversation"
            )))
        }
        Err(e) if e.to_string().contains(template_guard::REFUSED) => {
            return Err(Error::input(format!(
                "the chat template is refused: {}",
                e.detail()
                    .unwrap_or("it builds a value past the template value limit")
            )))
        }
        Err(e) => return Err(Error::input(format!("the chat template failed: {e}"))),
    }
    String::from_utf8(out.0).map_err(|_| Error::input("the chat template produced invalid UTF-8"))
}

/// The most items `length` counts in a sequence that does not know its own length.
const MAX_COUNTED_ITEMS: usize = 1_000_000;

/// `length` / `count` that stops counting at [`MAX_COUNTED_ITEMS`].
fn bounded_length(v: minijinja::Value) -> std::result::Result<usize, minijinja::Error> {
    // `len` of a lazy iterable counts by walking it, uncharged: walk it here instead, with a cap.
    if v.kind() != minijinja::value::ValueKind::Iterable {
        if let Some(n) = v.len() {
            return Ok(n);
        }
    }
    let items = v.try_iter()?;
    let mut n = 0;
    for _ in items {
        n += 1;
        if n > MAX_COUNTED_ITEMS {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("length: the sequence has more than {MAX_COUNTED_ITEMS} items"),
            ));
        }
    }
    Ok(n)
}

/// Collects the rendered text, failing once it passes [`MAX_RENDERED_BYTES`] (the length is kept
/// one past the bound so that the failure can be told apart from the template's own errors).
struct BoundedWriter(Vec<u8>);

impl std::io::Write for BoundedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_RENDERED_BYTES {
            self.0.resize(MAX_RENDERED_BYTES + 1, 0);
            return Err(std::io::Error::other("rendered prompt too large"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Checks messages against transformers' format and counts their image items.
pub fn count_image_items(messages: &Value) -> Result<usize> {
    let list = messages
        .as_array()
        .ok_or_else(|| Error::input("chat: expected a JSON list of messages"))?;
    if list.len() > MAX_MESSAGES {
        return Err(Error::input(format!(
            "chat: {} messages exceed the limit of {MAX_MESSAGES}",
            list.len()
        )));
    }
    let (mut items, mut bytes) = (0usize, 0usize);
    for m in list {
        bytes += m.get("role").and_then(Value::as_str).map_or(0, str::len);
        match m.get("content") {
            Some(Value::String(s)) => bytes += s.len(),
            Some(Value::Array(list)) => {
                items += list.len();
                for item in list {
                    bytes += item.get("text").and_then(Value::as_str).map_or(0, str::len);
                }
            }
            _ => {}
        }
    }
    if items > MAX_CONTENT_ITEMS {
        return Err(Error::input(format!(
            "chat: {items} content items exceed the limit of {MAX_CONTENT_ITEMS}"
        )));
    }
    if bytes > MAX_CONVERSATION_BYTES {
        return Err(Error::input(format!(
            "chat: {bytes} bytes of text exceed the limit of {MAX_CONVERSATION_BYTES}"
        )));
    }
    let mut n = 0;
    for (i, m) in list.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str);
        if role.is_none() {
            return Err(Error::input(format!(
                "chat: message {i} has no string \"role\""
            )));
        }
        match m.get("content") {
            Some(Value::String(_)) => {}
            Some(Value::Array(items)) => {
                for (j, item) in items.iter().enumerate() {
                    match item.get("type").and_then(Value::as_str) {
                        Some("image") => n += 1,
                        Some("text") => {
                            if !item.get("text").is_some_and(Value::is_string) {
                                return Err(Error::input(format!(
                                    "chat: message {i}, item {j}: a text item needs a string \"text\""
                                )));
                            }
                        }
                        _ => {
                            return Err(Error::input(format!(
                            "chat: message {i}, item {j}: \"type\" must be \"image\" or \"text\""
                        )))
                        }
                    }
                }
            }
            _ => {
                return Err(Error::input(format!(
                    "chat: message {i} needs \"content\": a list of items or a string"
                )))
            }
        }
    }
    Ok(n)
}

/// One user turn: the images first, then the text, in transformers' message format.
pub fn user_turn(text: &str, n_images: usize) -> Value {
    let mut content: Vec<Value> = (0..n_images)
        .map(|_| serde_json::json!({"type": "image"}))
        .collect();
    content.push(serde_json::json!({"type": "text", "text": text}));
    serde_json::json!([{"role": "user", "content": content}])
}

/// The text that replaces one `<image>` marker for an image cut into `rows × cols` crops.
pub fn image_prompt(rows: usize, cols: usize, image_seq_len: usize) -> String {
    let image_run = IMAGE_TOKEN.repeat(image_seq_len);
    let global = format!("{FAKE_IMAGE_TOKEN}{GLOBAL_IMAGE_TAG}{image_run}{FAKE_IMAGE_TOKEN}");
    if rows == 0 && cols == 0 {
        return global;
    }
    let mut s = String::new();
    for r in 0..rows {
        for c in 0..cols {
            s += &format!("{FAKE_IMAGE_TOKEN}<row_{}_col_{}>{image_run}", r + 1, c + 1);
        }
        s.push('\n');
    }
    s.push('\n');
    s += &global;
    s
}

/// Replaces the k-th `<image>` marker of `text` with the expansion of the k-th image grid; the number
/// of markers must equal the number of images.
pub fn expand_images(text: &str, grids: &[(usize, usize)], image_seq_len: usize) -> Result<String> {
    let markers = text.matches(IMAGE_TOKEN).count();
    if markers != grids.len() {
        return Err(Error::input(format!(
            "the prompt has {markers} {IMAGE_TOKEN} marker(s) but {} image(s) were given",
            grids.len()
        )));
    }
    let mut out = String::with_capacity(text.len());
    let mut parts = text.split(IMAGE_TOKEN);
    out += parts.next().unwrap_or("");
    for (part, &(r, c)) in parts.zip(grids) {
        out += &image_prompt(r, c, image_seq_len);
        out += part;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDEFICS3_TEMPLATE: &str = "<|begin_of_text|>{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";

    #[test]
    fn renders_the_transformers_test_conversation() {
        let messages = serde_json::json!([
            {"role": "user", "content": [{"type": "text", "text": "What do these images show?"}, {"type": "image"}, {"type": "image"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "The first image shows the statue of Liberty in New York. The second image picture depicts Idefix, the dog of Obelix in Asterix and Obelix."}]},
            {"role": "user", "content": [{"type": "text", "text": "And who is that?"}]}
        ]);
        let s = render_chat(IDEFICS3_TEMPLATE, &messages, true, &Value::Null).unwrap();
        assert_eq!(
            s,
            "<|begin_of_text|>User: What do these images show?<image><image><end_of_utterance>\nAssistant: The first image shows the statue of Liberty in New York. The second image picture depicts Idefix, the dog of Obelix in Asterix and Obelix.<end_of_utterance>\nUser: And who is that?<end_of_utterance>\nAssistant:"
        );
        assert_eq!(count_image_items(&messages).unwrap(), 2);
    }

    #[test]
    fn image_first_turns_use_a_bare_colon() {
        let s = render_chat(IDEFICS3_TEMPLATE, &user_turn("Hi", 1), true, &Value::Null).unwrap();
        assert_eq!(
            s,
            "<|begin_of_text|>User:<image>Hi<end_of_utterance>\nAssistant:"
        );
    }

    #[test]
    fn expansion_matches_the_processor() {
        assert_eq!(
            image_prompt(0, 0, 2),
            "<fake_token_around_image><global-img><image><image><fake_token_around_image>"
        );
        let s = image_prompt(1, 2, 1);
        assert_eq!(
            s,
            "<fake_token_around_image><row_1_col_1><image><fake_token_around_image><row_1_col_2><image>\n\n<fake_token_around_image><global-img><image><fake_token_around_image>"
        );
        let e = expand_images("a<image>b", &[(0, 0), (0, 0)], 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("1 <image> marker") && e.contains("2 image"),
            "{e}"
        );
    }

    #[test]
    fn malformed_messages_are_named() {
        let e = count_image_items(&serde_json::json!([{"content": []}]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("message 0") && e.contains("role"), "{e}");
        let e = count_image_items(
            &serde_json::json!([{"role": "user", "content": [{"type": "video"}]}]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("item 0"), "{e}");
        assert!(count_image_items(&serde_json::json!({"role": "user"})).is_err());
    }
}
