//! The versioned bucket record: what one stored bucket (or one flushed delta)
//! looks like on disk.
//!
//! Layout: one version byte, then a bincode (standard config) body. Version 1
//! body: first/last minute covered, exact sum/min/max, error count, and the
//! histogram in HdrHistogram V2 encoding (optionally V2+deflate; the decoder
//! takes either, recognising them by their cookies). The sample count is the
//! histogram's total count, so it cannot disagree with the histogram.
//!
//! Series records (the catalog) use the same scheme with their own body.

use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer, V2Serializer};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Kind, SeriesKey, Tags};
use crate::stats::Stats;

const BUCKET_V1: u8 = 1;
const SERIES_V1: u8 = 1;

#[derive(Serialize, Deserialize)]
struct BucketBodyV1<'a> {
    first: i64,
    last: i64,
    sum: f64,
    min: f64,
    max: f64,
    errors: u64,
    #[serde(borrow)]
    hist: &'a [u8],
}

/// A decoded bucket: its statistics and the minutes it covers.
#[derive(Debug, Clone)]
pub struct BucketRecord {
    /// First minute start covered (Unix ms).
    pub first: i64,
    /// Last minute start covered (Unix ms).
    pub last: i64,
    /// The statistics.
    pub stats: Stats,
}

/// Reusable encoder/decoder state (serializer buffers).
#[derive(Default)]
pub struct Codec {
    v2: V2Serializer,
    deflate: V2DeflateSerializer,
    de: Deserializer,
    hist_buf: Vec<u8>,
}

fn corrupt(detail: impl Into<String>) -> Error {
    Error::Corrupt {
        table: "buckets",
        detail: detail.into(),
    }
}

impl Codec {
    /// A fresh codec.
    pub fn new() -> Codec {
        Codec {
            v2: V2Serializer::new(),
            deflate: V2DeflateSerializer::new(),
            de: Deserializer::new(),
            hist_buf: Vec::new(),
        }
    }

    /// Encodes a bucket; `compress` picks V2+deflate (smaller, ~10× slower).
    pub fn encode(
        &mut self,
        stats: &Stats,
        first: i64,
        last: i64,
        compress: bool,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        self.hist_buf.clear();
        let res = if compress {
            self.deflate
                .serialize(&stats.hist, &mut self.hist_buf)
                .map_err(|e| format!("{e:?}"))
        } else {
            self.v2
                .serialize(&stats.hist, &mut self.hist_buf)
                .map_err(|e| format!("{e:?}"))
        };
        res.map_err(|e| corrupt(format!("cannot encode histogram: {e}")))?;
        let body = BucketBodyV1 {
            first,
            last,
            sum: stats.sum,
            min: stats.min,
            max: stats.max,
            errors: stats.errors,
            hist: &self.hist_buf,
        };
        out.clear();
        out.push(BUCKET_V1);
        bincode::serde::encode_into_std_write(&body, out, bincode::config::standard())
            .map_err(|e| corrupt(format!("cannot encode bucket: {e}")))?;
        Ok(())
    }

    /// Decodes a bucket of `kind`.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<BucketRecord> {
        let (&version, body) = bytes.split_first().ok_or_else(|| corrupt("empty record"))?;
        if version != BUCKET_V1 {
            return Err(corrupt(format!("unknown bucket record version {version}")));
        }
        let (body, _): (BucketBodyV1<'_>, usize) =
            bincode::serde::borrow_decode_from_slice(body, bincode::config::standard())
                .map_err(|e| corrupt(format!("bad bucket body: {e}")))?;
        let mut reader = body.hist;
        let hist = self
            .de
            .deserialize::<u64, _>(&mut reader)
            .map_err(|e| corrupt(format!("bad histogram: {e:?}")))?;
        Ok(BucketRecord {
            first: body.first,
            last: body.last,
            stats: Stats::from_parts(hist, body.sum, body.min, body.max, body.errors),
        })
    }

    /// Decodes a bucket and merges it into `into`; returns its span.
    pub fn decode_into(&mut self, bytes: &[u8], into: &mut Stats) -> Result<(i64, i64)> {
        let rec = self.decode(bytes)?;
        into.merge(&rec.stats)?;
        Ok((rec.first, rec.last))
    }
}

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
    let mut out = vec![SERIES_V1];
    bincode::serde::encode_into_std_write(&body, &mut out, bincode::config::standard()).map_err(
        |e| Error::Corrupt {
            table: "series",
            detail: format!("cannot encode series: {e}"),
        },
    )?;
    Ok(out)
}

/// Decodes a catalog entry.
pub fn decode_series(bytes: &[u8]) -> Result<SeriesRecord> {
    let bad = |detail: String| Error::Corrupt {
        table: "series",
        detail,
    };
    let (&version, body) = bytes
        .split_first()
        .ok_or_else(|| bad("empty record".into()))?;
    if version != SERIES_V1 {
        return Err(bad(format!("unknown series record version {version}")));
    }
    let (b, _): (SeriesBodyV1, usize) =
        bincode::serde::decode_from_slice(body, bincode::config::standard())
            .map_err(|e| bad(format!("bad series body: {e}")))?;
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
    use crate::stats::Precision;

    #[test]
    fn buckets_round_trip_plain_and_compressed() {
        let mut s = Stats::new(Kind::Latency, Precision::DEFAULT);
        for v in [100u64, 250, 1_000, 99_000] {
            s.record_scaled(v, v as f64, v == 250);
        }
        let mut c = Codec::new();
        for compress in [false, true] {
            let mut buf = Vec::new();
            c.encode(&s, 60_000, 120_000, compress, &mut buf).unwrap();
            let r = c.decode(&buf).unwrap();
            assert_eq!((r.first, r.last), (60_000, 120_000));
            assert_eq!(r.stats.count(), 4);
            assert_eq!(r.stats.errors, 1);
            assert_eq!(r.stats.max, 99_000.0);
            assert_eq!(r.stats.hist, s.hist);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut c = Codec::new();
        for bad in [
            &b""[..],
            &[1u8][..],
            &[9u8, 1, 2][..],
            &[1u8, 0, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4, 5][..],
        ] {
            assert!(c.decode(bad).is_err());
        }
        assert!(decode_series(b"\x01\xff").is_err());
    }

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
