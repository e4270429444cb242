//! The version-byte framing of every stored record: one version byte, then
//! the body of that version; and the two generic bodies built on it,
//! bincode (standard config) and JSON (for small records read by people as
//! often as by code: baselines, thresholds, alerts).
//!
//! Invariants: a record whose first byte is not the version asked for is
//! `Error::Corrupt` for its table, never read as another version; a
//! bincode body may claim at most `MAX_BINCODE_BODY` bytes, so a damaged
//! length prefix is an error before it becomes an allocation.

use serde::Serialize;

use crate::error::{Error, Result};

/// Checks a versioned record's leading version byte and returns its body.
pub fn versioned_body<'a>(table: &'static str, bytes: &'a [u8], version: u8) -> Result<&'a [u8]> {
    let bad = |detail: String| Error::Corrupt { table, detail };
    let (&v, body) = bytes
        .split_first()
        .ok_or_else(|| bad("empty record".into()))?;
    if v != version {
        return Err(bad(format!(
            "unknown record version {v} (this scopemon reads {version})"
        )));
    }
    Ok(body)
}

/// A version byte followed by the bincode (standard config) body.
pub fn encode_bincode<T: Serialize>(table: &'static str, version: u8, body: &T) -> Result<Vec<u8>> {
    let mut out = vec![version];
    bincode::serde::encode_into_std_write(body, &mut out, bincode::config::standard()).map_err(
        |e| Error::Corrupt {
            table,
            detail: format!("cannot encode: {e}"),
        },
    )?;
    Ok(out)
}

/// Most bytes a bincode record body may claim to hold (names, tags and
/// overrides are far smaller).
const MAX_BINCODE_BODY: usize = 1 << 20;

/// Inverse of [`encode_bincode`].
pub fn decode_bincode<T: serde::de::DeserializeOwned>(
    table: &'static str,
    version: u8,
    bytes: &[u8],
) -> Result<T> {
    let body = versioned_body(table, bytes, version)?;
    // The limit makes a damaged length prefix an error before it becomes
    // an allocation (bincode reserves what a string or vector claims).
    let config = bincode::config::standard().with_limit::<MAX_BINCODE_BODY>();
    bincode::serde::decode_from_slice(body, config)
        .map(|(v, _)| v)
        .map_err(|e| Error::Corrupt {
            table,
            detail: format!("bad body: {e}"),
        })
}

/// A version byte followed by a JSON body (for small records read by people
/// as often as by code: baselines, thresholds, alerts).
pub fn encode_json<T: Serialize>(table: &'static str, version: u8, body: &T) -> Result<Vec<u8>> {
    let mut out = vec![version];
    serde_json::to_writer(&mut out, body).map_err(|e| Error::Corrupt {
        table,
        detail: e.to_string(),
    })?;
    Ok(out)
}

/// Inverse of [`encode_json`].
pub fn decode_json<T: serde::de::DeserializeOwned>(
    table: &'static str,
    version: u8,
    bytes: &[u8],
) -> Result<T> {
    let body = versioned_body(table, bytes, version)?;
    serde_json::from_slice(body).map_err(|e| Error::Corrupt {
        table,
        detail: e.to_string(),
    })
}
