//! Token secrets: their SHA-256 digests (the only form the daemon keeps),
//! new random tokens for `fixgate token`, and reading a token from a file or
//! from systemd's credentials directory.
//!
//! Tokens are random (32 bytes from the system's generator in what
//! `fixgate token` makes), so a single unsalted SHA-256 is enough: there is
//! no dictionary to run against the digest, and a request costs one hash.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use subtle::ConstantTimeEq;

/// Random bytes in a token made by [`generate`].
pub const TOKEN_BYTES: usize = 32;
/// Shortest token accepted from a file or a credential: 16 characters of a
/// random token are 96 bits and more.
pub const MIN_TOKEN_CHARS: usize = 16;
/// Longest token accepted anywhere; longer ones are malformed, so a client
/// cannot make the daemon hash megabytes.
pub const MAX_TOKEN_CHARS: usize = 512;
/// The environment variable systemd sets to the service's credentials
/// directory (`LoadCredential=`).
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// The SHA-256 of a token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `token` as presented (its bytes, nothing trimmed).
    pub fn of(token: &str) -> Self {
        let hashed = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(hashed.as_ref());
        Self(out)
    }

    /// Reads `sha256:<64 hex digits>`, as the config holds it.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let hex = text.strip_prefix("sha256:").ok_or(SecretError::HashForm)?;
        if hex.len() != 64 {
            return Err(SecretError::HashForm);
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = hex.get(2 * i..2 * i + 2).ok_or(SecretError::HashForm)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| SecretError::HashForm)?;
        }
        Ok(Self(out))
    }

    /// Compares in constant time: how much of a guess was right does not
    /// show in how long the answer takes.
    pub fn same(&self, other: &Digest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Display for Digest {
    /// `sha256:<hex>`, the form the config takes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a token could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// `hash` is not `sha256:` and 64 hex digits.
    #[error("must be \"sha256:\" followed by 64 hex digits (`fixgate token` prints one)")]
    HashForm,
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Others may read the file.
    #[error(
        "{path} is readable by every user (mode {mode:04o}): make it 0640 or 0600 (chmod o-rwx), or use a systemd credential"
    )]
    WorldReadable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file holds no usable token.
    #[error(
        "{path}: {why} (a token is one line of {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} printable ASCII characters without spaces; `fixgate token` makes one)"
    )]
    Content {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (never the token itself).
        why: &'static str,
    },
    /// `credential =` outside systemd.
    #[error(
        "${CREDENTIALS_DIRECTORY} is not set: `credential` tokens are read from systemd's LoadCredential= (the service sets it); to run by hand, set {CREDENTIALS_DIRECTORY}=/etc/fixgate/tokens or use `file =`"
    )]
    NoCredentials,
    /// The system's random generator failed.
    #[error("the system's random generator failed")]
    Random,
}

/// What a presented token is checked against before it is hashed: not
/// empty, at most [`MAX_TOKEN_CHARS`] bytes, no control characters. (Tokens
/// `fixgate token` makes are base64url; the deprecated `http.token` may hold
/// any text, spaces included, so nothing stricter is asked of a request.)
pub fn well_formed(token: &str) -> Result<(), &'static str> {
    if token.is_empty() {
        return Err("empty");
    }
    if token.len() > MAX_TOKEN_CHARS {
        return Err("too long");
    }
    if token.chars().any(char::is_control) {
        return Err("a control character");
    }
    Ok(())
}

/// A new random token: 32 bytes from the system's generator, base64url
/// without padding (43 characters, safe in headers and URLs as it is).
pub fn generate() -> Result<String, SecretError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; TOKEN_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SecretError::Random)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The digest of the token in the file at `path`, which must not be
/// readable by every user. One line; surrounding whitespace (the final
/// newline an editor adds) is not part of the token.
pub fn from_file(path: &Path) -> Result<Digest, SecretError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| SecretError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o004 != 0 {
        return Err(SecretError::WorldReadable {
            path: path.to_owned(),
            mode,
        });
    }
    read_token(path)
}

/// The digest of the credential `name` in `$CREDENTIALS_DIRECTORY`
/// (`LoadCredential=name:/etc/fixgate/tokens/name` in the unit). systemd
/// makes those files readable by the service alone, so their mode is not
/// checked.
pub fn from_credential(name: &str) -> Result<Digest, SecretError> {
    let dir = std::env::var_os(CREDENTIALS_DIRECTORY).ok_or(SecretError::NoCredentials)?;
    read_token(&Path::new(&dir).join(name))
}

fn read_token(path: &Path) -> Result<Digest, SecretError> {
    let content = |why| SecretError::Content {
        path: path.to_owned(),
        why,
    };
    // A token file is tiny; a large one is a mistake, not a token.
    let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
        path: path.to_owned(),
        source,
    })?;
    if bytes.len() > 4 * MAX_TOKEN_CHARS {
        return Err(content("the file is too large to hold a token"));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| content("not text"))?;
    let token = text.trim();
    if token.lines().count() > 1 {
        return Err(content("more than one line"));
    }
    well_formed(token).map_err(content)?;
    // Stricter than a request's: a token written for this daemon has no
    // reason to hold anything a header or a query would need escaped.
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(content("a space or a character other than printable ASCII"));
    }
    if token.len() < MIN_TOKEN_CHARS {
        return Err(content("too short"));
    }
    Ok(Digest::of(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_digest_reads_back_as_written_and_compares_by_value() {
        // printf %s abc | sha256sum
        let abc = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let d = Digest::of("abc");
        assert_eq!(d.to_string(), abc);
        assert_eq!(Digest::parse(abc).unwrap(), d);
        assert!(d.same(&Digest::parse(abc).unwrap()));
        assert!(!d.same(&Digest::of("abd")));
        assert!(format!("{d:?}").starts_with("sha256:ba78"));
        for bad in [
            "ba7816bf",
            "sha256:ba78",
            "md5:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "sha256:za7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015adff",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_tokens_are_43_url_safe_characters_and_differ() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert!(well_formed(&a).is_ok());
    }

    #[test]
    fn a_token_file_must_not_be_world_readable_and_must_hold_one_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.token");
        let token = "0123456789abcdefXYZ";
        std::fs::write(&path, format!("{token}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = from_file(&path).unwrap_err().to_string();
        assert!(err.contains("readable by every user (mode 0644)"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(from_file(&path).unwrap(), Digest::of(token));
        for (bad, why) in [
            ("tiny1\n", "too short"),
            ("one\ntwo-two-two-two\n", "more than one line"),
            ("has a space in the middle\n", "printable ASCII"),
            ("naïve-naïve-naïve-naïve\n", "printable ASCII"),
            ("\n", "empty"),
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = from_file(&path).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
            // The message never quotes what the file holds.
            assert!(!err.contains(bad.trim()) || bad.trim().is_empty(), "{err}");
        }
        let err = from_file(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, SecretError::Read { .. }));
    }

    #[test]
    fn tokens_are_printable_ascii_of_bounded_length() {
        assert!(well_formed("abc+/=~._-").is_ok());
        // The deprecated http.token may hold spaces.
        assert!(well_formed("a b").is_ok());
        assert_eq!(well_formed(""), Err("empty"));
        assert_eq!(well_formed(&"x".repeat(513)), Err("too long"));
        assert_eq!(well_formed("tab\there"), Err("a control character"));
        assert_eq!(well_formed("new\nline"), Err("a control character"));
    }
}
