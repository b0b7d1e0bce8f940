//! Incremental detokenization for streaming: text is released only when it no longer ends in an
//! incomplete character (a character may span several byte-level tokens).

use tokenizers::Tokenizer;

use crate::error::{Error, Result};

/// Turns generated ids into text pieces as they arrive.
pub struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl<'a> TextStream<'a> {
    /// A stream over `tokenizer` (special tokens are skipped).
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        TextStream {
            tokenizer,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| Error::input(format!("detokenization failed: {e}")))
    }

    /// Adds a token; returns the text that became complete, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let before = self.decode(&self.ids[self.prefix..self.read])?;
        let now = self.decode(&self.ids[self.prefix..])?;
        if now.len() > before.len() && !now.ends_with('\u{fffd}') {
            let piece = match now.get(before.len()..) {
                Some(p) if now.starts_with(&before) => p.to_string(),
                _ => now.chars().skip(before.chars().count()).collect(),
            };
            self.prefix = self.read;
            self.read = self.ids.len();
            Ok(Some(piece))
        } else {
            Ok(None)
        }
    }

    /// Releases whatever is left (an incomplete character included, as U+FFFD).
    pub fn finish(&mut self) -> Result<Option<String>> {
        let before = self.decode(&self.ids[self.prefix..self.read])?;
        let now = self.decode(&self.ids[self.prefix..])?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(now
            .get(before.len()..)
            .filter(|p| !p.is_empty())
            .map(str::to_string))
    }
}
