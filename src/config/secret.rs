//! Secrets (upstream keys, client keys, the admin key) and how config values become secrets.
//!
//! Invariant: a `Secret` never prints itself. `Debug` and `Display` show only the masked form,
//! so a `{:?}` of the whole `Config` in a log or a panic message leaks nothing; `expose` is the
//! one way to read the value, and every call site of it is a place that sends or compares a key.

use std::fmt;
use std::path::{Path, PathBuf};

use super::ConfigError;

/// A secret string. Cloned freely (keys are small); compared with `ct_eq`, never `==`.
#[derive(Clone)]
pub struct Secret(String);

/// Secrets shorter than this are masked whole: showing 4 characters of a 6-character test key
/// would reveal most of it.
const MIN_LEN_TO_SHOW_TAIL: usize = 8;
/// How many trailing characters the masked form shows (enough to tell keys apart in logs).
const SHOWN_TAIL: usize = 4;

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself. Call it only where the key is sent upstream or compared.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `"…"` plus the last 4 characters, or just `"…"` for secrets under 8 characters.
    /// This is the only form of a key that status pages, logs and `rotor check` show.
    pub fn masked(&self) -> String {
        let count = self.0.chars().count();
        if count < MIN_LEN_TO_SHOW_TAIL {
            return "…".to_string();
        }
        let tail: String = self.0.chars().skip(count - SHOWN_TAIL).collect();
        format!("…{tail}")
    }

    /// Equality in time that depends only on `candidate`'s length, never on where the first
    /// differing byte is: client-key checks must not let a caller guess a key byte by byte.
    /// (The secret's length may still show in timing; keys are long and random, so it does not
    /// narrow a guess usefully.)
    pub fn ct_eq(&self, candidate: &[u8]) -> bool {
        let secret = self.0.as_bytes();
        // Another length: the candidate is compared with itself instead, the same work for the
        // same candidate (only the secret's length, already public above, picks the branch).
        let (other, mismatch) = if secret.len() == candidate.len() {
            (secret, 0)
        } else {
            (candidate, 1)
        };
        std::hint::black_box(xor_fold(other, candidate) | mismatch) == 0
    }
}

/// The OR of `a[i] ^ b[i]` over equal-length slices, eight bytes at a time: zero exactly when
/// they are equal, and no early exit (the byte-wise loop with a `%` per byte cost 205
/// instructions a request on a 16-byte client key: callgrind, issue 18).
fn xor_fold(a: &[u8], b: &[u8]) -> u64 {
    let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .fold(0, |d, (x, y)| d | u64::from(x ^ y));
    a8.zip(b8).fold(tail, |d, (x, y)| d | (word(x) ^ word(y)))
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.masked())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Where secret references are looked up: the environment (injectable, so tests never mutate
/// the process environment) and the directory that relative `file:` paths start from.
pub(crate) struct Resolver<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// The config file's directory; `None` = the working directory.
    pub base_dir: Option<&'a Path>,
}

impl Resolver<'_> {
    /// Turns a config value into a secret: `env:NAME` reads the variable, `file:PATH` reads the
    /// file (trimmed, so a trailing newline is not part of the key), anything else is literal.
    /// `key_path` (e.g. `providers[0].keys[1]`) goes into every error so the user knows which
    /// line to fix; the secret itself never does.
    pub fn secret(&self, raw: &str, key_path: &str) -> Result<Secret, ConfigError> {
        self.resolve(raw, key_path, false)
    }

    /// `secret` for a multi-line document (a service-account JSON key): line breaks and tabs
    /// are allowed, other control characters are not. Never sent as a header.
    pub fn document(&self, raw: &str, key_path: &str) -> Result<Secret, ConfigError> {
        self.resolve(raw, key_path, true)
    }

    fn resolve(&self, raw: &str, key_path: &str, multiline: bool) -> Result<Secret, ConfigError> {
        let value = if let Some(name) = raw.strip_prefix("env:") {
            let name = name.trim();
            match (self.env)(name) {
                Some(v) => v.trim().to_string(),
                None => {
                    return Err(ConfigError::at(
                        key_path,
                        format!("environment variable {name:?} is not set (referenced as \"env:{name}\")"),
                    ))
                }
            }
        } else if let Some(file) = raw.strip_prefix("file:") {
            let path = self.path(file.trim());
            match std::fs::read_to_string(&path) {
                Ok(text) => text.trim().to_string(),
                Err(e) => {
                    return Err(ConfigError::at(
                        key_path,
                        format!("cannot read secret file {}: {e}", path.display()),
                    ))
                }
            }
        } else {
            raw.to_string()
        };
        if value.is_empty() {
            return Err(ConfigError::at(key_path, "secret is empty"));
        }
        if value
            .bytes()
            .any(|b| b.is_ascii_control() && !(multiline && b"\n\r\t".contains(&b)))
        {
            // It would end up in an HTTP header; CR/LF there is header injection.
            return Err(ConfigError::at(key_path, "secret contains control characters"));
        }
        Ok(Secret(value))
    }

    /// A config-relative path: absolute paths as written, relative ones from `base_dir`.
    pub fn path(&self, raw: &str) -> PathBuf {
        let p = Path::new(raw);
        match self.base_dir {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let s = Secret::new("sk-live-0123456789abcdef");
        assert_eq!(s.masked(), "…cdef");
        assert_eq!(format!("{s}"), "…cdef");
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("sk-live"), "{dbg}");
        assert!(!dbg.contains("0123456789"), "{dbg}");
        let nested = format!("{:?}", vec![s.clone()]);
        assert!(!nested.contains("sk-live"));
    }

    #[test]
    fn short_secrets_are_masked_whole() {
        assert_eq!(Secret::new("abc").masked(), "…");
        assert_eq!(Secret::new("abcdefg").masked(), "…");
        assert_eq!(Secret::new("abcdefgh").masked(), "…efgh");
        assert_eq!(Secret::new("ключ-секрет").masked(), "…крет");
    }

    #[test]
    fn ct_eq_compares_exactly() {
        let s = Secret::new("demo-key");
        assert!(s.ct_eq(b"demo-key"));
        assert!(!s.ct_eq(b"demo-kez"));
        assert!(!s.ct_eq(b"demo-key-longer"));
        assert!(!s.ct_eq(b"demo"));
        assert!(!s.ct_eq(b""));
        assert!(!s.ct_eq(b"demo-keydemo-key"), "a repeat of the key is not the key");
        assert!(Secret::new("").ct_eq(b""));
        assert!(!Secret::new("").ct_eq(b"x"));
    }

    #[test]
    fn ct_eq_finds_a_difference_at_every_position_of_every_length() {
        for len in 0..40 {
            let key: String = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            let s = Secret::new(key.as_str());
            assert!(s.ct_eq(key.as_bytes()), "{key}");
            for at in 0..len {
                let mut other = key.clone().into_bytes();
                other[at] ^= 0x20;
                assert!(!s.ct_eq(&other), "{key} at {at}");
            }
            let longer = format!("{key}a");
            assert!(!s.ct_eq(longer.as_bytes()), "{key} with one more byte");
            if let Some(shorter) = key.as_bytes().get(..len.wrapping_sub(1)) {
                assert!(!s.ct_eq(shorter), "{key} without its last byte");
            }
        }
    }

    #[test]
    fn env_reference_resolves_or_names_the_variable() {
        let env = |n: &str| (n == "K").then(|| "  value-from-env \n".to_string());
        let r = Resolver {
            env: &env,
            base_dir: None,
        };
        assert_eq!(r.secret("env:K", "x").unwrap().expose(), "value-from-env");
        let err = r.secret("env:MISSING_VAR", "clients[0].key").unwrap_err().0;
        assert!(err.contains("clients[0].key"), "{err}");
        assert!(err.contains("MISSING_VAR"), "{err}");
    }

    #[test]
    fn file_reference_is_relative_to_base_dir_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k.txt"), "sk-from-file-1234\n").unwrap();
        let r = Resolver {
            env: &no_env,
            base_dir: Some(dir.path()),
        };
        assert_eq!(r.secret("file:k.txt", "x").unwrap().expose(), "sk-from-file-1234");
        let err = r.secret("file:nope.txt", "server.admin_key").unwrap_err().0;
        assert!(err.contains("server.admin_key") && err.contains("nope.txt"), "{err}");
    }

    #[test]
    fn literal_empty_and_control_chars() {
        let r = Resolver {
            env: &no_env,
            base_dir: None,
        };
        assert_eq!(r.secret("plain-literal", "x").unwrap().expose(), "plain-literal");
        assert!(r.secret("", "p").unwrap_err().0.contains("empty"));
        let err = r.secret("bad\r\nkey", "p").unwrap_err().0;
        assert!(err.contains("control") && !err.contains("bad"), "{err}");
    }
}
