//! Series records (the `series` table, the catalog): a series' identity
//! and the first and last minutes it had data, as a version-1 bincode body
//! (see `framing.rs`).
//!
//! Invariant: a record decodes to a valid `SeriesKey` (a known kind code,
//! names and tags that pass `SeriesKey::new`) or to `Error::Corrupt` for
//! the `series` table.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Kind, SeriesKey, Tags};

use super::{decode_bincode, encode_bincode};

const SERIES_V1: u8 = 1;

#[derive(Serialize, Deserialize)]
struct SeriesBodyV1 {
    namespace: String,
    kind: u8,
    metric: String,
    tags: Vec<(String, String)>,
    first_seen: i64,
    last_seen: i64,
}

/// A catalog entry: a series' identity and when it was seen.
#[derive(Debug, Clone)]
pub struct SeriesRecord {
    /// Identity.
    pub key: SeriesKey,
    /// First minute with data.
    pub first_seen: i64,
    /// Last minute with data.
    pub last_seen: i64,
}

/// Encodes a catalog entry.
pub fn encode_series(key: &SeriesKey, first_seen: i64, last_seen: i64) -> Result<Vec<u8>> {
    let body = SeriesBodyV1 {
        namespace: key.namespace.clone(),
        kind: key.kind.code(),
        metric: key.metric.clone(),
        tags: key.tags.pairs().to_vec(),
        first_seen,
        last_seen,
    };
    encode_bincode("series", SERIES_V1, &body)
}

/// Decodes a catalog entry.
pub fn decode_series(bytes: &[u8]) -> Result<SeriesRecord> {
    let bad = |detail: String| Error::Corrupt {
        table: "series",
        detail,
    };
    let b: SeriesBodyV1 = decode_bincode("series", SERIES_V1, bytes)?;
    let kind =
        Kind::from_code(b.kind).ok_or_else(|| bad(format!("unknown kind code {}", b.kind)))?;
    let tags = Tags::new(&b.tags).map_err(|e| bad(e.to_string()))?;
    let key =
        SeriesKey::new(&b.namespace, kind, &b.metric, tags).map_err(|e| bad(e.to_string()))?;
    Ok(SeriesRecord {
        key,
        first_seen: b.first_seen,
        last_seen: b.last_seen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_round_trip() {
        let key = SeriesKey::new(
            "ns",
            Kind::Throughput,
            "m.x",
            Tags::new(&[("a", "b")]).unwrap(),
        )
        .unwrap();
        let r = decode_series(&encode_series(&key, 1, 2).unwrap()).unwrap();
        assert_eq!(r.key, key);
        assert_eq!((r.first_seen, r.last_seen), (1, 2));
    }
}
