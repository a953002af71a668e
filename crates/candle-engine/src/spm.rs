//! The SentencePiece tokenizer of GGUF files with `tokenizer.ggml.model =
//! llama` (llama-2, Gemma), behaving as llama.cpp's: special tokens written
//! in the text are split out first (longest first), every space becomes `▁`,
//! and each remaining piece starts as single characters that are merged
//! pairwise, always the adjacent pair whose concatenation is the vocabulary
//! token with the highest score (leftmost on ties), until no adjacent pair
//! forms a token. Characters left outside the vocabulary fall back to their
//! `<0xNN>` byte tokens.

use crate::{Error, Result};
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// What SentencePiece writes for a space.
const SPACE_MARK: char = '\u{2581}';

/// A token's role, from `tokenizer.ggml.token_type` (llama.cpp's numbering:
/// 0 undefined, 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
/// 6 byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Byte(u8),
    /// Unused and undefined tokens decode to nothing.
    Silent,
}

/// The vocabulary and flags of one SentencePiece GGUF tokenizer.
pub(crate) struct SpmTokenizer {
    tokens: TokenTable,
    scores: Vec<f32>,
    kinds: Vec<Kind>,
    /// Control, user-defined and unknown tokens, longest first: the order in
    /// which they are split out of the text.
    specials: Vec<u32>,
    special_trie: SpecialTrie,
    byte_tokens: [Option<u32>; 256],
    add_space_prefix: bool,
}

/// The keys `SpmTokenizer::new` reads, borrowed from the GGUF metadata.
pub(crate) struct SpmVocab<'a> {
    pub tokens: &'a [&'a str],
    /// Empty: every score is 0, as llama.cpp reads a file without scores.
    pub scores: &'a [f32],
    /// Empty: every token is normal.
    pub token_types: &'a [i32],
    pub add_space_prefix: bool,
}

fn invalid(what: String) -> Error {
    Error::Tokenizer(format!("SentencePiece vocabulary: {what}"))
}

impl SpmTokenizer {
    pub(crate) fn new(vocab: &SpmVocab<'_>) -> Result<Self> {
        let n = vocab.tokens.len();
        if u32::try_from(n).is_err() {
            return Err(invalid(format!("{n} tokens exceed the u32 id range")));
        }
        for (key, len) in [
            ("tokenizer.ggml.scores", vocab.scores.len()),
            ("tokenizer.ggml.token_type", vocab.token_types.len()),
        ] {
            if len != 0 && len != n {
                return Err(invalid(format!(
                    "{key} has {len} entries, expected one per token ({n})"
                )));
            }
        }
        let mut kinds = Vec::with_capacity(n);
        for (id, text) in vocab.tokens.iter().enumerate() {
            let kind = match vocab.token_types.get(id).copied().unwrap_or(1) {
                1 => Kind::Normal,
                2 => Kind::Unknown,
                3 => Kind::Control,
                4 => Kind::UserDefined,
                6 => Kind::Byte(parse_byte_token(text).ok_or_else(|| {
                    invalid(format!(
                        "byte token {id} is `{text}`, expected the form <0xNN>"
                    ))
                })?),
                _ => Kind::Silent,
            };
            kinds.push(kind);
        }
        let tokens = TokenTable::new(vocab.tokens);
        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&id| {
                matches!(
                    kinds[id as usize],
                    Kind::Control | Kind::UserDefined | Kind::Unknown
                )
            })
            .collect();
        // llama.cpp's sort leaves equal lengths in no defined order; ids
        // break the tie here, which only matters for overlapping specials
        // of equal length.
        specials.sort_by_key(|&id| std::cmp::Reverse(tokens.text(id).len()));
        let special_trie = SpecialTrie::new(&tokens, &specials);
        let mut byte_tokens = [None; 256];
        for (byte, slot) in byte_tokens.iter_mut().enumerate() {
            *slot = tokens.id(&format!("<0x{byte:02X}>")).or_else(|| {
                char::from_u32(byte as u32)
                    .filter(char::is_ascii)
                    .and_then(|c| tokens.id(c.encode_utf8(&mut [0; 4])))
            });
        }
        Ok(Self {
            scores: if vocab.scores.is_empty() {
                vec![0.0; n]
            } else {
                vocab.scores.to_vec()
            },
            tokens,
            kinds,
            specials,
            special_trie,
            byte_tokens,
            add_space_prefix: vocab.add_space_prefix,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.kinds.len()
    }

    pub(crate) fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokens.id(token)
    }

    pub(crate) fn id_to_token(&self, id: u32) -> Option<&str> {
        ((id as usize) < self.len()).then(|| self.tokens.text(id))
    }

    /// The ids of `text` without BOS/EOS; special tokens in the text become
    /// their ids.
    pub(crate) fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 1);
        let mut after_special = true;
        let mut piece = String::new();
        for fragment in self.split_specials(text) {
            match fragment {
                Fragment::Text(range) => {
                    piece.clear();
                    if self.add_space_prefix && after_special {
                        piece.push(SPACE_MARK);
                    }
                    piece.extend(
                        text[range]
                            .chars()
                            .map(|c| if c == ' ' { SPACE_MARK } else { c }),
                    );
                    self.encode_piece(&piece, &mut ids)?;
                    after_special = false;
                }
                Fragment::Token(id) => {
                    ids.push(id);
                    after_special = true;
                }
            }
        }
        Ok(ids)
    }

    /// Splits `text` at every occurrence of each special token in turn,
    /// longest token first, so a longer token wins over a shorter one that
    /// overlaps it wherever each occurs.
    fn split_specials(&self, text: &str) -> Vec<Fragment> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut fragments = vec![Fragment::Text(0..text.len())];
        // Only the specials that occur somewhere can split; finding them in
        // one pass spares a search of the whole text per special token.
        for rank in self.special_trie.ranks_in(text) {
            let id = self.specials[rank as usize];
            let special = self.tokens.text(id);
            let mut split = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                let Fragment::Text(range) = fragment else {
                    split.push(fragment);
                    continue;
                };
                let mut start = range.start;
                while let Some(at) = text[start..range.end].find(special) {
                    let at = start + at;
                    if at > start {
                        split.push(Fragment::Text(start..at));
                    }
                    split.push(Fragment::Token(id));
                    start = at + special.len();
                }
                if start < range.end {
                    split.push(Fragment::Text(start..range.end));
                }
            }
            fragments = split;
        }
        fragments
    }

    /// Merges the characters of `piece` (spaces already escaped) into
    /// tokens, appending their ids to `out`.
    fn encode_piece(&self, piece: &str, out: &mut Vec<u32>) -> Result<()> {
        let mut symbols: Vec<Symbol> = piece
            .char_indices()
            .map(|(start, c)| Symbol {
                start,
                len: c.len_utf8(),
            })
            .collect();
        let count = symbols.len();
        // Neighbours as a linked list over `symbols`; `NONE` ends it.
        let mut prev: Vec<usize> = (0..count).map(|i| i.wrapping_sub(1)).collect();
        let mut next: Vec<usize> = (1..=count)
            .map(|i| if i == count { NONE } else { i })
            .collect();
        let mut queue = BinaryHeap::new();
        let bigram = |symbols: &[Symbol], left: usize, right: usize| -> Option<Bigram> {
            if left == NONE || right == NONE {
                return None;
            }
            let start = symbols[left].start;
            let len = symbols[left].len + symbols[right].len;
            let id = self.tokens.id(&piece[start..start + len])?;
            Some(Bigram {
                score: self.scores[id as usize],
                left,
                right,
                len,
            })
        };
        for left in 1..count {
            queue.extend(bigram(&symbols, left - 1, left));
        }
        while let Some(Bigram {
            left, right, len, ..
        }) = queue.pop()
        {
            // A pair recorded before either side changed is stale.
            if symbols[left].len == 0
                || symbols[right].len == 0
                || symbols[left].len + symbols[right].len != len
            {
                continue;
            }
            symbols[left].len = len;
            symbols[right].len = 0;
            next[left] = next[right];
            if next[right] != NONE {
                prev[next[right]] = left;
            }
            queue.extend(bigram(&symbols, prev[left], left));
            queue.extend(bigram(&symbols, left, next[left]));
        }
        let mut at = if count == 0 { NONE } else { 0 };
        while at != NONE {
            let Symbol { start, len } = symbols[at];
            let text = &piece[start..start + len];
            match self.tokens.id(text) {
                Some(id) => out.push(id),
                None => {
                    for byte in text.bytes() {
                        out.push(self.byte_tokens[byte as usize].ok_or_else(|| {
                            Error::Tokenizer(format!(
                                "encode: `{text}` is not in the vocabulary and byte 0x{byte:02X} has no <0x{byte:02X}> token to fall back to"
                            ))
                        })?);
                    }
                }
            }
            at = next[at];
        }
        Ok(())
    }

    /// The text of `ids` as llama.cpp's `llama_detokenize` writes it:
    /// `render_special` shows control and unknown tokens; a leading
    /// `strip_bos` and a trailing `strip_eos` are dropped (llama.cpp does so
    /// when removing special tokens the model adds itself). The space prefix
    /// the encoder adds is removed from the first token unless a BOS was
    /// dropped before it. Byte tokens are gathered and read as UTF-8,
    /// invalid sequences becoming U+FFFD.
    pub(crate) fn decode(
        &self,
        mut ids: &[u32],
        render_special: bool,
        strip_bos: Option<u32>,
        strip_eos: Option<u32>,
    ) -> Result<String> {
        let mut strip_space = self.add_space_prefix;
        if let (Some(bos), Some((&first, rest))) = (strip_bos, ids.split_first()) {
            if first == bos {
                strip_space = false;
                ids = rest;
            }
        }
        if let (Some(eos), Some((&last, rest))) = (strip_eos, ids.split_last()) {
            if last == eos {
                ids = rest;
            }
        }
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            let index = id as usize;
            let kind = *self.kinds.get(index).ok_or_else(|| {
                Error::Tokenizer(format!(
                    "decode: token id {id} is outside the vocabulary of {} tokens",
                    self.len()
                ))
            })?;
            let start = bytes.len();
            let text = self.tokens.text(id);
            match kind {
                Kind::Control | Kind::Unknown if render_special => {
                    bytes.extend_from_slice(text.as_bytes())
                }
                Kind::UserDefined => bytes.extend_from_slice(text.as_bytes()),
                Kind::Normal => {
                    for c in text.chars() {
                        let c = if c == SPACE_MARK { ' ' } else { c };
                        bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                }
                Kind::Byte(byte) => bytes.push(byte),
                Kind::Control | Kind::Unknown | Kind::Silent => {}
            }
            if std::mem::take(&mut strip_space) && bytes.get(start) == Some(&b' ') {
                bytes.remove(start);
            }
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// Every token's text in one buffer, with an open-addressing index from
/// text to id: a 262k vocabulary loads in milliseconds, where a map of owned
/// strings costs two allocations per token.
struct TokenTable {
    text: String,
    /// Token `i` is `text[bounds[i]..bounds[i + 1]]`.
    bounds: Vec<usize>,
    /// Ids by hash of their text, `EMPTY_SLOT` where free; a power of two
    /// at least twice the vocabulary, so probe runs stay short.
    slots: Vec<u32>,
}

const EMPTY_SLOT: u32 = u32::MAX;

impl TokenTable {
    fn new(tokens: &[&str]) -> Self {
        let mut text = String::with_capacity(tokens.iter().map(|t| t.len()).sum());
        let mut bounds = Vec::with_capacity(tokens.len() + 1);
        bounds.push(0);
        for (id, token) in tokens.iter().enumerate() {
            if token.is_empty() {
                // llama.cpp renames empty tokens so that they never match.
                text.push_str(&format!("[EMPTY_{id}]"));
            } else {
                text.push_str(token);
            }
            bounds.push(text.len());
        }
        let mut table = Self {
            text,
            bounds,
            slots: vec![EMPTY_SLOT; (tokens.len() * 2).next_power_of_two().max(2)],
        };
        for id in 0..tokens.len() as u32 {
            let slot = table.probe(table.text(id));
            // A text that occurs twice maps to its last id, as in llama.cpp.
            table.slots[slot] = id;
        }
        table
    }

    fn text(&self, id: u32) -> &str {
        &self.text[self.bounds[id as usize]..self.bounds[id as usize + 1]]
    }

    fn id(&self, token: &str) -> Option<u32> {
        let id = self.slots[self.probe(token)];
        (id != EMPTY_SLOT).then_some(id)
    }

    /// The slot holding `token`, or the free slot where it would go.
    fn probe(&self, token: &str) -> usize {
        let mask = self.slots.len() - 1;
        let mut slot = fnv1a(token.as_bytes()) as usize & mask;
        loop {
            let id = self.slots[slot];
            if id == EMPTY_SLOT || self.text(id) == token {
                return slot;
            }
            slot = (slot + 1) & mask;
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        hash = (hash ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    // Fold the high bits in: the mask keeps only the low ones.
    hash ^ (hash >> 32)
}

/// A byte trie of the special tokens, to find which of them occur in a text
/// in one pass over it.
struct SpecialTrie {
    /// Per node: its children as (byte, node) pairs, and the rank (position
    /// in `SpmTokenizer::specials`) of the special ending there.
    children: Vec<Vec<(u8, u32)>>,
    ends: Vec<Option<u32>>,
}

impl SpecialTrie {
    fn new(tokens: &TokenTable, specials: &[u32]) -> Self {
        let mut trie = Self {
            children: vec![Vec::new()],
            ends: vec![None],
        };
        for (rank, &id) in specials.iter().enumerate() {
            let mut node = 0;
            for &byte in tokens.text(id).as_bytes() {
                node = match trie.child(node, byte) {
                    Some(child) => child,
                    None => {
                        let child = trie.children.len() as u32;
                        trie.children.push(Vec::new());
                        trie.ends.push(None);
                        trie.children[node as usize].push((byte, child));
                        child
                    }
                };
            }
            // Of two specials with the same text, the first in split order
            // is the one that splits.
            trie.ends[node as usize].get_or_insert(rank as u32);
        }
        trie
    }

    fn child(&self, node: u32, byte: u8) -> Option<u32> {
        self.children[node as usize]
            .iter()
            .find(|&&(b, _)| b == byte)
            .map(|&(_, child)| child)
    }

    /// The ranks of the specials occurring in `text`, in split order.
    fn ranks_in(&self, text: &str) -> Vec<u32> {
        let bytes = text.as_bytes();
        let mut ranks = Vec::new();
        for start in 0..bytes.len() {
            let mut node = 0;
            for &byte in &bytes[start..] {
                let Some(child) = self.child(node, byte) else {
                    break;
                };
                node = child;
                ranks.extend(self.ends[node as usize]);
            }
        }
        ranks.sort_unstable();
        ranks.dedup();
        ranks
    }
}

/// `<0xNN>` to the byte NN.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

const NONE: usize = usize::MAX;

enum Fragment {
    Text(std::ops::Range<usize>),
    Token(u32),
}

/// A run of the piece being merged; `len == 0` once merged into its left
/// neighbour.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
}

/// A candidate merge of two adjacent symbols into the token of `score`.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    /// Bytes of the merged text: a mismatch marks a stale candidate.
    len: usize,
}

impl Ord for Bigram {
    /// The heap pops the highest score first, the leftmost on ties.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer(entries: &[(&str, f32, i32)], add_space_prefix: bool) -> SpmTokenizer {
        let tokens: Vec<&str> = entries.iter().map(|e| e.0).collect();
        let scores: Vec<f32> = entries.iter().map(|e| e.1).collect();
        let types: Vec<i32> = entries.iter().map(|e| e.2).collect();
        SpmTokenizer::new(&SpmVocab {
            tokens: &tokens,
            scores: &scores,
            token_types: &types,
            add_space_prefix,
        })
        .unwrap()
    }

    #[test]
    fn the_best_scoring_pair_merges_first_and_ties_go_left() {
        // "abc": "ab" (-2) and "bc" (-1) compete; "bc" wins, leaving a+bc.
        let t = tokenizer(
            &[
                ("a", 0.0, 1),
                ("b", 0.0, 1),
                ("c", 0.0, 1),
                ("ab", -2.0, 1),
                ("bc", -1.0, 1),
            ],
            false,
        );
        assert_eq!(t.encode("abc").unwrap(), vec![0, 4]);
        // Equal scores: the leftmost pair merges, leaving ab+c.
        let t = tokenizer(
            &[
                ("a", 0.0, 1),
                ("b", 0.0, 1),
                ("c", 0.0, 1),
                ("ab", -1.0, 1),
                ("bc", -1.0, 1),
            ],
            false,
        );
        assert_eq!(t.encode("abc").unwrap(), vec![3, 2]);
    }

    #[test]
    fn unknown_characters_fall_back_to_byte_tokens() {
        let mut entries: Vec<(String, f32, i32)> = (0..=255u8)
            .map(|b| (format!("<0x{b:02X}>"), 0.0, 6))
            .collect();
        entries.push(("\u{2581}".into(), -1.0, 1));
        let borrowed: Vec<(&str, f32, i32)> = entries
            .iter()
            .map(|(t, s, k)| (t.as_str(), *s, *k))
            .collect();
        let t = tokenizer(&borrowed, true);
        // "é" is C3 A9 in UTF-8; the space prefix becomes ▁ (id 256).
        assert_eq!(t.encode("é").unwrap(), vec![256, 0xC3, 0xA9]);
        assert_eq!(
            t.decode(&[256, 0xC3, 0xA9], false, None, None).unwrap(),
            "é"
        );
        // A lone lead byte is not UTF-8 and reads as U+FFFD.
        assert_eq!(t.decode(&[0xC3], false, None, None).unwrap(), "\u{FFFD}");
    }

    #[test]
    fn a_missing_byte_token_is_an_error_not_a_panic() {
        let t = tokenizer(&[("a", 0.0, 1)], false);
        let err = t.encode("b").unwrap_err().to_string();
        assert!(err.contains("0x62"), "{err}");
        let err = t.decode(&[7], false, None, None).unwrap_err().to_string();
        assert!(
            err.contains("token id 7") && err.contains("1 tokens"),
            "{err}"
        );
    }

    #[test]
    fn malformed_vocabularies_are_rejected_with_the_key() {
        let tokens = ["a", "b"];
        let err = SpmTokenizer::new(&SpmVocab {
            tokens: &tokens,
            scores: &[0.0],
            token_types: &[],
            add_space_prefix: false,
        })
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("tokenizer.ggml.scores") && err.contains("1 entries"),
            "{err}"
        );
        let err = SpmTokenizer::new(&SpmVocab {
            tokens: &tokens,
            scores: &[],
            token_types: &[1, 6],
            add_space_prefix: false,
        })
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("byte token 1 is `b`"), "{err}");
    }

    #[test]
    fn longer_special_tokens_are_split_out_before_shorter_ones() {
        // "<a>" (control) starts first in "<a><b>", but the longer "a><b"
        // (user-defined) claims its bytes first, leaving "<" and ">".
        let t = tokenizer(
            &[
                ("<", 0.0, 1),
                (">", 0.0, 1),
                ("<a>", 0.0, 3),
                ("a><b", 0.0, 4),
            ],
            false,
        );
        assert_eq!(t.encode("<a><b>").unwrap(), vec![0, 3, 1]);
    }

    #[test]
    fn repeated_texts_map_to_the_last_id_and_empty_tokens_never_match() {
        let t = tokenizer(&[("a", 0.0, 1), ("", 0.0, 1), ("a", 0.0, 1)], false);
        assert_eq!(t.token_to_id("a"), Some(2));
        assert_eq!(t.token_to_id(""), None);
        assert_eq!(t.id_to_token(1), Some("[EMPTY_1]"));
        assert_eq!(t.id_to_token(3), None);
    }
}
