//! Secrets (passwords, tokens) kept only as their SHA-256 digest, and read
//! from the three places a configuration may point to: the digest itself
//! (`*_hash = "sha256:<hex>"`), a file (`*_file`), or a systemd credential
//! (`*_credential`, from `LoadCredential=`). Nothing here prints a secret:
//! a digest shows as `sha256:…` in `Debug`, and errors name the place, never
//! what it holds.

use std::fmt;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// The prefix of a written digest.
const SHA256: &str = "sha256:";

/// Shortest secret accepted from a file or credential, as for secrets
/// written in the configuration: the embedded broker and the HTTP intake
/// answer guesses quickly.
pub const MIN_SECRET_CHARS: usize = 8;

/// A secret's SHA-256 digest: what is kept in memory and compared, so the
/// secret itself is in no structure a log line could print.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SecretHash([u8; 32]);

/// Why a secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// A `*_hash` value is not `sha256:` and 64 hex digits.
    #[error(
        "must be \"sha256:\" followed by 64 hex digits (e.g. from `printf %s SECRET | sha256sum`)"
    )]
    BadHash,
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds something other than UTF-8 text.
    #[error("{0} is not UTF-8 text")]
    NotText(PathBuf),
    /// The secret in the file is too short (its length is not told).
    #[error("the secret in {0} is shorter than {MIN_SECRET_CHARS} characters")]
    TooShort(PathBuf),
    /// A credential was named but the service manager gave none.
    #[error(
        "$CREDENTIALS_DIRECTORY is not set: credentials come from systemd's LoadCredential= \
         (run check-config under the unit, e.g. `systemd-run -P -p LoadCredential=…`, or use a file)"
    )]
    NoCredentials,
    /// A credential name that is not a plain file name.
    #[error("a credential name must be a plain file name (no `/`, not `.` or `..`)")]
    BadCredentialName,
}

impl SecretHash {
    /// The digest of `secret`.
    pub fn of(secret: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, secret);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }

    /// A digest as written in a configuration: `sha256:` and 64 hex digits
    /// (either case).
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let hex = text.strip_prefix(SHA256).ok_or(SecretError::BadHash)?;
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return Err(SecretError::BadHash);
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let high = nibble(pair[0]).ok_or(SecretError::BadHash)?;
            let low = nibble(pair[1]).ok_or(SecretError::BadHash)?;
            *byte = high << 4 | low;
        }
        Ok(Self(out))
    }

    /// Whether `given` is the secret, compared in constant time (both sides
    /// are digests of the same length, whatever was given).
    pub fn verify(&self, given: &[u8]) -> bool {
        Self::of(given).0.ct_eq(&self.0).into()
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Even a digest helps an offline guess: it is not printed.
        f.write_str("SecretHash(sha256:…)")
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The digest of the secret in `path`: the whole file, less one trailing
/// line end (what `echo` and editors add).
pub fn from_file(path: &Path) -> Result<SecretHash, SecretError> {
    let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| SecretError::NotText(path.to_owned()))?;
    let secret = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if secret.chars().count() < MIN_SECRET_CHARS {
        return Err(SecretError::TooShort(path.to_owned()));
    }
    Ok(SecretHash::of(secret.as_bytes()))
}

/// The file of systemd credential `name` under `directory` (the service's
/// `$CREDENTIALS_DIRECTORY`; `None` outside a unit that loads credentials).
pub fn credential_path(directory: Option<&Path>, name: &str) -> Result<PathBuf, SecretError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(SecretError::BadCredentialName);
    }
    let directory = directory.ok_or(SecretError::NoCredentials)?;
    Ok(directory.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `printf %s 's3cret-pass' | sha256sum`
    const S3CRET: &str = "sha256:926d3a2dd68393416b7a8348aaadfe4e0c56de6259e17078a0fa1f4dd6e519ae";

    #[test]
    fn a_written_digest_verifies_its_secret_only() {
        let hash = SecretHash::of(b"s3cret-pass");
        assert!(hash.verify(b"s3cret-pass"));
        assert!(!hash.verify(b"s3cret-pasS"));
        assert!(!hash.verify(b""));
        let upper = format!("sha256:{}", S3CRET[7..].to_uppercase());
        assert_eq!(
            SecretHash::parse(&upper).unwrap(),
            SecretHash::parse(S3CRET).unwrap()
        );
    }

    #[test]
    fn malformed_digests_are_refused() {
        for bad in [
            "",
            "926d3a2dd68393416b7a8348aaadfe4e0c56de6259e17078a0fa1f4dd6e519ae",
            "sha256:",
            "sha256:926d",
            "sha512:926d3a2dd68393416b7a8348aaadfe4e0c56de6259e17078a0fa1f4dd6e519ae",
            "sha256:926d3a2dd68393416b7a8348aaadfe4e0c56de6259e17078a0fa1f4dd6e519ag",
            "sha256:926d3a2dd68393416b7a8348aaadfe4e0c56de6259e17078a0fa1f4dd6e519ae ",
            "sha256:é26d3a2dd68393416b7a8348aaadfe4e0c56de6259e17078a0fa1f4dd6e519a",
        ] {
            assert!(SecretHash::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nothing_secret_is_printed() {
        let hash = SecretHash::parse(S3CRET).unwrap();
        let shown = format!("{hash:?}");
        assert!(!shown.contains("926d"), "{shown}");
    }

    #[test]
    fn a_file_gives_its_secret_without_the_line_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        for written in ["s3cret-pass", "s3cret-pass\n", "s3cret-pass\r\n"] {
            std::fs::write(&path, written).unwrap();
            let hash = from_file(&path).unwrap();
            assert!(hash.verify(b"s3cret-pass"), "{written:?}");
        }
        std::fs::write(&path, "short\n").unwrap();
        let err = from_file(&path).unwrap_err();
        assert!(matches!(err, SecretError::TooShort(_)));
        assert!(!err.to_string().contains("short\n"));
        assert!(matches!(
            from_file(&dir.path().join("absent")),
            Err(SecretError::Read { .. })
        ));
        std::fs::write(
            &path,
            [0xff, 0xfe, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47],
        )
        .unwrap();
        assert!(matches!(from_file(&path), Err(SecretError::NotText(_))));
    }

    #[test]
    fn credentials_are_plain_names_under_the_directory() {
        let dir = Path::new("/run/credentials/fixgate.service");
        assert_eq!(
            credential_path(Some(dir), "mqtt-bus-1").unwrap(),
            dir.join("mqtt-bus-1")
        );
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert!(matches!(
                credential_path(Some(dir), bad),
                Err(SecretError::BadCredentialName)
            ));
        }
        assert!(matches!(
            credential_path(None, "mqtt-bus-1"),
            Err(SecretError::NoCredentials)
        ));
    }
}
