//! Splits a reply into chunks that fit a platform's per-message limit.

/// How a platform counts the length of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Unicode scalar values (Slack, Discord).
    Chars,
    /// UTF-16 code units (Telegram): characters outside the BMP count twice.
    Utf16,
}

impl Measure {
    fn of(self, c: char) -> usize {
        match self {
            Self::Chars => 1,
            Self::Utf16 => c.len_utf16(),
        }
    }

    /// The length of `text` in this measure.
    pub fn len(self, text: &str) -> usize {
        text.chars().map(|c| self.of(c)).sum()
    }
}

/// A platform's limit on one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimit {
    /// Largest length of one message.
    pub max: usize,
    /// How length is counted.
    pub measure: Measure,
}

/// Slack truncates `text` past 40,000 characters and recommends at most 4,000.
pub const SLACK_LIMIT: MessageLimit = MessageLimit {
    max: 4000,
    measure: Measure::Chars,
};

/// Discord rejects message content over 2,000 characters.
pub const DISCORD_LIMIT: MessageLimit = MessageLimit {
    max: 2000,
    measure: Measure::Chars,
};

/// Telegram rejects message text over 4,096 UTF-16 code units.
pub const TELEGRAM_LIMIT: MessageLimit = MessageLimit {
    max: 4096,
    measure: Measure::Utf16,
};

/// The chat page takes what Slack takes whole.
pub const WEB_LIMIT: MessageLimit = MessageLimit {
    max: 40_000,
    measure: Measure::Chars,
};

/// Splits `text` into ordered chunks that each fit `limit`.
///
/// Prefers to break after a paragraph, then after a line, then after a space,
/// and only cuts inside a word when a single word is longer than the limit.
/// Joining the chunks gives back `text` exactly.
pub fn chunk(text: &str, limit: MessageLimit) -> Vec<String> {
    assert!(
        limit.max >= 2,
        "a chunk limit below 2 cannot fit every character"
    );
    let mut chunks = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let Some(limit_byte) = first_byte_past(rest, limit) else {
            chunks.push(rest.to_owned());
            break;
        };
        let window = &rest[..limit_byte];
        let cut = ["\n\n", "\n", " "]
            .iter()
            .find_map(|sep| window.rfind(sep).map(|at| at + sep.len()))
            .filter(|&at| at > 0)
            .unwrap_or(limit_byte);
        chunks.push(rest[..cut].to_owned());
        rest = &rest[cut..];
    }
    chunks
}

/// The byte index of the first character that would push `text` past the
/// limit, or `None` when all of it fits.
fn first_byte_past(text: &str, limit: MessageLimit) -> Option<usize> {
    let mut used = 0;
    for (at, c) in text.char_indices() {
        used += limit.measure.of(c);
        if used > limit.max {
            return Some(at);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(max: usize) -> MessageLimit {
        MessageLimit {
            max,
            measure: Measure::Chars,
        }
    }

    #[test]
    fn short_text_is_one_chunk() {
        assert_eq!(chunk("hello", chars(10)), vec!["hello"]);
    }

    #[test]
    fn empty_text_has_no_chunks() {
        assert!(chunk("", chars(10)).is_empty());
    }

    #[test]
    fn text_of_exactly_the_limit_is_one_chunk() {
        assert_eq!(chunk("abcde", chars(5)), vec!["abcde"]);
    }

    #[test]
    fn breaks_after_paragraph_before_line_or_space() {
        let text = "one two\nthree\n\nfour five";
        assert_eq!(
            chunk(text, chars(18)),
            vec!["one two\nthree\n\n", "four five"]
        );
    }

    #[test]
    fn breaks_after_line_when_no_paragraph_fits() {
        assert_eq!(
            chunk("aaa bbb\nccc ddd", chars(10)),
            vec!["aaa bbb\n", "ccc ddd"]
        );
    }

    #[test]
    fn breaks_at_space_when_no_newline() {
        assert_eq!(chunk("aaa bbb ccc", chars(8)), vec!["aaa bbb ", "ccc"]);
    }

    #[test]
    fn cuts_a_word_longer_than_the_limit() {
        assert_eq!(chunk("abcdefghij", chars(4)), vec!["abcd", "efgh", "ij"]);
    }

    #[test]
    fn counts_characters_not_bytes() {
        let text = "øæå".repeat(3);
        let chunks = chunk(&text, chars(4));
        assert_eq!(chunks, vec!["øæåø", "æåøæ", "å"]);
    }

    #[test]
    fn utf16_counts_astral_characters_twice() {
        let limit = MessageLimit {
            max: 4,
            measure: Measure::Utf16,
        };
        assert_eq!(chunk("😀😀😀", limit), vec!["😀😀", "😀"]);
        assert_eq!(Measure::Utf16.len("a😀"), 3);
        assert_eq!(Measure::Chars.len("a😀"), 2);
    }

    #[test]
    fn platform_limits_hold_for_long_replies() {
        let text = "Kvittering 🧾 mangler. ".repeat(600);
        for limit in [SLACK_LIMIT, DISCORD_LIMIT, TELEGRAM_LIMIT] {
            let chunks = chunk(&text, limit);
            assert!(chunks.len() > 1);
            assert!(chunks.iter().all(|c| limit.measure.len(c) <= limit.max));
            assert_eq!(chunks.concat(), text);
        }
    }

    #[test]
    fn every_chunk_fits_and_joins_back_to_the_text() {
        let text: String = (0..5000)
            .map(|i| match i % 17 {
                0 => '\n',
                5 | 11 => ' ',
                _ => char::from(b'a' + (i % 26) as u8),
            })
            .collect();
        for max in [2, 7, 100, 2000, 4000, 4096] {
            for measure in [Measure::Chars, Measure::Utf16] {
                let limit = MessageLimit { max, measure };
                let chunks = chunk(&text, limit);
                assert!(
                    chunks
                        .iter()
                        .all(|c| measure.len(c) <= max && !c.is_empty())
                );
                assert_eq!(chunks.concat(), text);
            }
        }
    }
}
