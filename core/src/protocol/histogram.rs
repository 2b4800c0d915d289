//! The histogram wire codec: base64 of HdrHistogram's V2 compressed format, readable by any
//! HdrHistogram implementation. [`decode_histogram`] treats its input as hostile: every size is
//! capped *before* anything is allocated from it. Runner reports, custom metrics and the summary
//! carry their histograms in it.

use std::io::Read;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};

use crate::metrics::error::MetricsError;
use crate::metrics::histogram::{
    LATENCY_HIGH_US, LATENCY_LOW_US, LATENCY_SIGFIG, MAX_HISTOGRAM_COUNT, new_latency_histogram,
};

/// Largest encoded histogram [`decode_histogram`] accepts, in bytes after base64 decoding.
pub const MAX_ENCODED_HISTOGRAM_BYTES: usize = 1 << 20;
/// Largest decompressed histogram [`decode_histogram`] accepts, in bytes. A histogram with
/// Volley's bounds needs at most about 210 KiB even with every bucket used, so this only stops
/// zip bombs.
pub const MAX_DECOMPRESSED_HISTOGRAM_BYTES: usize = 1 << 20;

/// Cookie of HdrHistogram's V2 format.
const V2_COOKIE: u32 = 0x1c84_9313;
/// Cookie of HdrHistogram's V2 format wrapped in zlib ("compressed").
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9314;
/// Bytes of a V2 header: cookie, payload length, normalizing offset, significant digits,
/// lowest value, highest value, integer-to-double ratio.
const V2_HEADER_LEN: usize = 40;

/// A histogram as base64 (standard alphabet, padded) of HdrHistogram's V2 compressed format,
/// readable by any HdrHistogram implementation.
pub fn encode_histogram(h: &Histogram<u64>) -> Result<String, MetricsError> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .map_err(MetricsError::Encode)?;
    Ok(BASE64.encode(bytes))
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at.checked_add(4)?)?
        .try_into()
        .ok()
        .map(u32::from_be_bytes)
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at.checked_add(8)?)?
        .try_into()
        .ok()
        .map(u64::from_be_bytes)
}

fn malformed(what: impl Into<String>) -> MetricsError {
    MetricsError::Malformed(what.into())
}

/// Decodes what [`encode_histogram`] made, treating the text as hostile.
///
/// Rejects, with an error saying what is wrong: the empty string; more than
/// [`MAX_ENCODED_HISTOGRAM_BYTES`] (after base64); bad base64; anything but the V2 compressed
/// format; a length field that disagrees with the data; more than
/// [`MAX_DECOMPRESSED_HISTOGRAM_BYTES`] once inflated (zip bombs); bounds or significant
/// digits other than Volley's; counts past the end of the histogram, negative, or more than
/// [`MAX_HISTOGRAM_COUNT`] in total; values outside 1 µs to 1 h.
///
/// The header and counts are checked here before HdrHistogram's deserializer sees them,
/// because it sizes its allocations from the header's fields.
pub fn decode_histogram(s: &str) -> Result<Histogram<u64>, MetricsError> {
    if s.is_empty() {
        return Err(MetricsError::EmptyHistogram);
    }
    if s.len() > MAX_ENCODED_HISTOGRAM_BYTES.div_ceil(3) * 4 {
        return Err(MetricsError::TooLarge {
            what: "encoded",
            limit: MAX_ENCODED_HISTOGRAM_BYTES,
        });
    }
    let bytes = BASE64.decode(s).map_err(MetricsError::Base64)?;
    if bytes.len() > MAX_ENCODED_HISTOGRAM_BYTES {
        return Err(MetricsError::TooLarge {
            what: "encoded",
            limit: MAX_ENCODED_HISTOGRAM_BYTES,
        });
    }

    // Outer envelope: cookie, length of the zlib stream, zlib stream.
    let cookie = be_u32(&bytes, 0).ok_or_else(|| malformed("shorter than its 8-byte header"))?;
    if cookie != V2_COMPRESSED_COOKIE {
        return Err(malformed(format!(
            "cookie {cookie:#010x} is not HdrHistogram's V2 compressed format ({V2_COMPRESSED_COOKIE:#010x})"
        )));
    }
    let stream_len = be_u32(&bytes, 4)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| malformed("shorter than its 8-byte header"))?;
    let stream = bytes.get(8..).unwrap_or_default();
    if stream_len != stream.len() {
        return Err(malformed(format!(
            "the header announces {stream_len} compressed bytes but {} follow (truncated?)",
            stream.len()
        )));
    }
    let mut raw = Vec::new();
    let mut inflater = flate2::bufread::ZlibDecoder::new(stream);
    (&mut inflater)
        .take(MAX_DECOMPRESSED_HISTOGRAM_BYTES as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|e| malformed(format!("the compressed data is corrupt or truncated: {e}")))?;
    if raw.len() > MAX_DECOMPRESSED_HISTOGRAM_BYTES {
        return Err(MetricsError::TooLarge {
            what: "decompressed",
            limit: MAX_DECOMPRESSED_HISTOGRAM_BYTES,
        });
    }
    if !inflater.into_inner().is_empty() {
        return Err(malformed("unexpected bytes after the compressed data"));
    }

    // Inner V2 header.
    let short = || malformed("the decompressed data is shorter than the 40-byte V2 header");
    if be_u32(&raw, 0).ok_or_else(short)? != V2_COOKIE {
        return Err(malformed(
            "the decompressed data is not HdrHistogram's V2 format",
        ));
    }
    let payload_len = be_u32(&raw, 4).ok_or_else(short)?;
    let normalizing_offset = be_u32(&raw, 8).ok_or_else(short)?;
    let sigfig = be_u32(&raw, 12).ok_or_else(short)?;
    let low = be_u64(&raw, 16).ok_or_else(short)?;
    let high = be_u64(&raw, 24).ok_or_else(short)?;
    let ratio_bits = be_u64(&raw, 32).ok_or_else(short)?;
    let payload = raw.get(V2_HEADER_LEN..).unwrap_or_default();
    if usize::try_from(payload_len).ok() != Some(payload.len()) {
        return Err(malformed(format!(
            "the V2 header announces {payload_len} bytes of counts but {} follow",
            payload.len()
        )));
    }
    if low != LATENCY_LOW_US || high != LATENCY_HIGH_US || sigfig != u32::from(LATENCY_SIGFIG) {
        return Err(MetricsError::Bounds {
            low,
            high,
            sigfig: u8::try_from(sigfig).unwrap_or(u8::MAX),
            expected: (LATENCY_LOW_US, LATENCY_HIGH_US, LATENCY_SIGFIG),
        });
    }
    if normalizing_offset != 0 || f64::from_bits(ratio_bits) != 1.0 {
        return Err(malformed(
            "normalizing offsets and integer-to-double ratios other than 1 are not supported",
        ));
    }
    let template = new_latency_histogram();
    check_counts(payload, template.distinct_values())?;

    // Now the header can be trusted: its allocation is a histogram of Volley's bounds, and
    // its counts fit, are non-negative, and cannot overflow.
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut raw.as_slice())
        .map_err(MetricsError::Decode)?;
    if h.low() != LATENCY_LOW_US || h.high() != LATENCY_HIGH_US || h.sigfig() != LATENCY_SIGFIG {
        return Err(MetricsError::Bounds {
            low: h.low(),
            high: h.high(),
            sigfig: h.sigfig(),
            expected: (LATENCY_LOW_US, LATENCY_HIGH_US, LATENCY_SIGFIG),
        });
    }
    if !h.is_empty() {
        if h.min() < LATENCY_LOW_US {
            return Err(MetricsError::OutOfRange { value: h.min() });
        }
        if h.max() > h.highest_equivalent(LATENCY_HIGH_US) {
            return Err(MetricsError::OutOfRange {
                value: h.lowest_equivalent(h.max()),
            });
        }
    }
    Ok(h)
}

/// Walks the V2 counts encoding (zig-zag LEB128, at most 9 bytes per number; a negative
/// number is a run of that many empty counters) the way HdrHistogram's deserializer does, and
/// rejects what would make it misbehave: runs or counts past `counts_len`, truncated numbers,
/// and totals over [`MAX_HISTOGRAM_COUNT`].
fn check_counts(payload: &[u8], counts_len: usize) -> Result<(), MetricsError> {
    let mut at = 0usize;
    let mut index = 0usize;
    let mut total = 0u64;
    while at < payload.len() {
        let mut raw = 0u64;
        let mut shift = 0u32;
        loop {
            let b = *payload
                .get(at)
                .ok_or_else(|| malformed("a count is cut off at the end of the data"))?;
            at += 1;
            if shift == 56 {
                // The 9th byte carries 8 bits as they are.
                raw |= u64::from(b) << 56;
                break;
            }
            raw |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        // Zig-zag decoding, without the overflow of negating i64::MIN.
        let negative = raw & 1 == 1;
        let magnitude = (raw >> 1) + u64::from(negative);
        let past_end = || malformed("counts run past the end of the histogram's range");
        if negative {
            let zeros = usize::try_from(magnitude).map_err(|_| past_end())?;
            index = index.checked_add(zeros).ok_or_else(past_end)?;
            if index > counts_len {
                return Err(past_end());
            }
        } else {
            if magnitude > 0 {
                if index >= counts_len {
                    return Err(past_end());
                }
                total = total.saturating_add(magnitude);
                if total > MAX_HISTOGRAM_COUNT {
                    return Err(MetricsError::TooManySamples {
                        limit: MAX_HISTOGRAM_COUNT,
                    });
                }
            }
            index += 1;
            if index > counts_len {
                return Err(past_end());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::metrics::histogram::{record_latency, same_histogram};
    use crate::metrics::test_support::{Rng, hist};
    use proptest::prelude::*;

    /// Builds a V2 compressed histogram from a hand-made uncompressed body, for hostile input.
    fn compress(raw: &[u8]) -> String {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(raw).unwrap();
        let stream = z.finish().unwrap();
        let mut bytes = V2_COMPRESSED_COOKIE.to_be_bytes().to_vec();
        bytes.extend((stream.len() as u32).to_be_bytes());
        bytes.extend(stream);
        BASE64.encode(bytes)
    }

    /// A V2 header with our bounds (or the given ones) and `payload_len`.
    fn v2_header(payload_len: u32, sigfig: u32, low: u64, high: u64) -> Vec<u8> {
        let mut b = V2_COOKIE.to_be_bytes().to_vec();
        b.extend(payload_len.to_be_bytes());
        b.extend(0u32.to_be_bytes());
        b.extend(sigfig.to_be_bytes());
        b.extend(low.to_be_bytes());
        b.extend(high.to_be_bytes());
        b.extend(1.0f64.to_bits().to_be_bytes());
        b
    }

    fn ours(payload: &[u8]) -> String {
        let mut raw = v2_header(payload.len() as u32, 3, 1, LATENCY_HIGH_US);
        raw.extend(payload);
        compress(&raw)
    }

    proptest! {
        // 64 cases by default (each merges whole runs); `PROPTEST_CASES` raises it for a sweep.
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
            ..ProptestConfig::default()
        })]

        #[test]
        fn encode_decode_round_trips(
            values in prop::collection::vec((1u64..=LATENCY_HIGH_US, 1u64..1_000_000), 0..200),
        ) {
            let mut h = new_latency_histogram();
            for (v, n) in &values {
                h.record_n(*v, *n).unwrap();
            }
            let back = decode_histogram(&encode_histogram(&h).unwrap()).unwrap();
            prop_assert!(same_histogram(&h, &back));
            prop_assert_eq!((back.low(), back.high(), back.sigfig()), (h.low(), h.high(), h.sigfig()));
            prop_assert_eq!(back.len(), h.len());
            prop_assert_eq!(back.max(), h.max());
            prop_assert_eq!(back.min(), h.min());
        }

        #[test]
        fn decoding_random_text_never_panics(s in "[A-Za-z0-9+/=]{0,200}") {
            let _ = decode_histogram(&s);
        }

        #[test]
        fn decoding_corrupted_histograms_never_panics(
            values in prop::collection::vec(1u64..=LATENCY_HIGH_US, 1..50),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            // Corrupt the *decompressed* bytes, then recompress, so the corruption reaches the
            // V2 parser instead of being caught by zlib's checksum.
            let h = hist(values);
            let bytes = BASE64.decode(encode_histogram(&h).unwrap()).unwrap();
            let mut raw = Vec::new();
            flate2::read::ZlibDecoder::new(&bytes[8..]).read_to_end(&mut raw).unwrap();
            for (at, byte) in flips {
                let i = at.index(raw.len());
                raw[i] ^= byte;
            }
            let _ = decode_histogram(&compress(&raw));
            // And the compressed bytes themselves.
            let mut bytes = bytes;
            let i = bytes.len() / 2;
            bytes[i] ^= 0x55;
            let _ = decode_histogram(&BASE64.encode(&bytes));
        }
    }

    // ---- decoding hostile input ----

    #[test]
    fn decode_rejects_empty_and_bad_base64() {
        assert!(matches!(
            decode_histogram(""),
            Err(MetricsError::EmptyHistogram)
        ));
        for bad in ["not base64!", "HISTFAA", "====", "abc"] {
            let err = decode_histogram(bad).unwrap_err();
            assert!(matches!(err, MetricsError::Base64(_)), "{bad}: {err}");
            assert!(err.to_string().contains("not valid base64"));
        }
        // Valid base64 that is not a histogram.
        let err = decode_histogram(&BASE64.encode(b"hello world")).unwrap_err();
        assert!(
            err.to_string()
                .contains("not HdrHistogram's V2 compressed format"),
            "{err}"
        );
        let err = decode_histogram(&BASE64.encode([0x1c, 0x84])).unwrap_err();
        assert!(
            err.to_string().contains("shorter than its 8-byte header"),
            "{err}"
        );
    }

    #[test]
    fn decode_rejects_truncated_payloads() {
        let h = hist([10, 2000, 30_000, 400_000, 5_000_000]);
        let bytes = BASE64.decode(encode_histogram(&h).unwrap()).unwrap();
        for cut in [1, 4, 8, 9, bytes.len() / 2, bytes.len() - 1] {
            let err = decode_histogram(&BASE64.encode(&bytes[..cut])).unwrap_err();
            assert!(
                matches!(err, MetricsError::Malformed(_)),
                "cut {cut}: {err}"
            );
        }
        // Truncated with the length field fixed up: zlib notices.
        let mut fixed = bytes[..bytes.len() - 4].to_vec();
        let len = (fixed.len() - 8) as u32;
        fixed[4..8].copy_from_slice(&len.to_be_bytes());
        let err = decode_histogram(&BASE64.encode(&fixed)).unwrap_err();
        assert!(err.to_string().contains("corrupt or truncated"), "{err}");
        // Trailing bytes after the stream.
        let mut longer = bytes.clone();
        longer.extend([0, 0, 0]);
        let len = (longer.len() - 8) as u32;
        longer[4..8].copy_from_slice(&len.to_be_bytes());
        let err = decode_histogram(&BASE64.encode(&longer)).unwrap_err();
        assert!(
            err.to_string().contains("after the compressed data"),
            "{err}"
        );
        // A counts payload cut inside a number.
        let err = decode_histogram(&ours(&[0x80])).unwrap_err();
        assert!(err.to_string().contains("cut off"), "{err}");
    }

    #[test]
    fn decode_rejects_other_bounds_and_precision() {
        for (low, high, sigfig) in [
            (1u64, 10_000_000u64, 3u8),
            (1, LATENCY_HIGH_US, 2),
            (1, LATENCY_HIGH_US, 4),
            (1000, LATENCY_HIGH_US, 3),
            (1, 1 << 40, 4),
        ] {
            let mut h = Histogram::<u64>::new_with_bounds(low, high, sigfig).unwrap();
            h.record(5000).unwrap();
            let err = decode_histogram(&encode_histogram(&h).unwrap()).unwrap_err();
            assert!(matches!(err, MetricsError::Bounds { .. }), "{err}");
            assert!(
                err.to_string()
                    .contains(&format!("{sigfig} significant digits")),
                "{err}"
            );
        }
        // An uncompressed V2 histogram is not the wire format.
        let mut raw = Vec::new();
        hdrhistogram::serialization::V2Serializer::new()
            .serialize(&hist([5]), &mut raw)
            .unwrap();
        let err = decode_histogram(&BASE64.encode(&raw)).unwrap_err();
        assert!(err.to_string().contains("cookie"), "{err}");
    }

    #[test]
    fn decode_rejects_values_outside_the_range() {
        // Values a Volley histogram can hold but record_latency never produces.
        let mut zero = new_latency_histogram();
        zero.record(0).unwrap();
        zero.record(5).unwrap();
        let err = decode_histogram(&encode_histogram(&zero).unwrap()).unwrap_err();
        assert!(
            matches!(err, MetricsError::OutOfRange { value: 0 }),
            "{err}"
        );

        let mut above = new_latency_histogram();
        above.record(4_000_000_000).unwrap(); // above 1 h, inside the last bucket
        let err = decode_histogram(&encode_histogram(&above).unwrap()).unwrap_err();
        assert!(matches!(err, MetricsError::OutOfRange { .. }), "{err}");
        assert!(
            err.to_string().contains("outside the range of 1 µs to 1 h"),
            "{err}"
        );

        let mut top = new_latency_histogram();
        record_latency(&mut top, Duration::from_secs(3600));
        assert!(decode_histogram(&encode_histogram(&top).unwrap()).is_ok());
    }

    #[test]
    fn decode_rejects_hostile_headers_and_counts_without_allocating_from_them() {
        // A header that claims 4 GiB of counts.
        let mut raw = v2_header(u32::MAX, 3, 1, LATENCY_HIGH_US);
        raw.extend([2, 2, 2]);
        let err = decode_histogram(&compress(&raw)).unwrap_err();
        assert!(
            err.to_string().contains("announces 4294967295 bytes"),
            "{err}"
        );

        // Bounds that would make HdrHistogram allocate hundreds of MB.
        let mut raw = v2_header(1, 5, 1, u64::MAX / 4);
        raw.push(2);
        assert!(matches!(
            decode_histogram(&compress(&raw)),
            Err(MetricsError::Bounds { .. })
        ));

        // A zip bomb: 8 MiB of zeros compress to a few KB.
        let mut raw = v2_header(8 << 20, 3, 1, LATENCY_HIGH_US);
        raw.resize(raw.len() + (8 << 20), 0);
        let bomb = compress(&raw);
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        let err = decode_histogram(&bomb).unwrap_err();
        assert!(
            matches!(
                err,
                MetricsError::TooLarge {
                    what: "decompressed",
                    ..
                }
            ),
            "{err}"
        );

        // Oversized before decoding.
        let err = decode_histogram(&"A".repeat(2 << 20)).unwrap_err();
        assert!(
            matches!(
                err,
                MetricsError::TooLarge {
                    what: "encoded",
                    ..
                }
            ),
            "{err}"
        );

        // Zig-zag of u64::MAX is i64::MIN, which HdrHistogram would negate (overflow).
        let min = [0xff; 9];
        let err = decode_histogram(&ours(&min)).unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");
        // A run of zeros past the end, and a count after the last counter.
        let err = decode_histogram(&ours(&[0x81, 0x80, 0x80, 0x01])).unwrap_err(); // -(2^20)-1
        assert!(err.to_string().contains("past the end"), "{err}");
        let len = new_latency_histogram().distinct_values() as u64;
        let mut run = Vec::new();
        let mut zz = (len << 1) - 1; // zig-zag of -len
        while zz >= 0x80 {
            run.push((zz as u8) | 0x80);
            zz >>= 7;
        }
        run.push(zz as u8);
        assert!(
            decode_histogram(&ours(&run)).is_ok(),
            "skipping exactly to the end is fine"
        );
        run.push(2); // then a count of 1 past the end
        let err = decode_histogram(&ours(&run)).unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");

        // Counts that would overflow when merged.
        let mut huge = new_latency_histogram();
        huge.record_n(1000, MAX_HISTOGRAM_COUNT + 1).unwrap();
        let err = decode_histogram(&encode_histogram(&huge).unwrap()).unwrap_err();
        assert!(matches!(err, MetricsError::TooManySamples { .. }), "{err}");
        let mut ok = new_latency_histogram();
        ok.record_n(1000, MAX_HISTOGRAM_COUNT).unwrap();
        assert_eq!(
            decode_histogram(&encode_histogram(&ok).unwrap())
                .unwrap()
                .len(),
            MAX_HISTOGRAM_COUNT
        );

        // A normalizing offset is not supported.
        let mut raw = v2_header(1, 3, 1, LATENCY_HIGH_US);
        raw[8..12].copy_from_slice(&1u32.to_be_bytes());
        raw.push(2);
        let err = decode_histogram(&compress(&raw)).unwrap_err();
        assert!(err.to_string().contains("normalizing"), "{err}");

        // The empty histogram is fine.
        assert!(decode_histogram(&ours(&[])).unwrap().is_empty());
    }

    #[test]
    fn the_largest_possible_histogram_decodes() {
        // Every counter in use, with counts that need long varints: the worst case a runner
        // can send must stay within the decoder's limits.
        let mut rng = Rng(3);
        let mut h = new_latency_histogram();
        let mut v = LATENCY_LOW_US;
        while v <= LATENCY_HIGH_US {
            h.record_n(v, 1 + rng.next() % (1 << 30)).unwrap();
            v = h.next_non_equivalent(v);
        }
        assert!(h.iter_recorded().count() > 20_000);
        let text = encode_histogram(&h).unwrap();
        println!(
            "largest histogram: {} distinct values, {} bytes encoded",
            h.iter_recorded().count(),
            text.len()
        );
        assert!(text.len() < MAX_ENCODED_HISTOGRAM_BYTES / 2);
        assert!(same_histogram(&decode_histogram(&text).unwrap(), &h));
    }
}
