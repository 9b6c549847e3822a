//! What a received file is — told by its bytes, never by its name or the
//! platform's word — and the name it is kept and uploaded under (Fiken
//! takes names ending .png, .jpeg, .jpg, .gif or .pdf).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ids::TenantId;

/// How long a receipt link given to a reviewer works, in seconds.
pub const LINK_TTL_SECS: i64 = 600;

/// A link to a kept file, for one reviewer, until `expires` (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLink<'a> {
    /// Whose file.
    pub tenant: TenantId,
    /// Which file.
    pub sha256: &'a str,
    /// When the link stops working.
    pub expires: i64,
    /// The reviewer it was given to (`slack:<user id>`).
    pub reviewer: &'a str,
}

impl FileLink<'_> {
    fn mac(&self, secret: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(
            format!(
                "{}|{}|{}|{}",
                self.tenant, self.sha256, self.expires, self.reviewer
            )
            .as_bytes(),
        );
        mac
    }

    /// The link's signature (hex HMAC-SHA256 under `secret`).
    pub fn signature(&self, secret: &[u8]) -> String {
        hex::encode(self.mac(secret).finalize().into_bytes())
    }

    /// Whether `signature` is this link's (compared in constant time) and
    /// the link still works at `now` (and was not made to last longer).
    pub fn is_valid(&self, secret: &[u8], signature: &str, now: i64) -> bool {
        let Ok(signature) = hex::decode(signature) else {
            return false;
        };
        (now..=now + LINK_TTL_SECS).contains(&self.expires)
            && self.mac(secret).verify_slice(&signature).is_ok()
    }
}

/// A kind of file that is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileKind {
    /// Its MIME type.
    pub content_type: &'static str,
    /// The extension a name of it ends with.
    pub extension: &'static str,
}

/// The kinds of file that are read, as owners are told.
pub const READ_KINDS: &str = "PNG, JPEG, GIF or PDF";

/// Longest kept file name, in characters, extension included.
const MAX_NAME_CHARS: usize = 100;

/// The kind of file `bytes` are, by their signature; `None` for any other.
pub fn sniff(bytes: &[u8]) -> Option<FileKind> {
    let kind = |content_type, extension| {
        Some(FileKind {
            content_type,
            extension,
        })
    };
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        kind("image/png", "png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        kind("image/jpeg", "jpg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        kind("image/gif", "gif")
    } else if bytes.starts_with(b"%PDF-") {
        kind("application/pdf", "pdf")
    } else {
        None
    }
}

/// A safe name for a file of `kind` sent as `sent`: its stem in letters,
/// digits, `-` and `_` (anything else an `_`), ending in the kind's
/// extension.
pub fn kept_name(sent: &str, kind: FileKind) -> String {
    let base = sent.rsplit(['/', '\\']).next().unwrap_or(sent);
    let stem = match base.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => base,
    };
    let mut stem: String = stem
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_NAME_CHARS - kind.extension.len() - 1)
        .collect();
    if stem.trim_matches('_').is_empty() {
        stem = "receipt".to_owned();
    }
    format!("{stem}.{}", kind.extension)
}

/// What the owner is told of files that were not read: each by name, with
/// why.
pub fn notice_unread(files: &[(&str, &str)]) -> String {
    let list: Vec<String> = files
        .iter()
        .map(|(name, why)| format!("{name} ({why})"))
        .collect();
    format!(
        "I could not read {}: {}. Send receipts as {READ_KINDS} files of at most the size allowed.",
        if files.len() == 1 {
            "this file"
        } else {
            "these files"
        },
        list.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_the_bytes() {
        assert_eq!(
            sniff(b"\x89PNG\r\n\x1a\n....").unwrap().content_type,
            "image/png"
        );
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]).unwrap().extension, "jpg");
        assert_eq!(sniff(b"GIF89a..").unwrap().content_type, "image/gif");
        assert_eq!(
            sniff(b"%PDF-1.7\n").unwrap().content_type,
            "application/pdf"
        );
        for other in [
            &b"<html>"[..],
            b"PK\x03\x04",
            b"",
            b"\x00\x00\x00\x18ftypheic",
        ] {
            assert_eq!(sniff(other), None, "{other:?}");
        }
    }

    #[test]
    fn a_link_works_for_its_file_and_reviewer_until_it_expires() {
        let link = FileLink {
            tenant: TenantId::from(uuid::Uuid::nil()),
            sha256: "ab",
            expires: 1_000 + LINK_TTL_SECS,
            reviewer: "slack:W222",
        };
        let signature = link.signature(b"secret");
        assert!(link.is_valid(b"secret", &signature, 1_000));
        assert!(!link.is_valid(b"other", &signature, 1_000), "another key");
        assert!(
            !link.is_valid(b"secret", &signature, 1_000 + LINK_TTL_SECS + 1),
            "expired"
        );
        assert!(!link.is_valid(b"secret", "zz", 1_000), "not hex");
        for forged in [
            FileLink {
                sha256: "cd",
                ..link
            },
            FileLink {
                reviewer: "slack:W999",
                ..link
            },
            FileLink {
                expires: link.expires + 1,
                ..link
            },
        ] {
            assert!(!forged.is_valid(b"secret", &signature, 1_000), "{forged:?}");
        }
        // A link made to last longer than a link may is refused.
        let long = FileLink {
            expires: 1_000 + 10 * LINK_TTL_SECS,
            ..link
        };
        assert!(!long.is_valid(b"secret", &long.signature(b"secret"), 1_000));
    }

    #[test]
    fn kept_names_are_safe_and_end_in_the_kind() {
        let jpeg = sniff(&[0xFF, 0xD8, 0xFF]).unwrap();
        assert_eq!(kept_name("IMG_1234.JPG", jpeg), "IMG_1234.jpg");
        assert_eq!(kept_name("kvittering", jpeg), "kvittering.jpg");
        assert_eq!(kept_name("../../etc/passwd.png", jpeg), "passwd.jpg");
        assert_eq!(
            kept_name("faktura mars.pdf.exe", jpeg),
            "faktura_mars_pdf.jpg"
        );
        assert_eq!(kept_name("...", jpeg), "receipt.jpg");
        assert_eq!(
            kept_name(&"x".repeat(300), jpeg).chars().count(),
            MAX_NAME_CHARS
        );
    }
}
