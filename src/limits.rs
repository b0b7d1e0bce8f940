//! Bounds on what strangers' inputs may make the engine do, checked before the work they would
//! cause. Each is stated in README.md ("Limits") with what exceeding it prints.

/// The largest conversation: the `--chat` file, the C API's `chat_json`, or a `--prompt` / `prompt`
/// text, in bytes (4 MiB: several times a 131,072-token context's worth of text).
pub const MAX_CONVERSATION_BYTES: usize = 4 << 20;

/// The most messages in a conversation.
pub const MAX_MESSAGES: usize = 10_000;

/// The most content items (text and image) over all messages of a conversation.
pub const MAX_CONTENT_ITEMS: usize = 100_000;

/// minijinja's fuel for one rendering: each instruction costs one, and every 64 bytes of string,
/// list slots or output that the template creates cost one more, so this bounds the time a
/// template can take (10⁷ instructions); the size of each value it builds is bounded by
/// [`MAX_TEMPLATE_STRING_BYTES`] and [`MAX_TEMPLATE_LIST_ITEMS`].
pub const TEMPLATE_FUEL: u64 = 10_000_000;

/// The longest string a chat template may build (by `+`, `~`, `*`, `join`, `replace`, `format`,
/// `indent`, `string`, `tojson`, `pprint`), in bytes: four times the largest conversation.
pub const MAX_TEMPLATE_STRING_BYTES: usize = 16 << 20;

/// The longest list a chat template may build (by `+` or `*`), in items.
pub const MAX_TEMPLATE_LIST_ITEMS: usize = 1_000_000;

/// The largest rendered prompt, in bytes.
pub const MAX_RENDERED_BYTES: usize = 8 << 20;

/// Refuses a conversation text (`what` names it) longer than [`MAX_CONVERSATION_BYTES`].
pub fn check_conversation_bytes(len: u64, what: &str) -> crate::error::Result<()> {
    if len > MAX_CONVERSATION_BYTES as u64 {
        return Err(crate::error::Error::input(format!(
            "{what} is {len} bytes long, more than the limit of {MAX_CONVERSATION_BYTES}"
        )));
    }
    Ok(())
}

/// Largest image file read, in bytes: checked from the file's size before it is read, so a huge file
/// costs nothing (an encoded image of Pillow's pixel limit is far smaller).
pub const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;
