//! The ready line: the one line `shoald` prints on standard output once it serves, and the
//! only way a launching program (the test harness, the consistency-checker, a supervisor
//! script) learns the ports it bound.
//!
//! ```text
//! shoald ready native=127.0.0.1:7400 memcache=127.0.0.1:7401 peer=127.0.0.1:7402
//! shoald ready native=127.0.0.1:40123 memcache=off peer=127.0.0.1:40124
//! ```
//!
//! Lines of nodes from before the peer port (without `peer=`) still parse, with `peer` none.
//!
//! This module owns the line's format, both ways: [`ReadyLine`]'s `Display` writes it and
//! [`ReadyLine::parse`] reads it. It does not print it (`main.rs` does) nor wait for it (the
//! launchers do).

use std::fmt;
use std::net::SocketAddr;

/// The words the ready line starts with.
pub const PREFIX: &str = "shoald ready";

/// What the ready line says: the addresses the node serves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyLine {
    /// The native protocol address.
    pub native: SocketAddr,
    /// The memcached text protocol address, `None` when it is off (`memcache=off`).
    pub memcache: Option<SocketAddr>,
    /// The peer port address; `None` only in lines of older nodes, which had none.
    pub peer: Option<SocketAddr>,
}

/// Why a line is not a ready line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyLineError {
    /// The line does not start with [`PREFIX`].
    NotReady,
    /// The `native=` field is missing.
    MissingNative,
    /// The `memcache=` field is missing.
    MissingMemcache,
    /// A field's value is not an address (`memcache` may also be `off`).
    BadAddress {
        /// The field (`native` or `memcache`).
        field: &'static str,
        /// The text found.
        value: String,
    },
    /// A word that is not one of the fields, or a field given twice.
    Unexpected(String),
}

impl fmt::Display for ReadyLineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadyLineError::NotReady => write!(f, "the line does not start with {PREFIX:?}"),
            ReadyLineError::MissingNative => f.write_str("the ready line has no native= field"),
            ReadyLineError::MissingMemcache => f.write_str("the ready line has no memcache= field"),
            ReadyLineError::BadAddress { field, value } => {
                write!(f, "the ready line's {field}= is not an address: {value:?}")
            }
            ReadyLineError::Unexpected(word) => {
                write!(f, "unexpected word in the ready line: {word:?}")
            }
        }
    }
}

impl std::error::Error for ReadyLineError {}

impl fmt::Display for ReadyLine {
    /// `shoald ready native=ADDR memcache=ADDR|off peer=ADDR`, without a line end.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX} native={} memcache=", self.native)?;
        match self.memcache {
            Some(addr) => write!(f, "{addr}")?,
            None => f.write_str("off")?,
        }
        match self.peer {
            Some(addr) => write!(f, " peer={addr}"),
            None => Ok(()),
        }
    }
}

impl ReadyLine {
    /// Whether `line` claims to be a ready line (starts with [`PREFIX`]); a launcher skips
    /// other output with this, then [`parse`](ReadyLine::parse)s the one that does.
    pub fn is_ready_line(line: &str) -> bool {
        line.starts_with(PREFIX)
    }

    /// Reads a ready line (surrounding white space and a line end are ignored).
    ///
    /// # Errors
    /// A [`ReadyLineError`] saying what is wrong; never panics, whatever the input.
    pub fn parse(line: &str) -> Result<ReadyLine, ReadyLineError> {
        let rest = line
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(ReadyLineError::NotReady)?;
        if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
            return Err(ReadyLineError::NotReady);
        }
        let mut native = None;
        let mut memcache = None;
        let mut peer = None;
        for word in rest.split_whitespace() {
            if let Some(value) = word.strip_prefix("native=") {
                if native.is_some() {
                    return Err(ReadyLineError::Unexpected(word.to_string()));
                }
                native = Some(parse_addr("native", value)?);
            } else if let Some(value) = word.strip_prefix("memcache=") {
                if memcache.is_some() {
                    return Err(ReadyLineError::Unexpected(word.to_string()));
                }
                memcache = Some(if value == "off" {
                    None
                } else {
                    Some(parse_addr("memcache", value)?)
                });
            } else if let Some(value) = word.strip_prefix("peer=") {
                if peer.is_some() {
                    return Err(ReadyLineError::Unexpected(word.to_string()));
                }
                peer = Some(parse_addr("peer", value)?);
            } else {
                return Err(ReadyLineError::Unexpected(word.to_string()));
            }
        }
        Ok(ReadyLine {
            native: native.ok_or(ReadyLineError::MissingNative)?,
            memcache: memcache.ok_or(ReadyLineError::MissingMemcache)?,
            peer,
        })
    }
}

fn parse_addr(field: &'static str, value: &str) -> Result<SocketAddr, ReadyLineError> {
    value.parse().map_err(|_| ReadyLineError::BadAddress {
        field,
        value: value.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_parse_round_trip() {
        let lines = [
            ReadyLine {
                native: "127.0.0.1:7400".parse().unwrap(),
                memcache: Some("127.0.0.1:7401".parse().unwrap()),
                peer: Some("127.0.0.1:7402".parse().unwrap()),
            },
            ReadyLine {
                native: "[::1]:40123".parse().unwrap(),
                memcache: None,
                peer: Some("[::1]:40124".parse().unwrap()),
            },
            ReadyLine {
                native: "127.0.0.1:1".parse().unwrap(),
                memcache: None,
                peer: None,
            },
        ];
        for line in lines {
            let text = line.to_string();
            assert!(ReadyLine::is_ready_line(&text), "{text}");
            assert_eq!(ReadyLine::parse(&text), Ok(line), "{text}");
            assert_eq!(ReadyLine::parse(&format!("{text}\n")), Ok(line), "{text}");
        }
        assert_eq!(
            ReadyLine::parse("shoald ready native=127.0.0.1:1 memcache=off")
                .unwrap()
                .to_string(),
            "shoald ready native=127.0.0.1:1 memcache=off"
        );
        assert_eq!(
            ReadyLine::parse("shoald ready peer=127.0.0.1:3 native=127.0.0.1:1 memcache=off")
                .unwrap()
                .to_string(),
            "shoald ready native=127.0.0.1:1 memcache=off peer=127.0.0.1:3"
        );
    }

    #[test]
    fn bad_lines_are_errors() {
        use ReadyLineError::*;
        let cases: [(&str, ReadyLineError); 12] = [
            ("", NotReady),
            ("shoald starting", NotReady),
            ("shoald readyish native=127.0.0.1:1 memcache=off", NotReady),
            ("shoald ready", MissingNative),
            ("shoald ready memcache=off", MissingNative),
            ("shoald ready native=127.0.0.1:1", MissingMemcache),
            (
                "shoald ready native=? memcache=off",
                BadAddress {
                    field: "native",
                    value: "?".into(),
                },
            ),
            (
                "shoald ready native=127.0.0.1:1 memcache=127.0.0.1",
                BadAddress {
                    field: "memcache",
                    value: "127.0.0.1".into(),
                },
            ),
            (
                "shoald ready native=127.0.0.1:1 memcache=off extra",
                Unexpected("extra".into()),
            ),
            (
                "shoald ready native=127.0.0.1:1 native=127.0.0.1:2 memcache=off",
                Unexpected("native=127.0.0.1:2".into()),
            ),
            (
                "shoald ready native=127.0.0.1:1 memcache=off peer=off",
                BadAddress {
                    field: "peer",
                    value: "off".into(),
                },
            ),
            (
                "shoald ready native=127.0.0.1:1 memcache=off peer=127.0.0.1:2 peer=127.0.0.1:3",
                Unexpected("peer=127.0.0.1:3".into()),
            ),
        ];
        for (line, want) in cases {
            let got = ReadyLine::parse(line);
            assert_eq!(got, Err(want), "{line:?}");
            assert!(!got.unwrap_err().to_string().is_empty());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let alphabet = b"shoald ready native=memcache=peer=off0123456789.:[]\t\n \xff";
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 80) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| alphabet[((seed >> (i % 56)) as usize + i * 7) % alphabet.len()])
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            let _ = ReadyLine::parse(&text);
            let _ = ReadyLine::parse(&format!("shoald ready {text}"));
        }
    }
}
