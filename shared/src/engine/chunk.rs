//! Splits a reply into chunks that fit a platform's per-message limit.

/// Characters per Slack message: Slack truncates `text` past 40,000 and
/// recommends at most 4,000.
pub const SLACK_TEXT_LIMIT: usize = 4000;

/// Splits `text` into ordered chunks of at most `max_chars` characters each.
///
/// Prefers to break after a paragraph, then after a line, then after a space,
/// and only cuts inside a word when a single word is longer than the limit.
/// Joining the chunks gives back `text` exactly.
pub fn chunk(text: &str, max_chars: usize) -> Vec<String> {
    assert!(
        max_chars > 0,
        "a chunk limit of zero can never fit any text"
    );
    let mut chunks = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let Some((limit_byte, _)) = rest.char_indices().nth(max_chars) else {
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

#[cfg(test)]
mod tests {
    use super::chunk;

    #[test]
    fn short_text_is_one_chunk() {
        assert_eq!(chunk("hello", 10), vec!["hello"]);
    }

    #[test]
    fn empty_text_has_no_chunks() {
        assert!(chunk("", 10).is_empty());
    }

    #[test]
    fn text_of_exactly_the_limit_is_one_chunk() {
        assert_eq!(chunk("abcde", 5), vec!["abcde"]);
    }

    #[test]
    fn breaks_after_paragraph_before_line_or_space() {
        let text = "one two\nthree\n\nfour five";
        assert_eq!(chunk(text, 18), vec!["one two\nthree\n\n", "four five"]);
    }

    #[test]
    fn breaks_after_line_when_no_paragraph_fits() {
        assert_eq!(chunk("aaa bbb\nccc ddd", 10), vec!["aaa bbb\n", "ccc ddd"]);
    }

    #[test]
    fn breaks_at_space_when_no_newline() {
        assert_eq!(chunk("aaa bbb ccc", 8), vec!["aaa bbb ", "ccc"]);
    }

    #[test]
    fn cuts_a_word_longer_than_the_limit() {
        assert_eq!(chunk("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
    }

    #[test]
    fn counts_characters_not_bytes() {
        let text = "øæå".repeat(3);
        let chunks = chunk(&text, 4);
        assert_eq!(chunks, vec!["øæåø", "æåøæ", "å"]);
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
        for limit in [1, 7, 100, 2000, 4000, 4096] {
            let chunks = chunk(&text, limit);
            assert!(
                chunks
                    .iter()
                    .all(|c| c.chars().count() <= limit && !c.is_empty())
            );
            assert_eq!(chunks.concat(), text);
        }
    }
}
