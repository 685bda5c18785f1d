//! 95% intervals for the ratio of two measurements, from the latency histograms the agents store
//! with every result: a percentile bootstrap that draws each resample's order statistic directly.
//!
//! Resampling n latencies from a sample and taking the k-th smallest gives the same value as
//! taking the sample's quantile at the k-th smallest of n uniform draws, and that uniform order
//! statistic is Beta(k, n − k + 1). So one replicate of "the p90 of a bootstrap resample" costs
//! one Beta draw and one binary search over the histogram's buckets instead of n draws and a
//! sort, and a comparison over a fleet's worth of results stays well under a second. Means (for
//! throughput) use the normal approximation of the resampled mean, which is what the bootstrap
//! converges to at the sample sizes a benchmark run has.

use base64::Engine;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Beta, Distribution as _, Normal};

/// Replicates per interval; the interval's ends move by well under 1% between seeds.
pub const REPLICATES: usize = 2000;

/// The seed every comparison uses, so the same store gives the same intervals every time.
const SEED: u64 = 0x5eed_ed9e;

/// A stored latency histogram that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    #[error("latency histogram is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("latency histogram does not decode: {0}")]
    Decode(String),
    #[error("latency histograms cannot be merged: {0}")]
    Merge(String),
    #[error("the latency histogram is empty")]
    Empty,
    /// Retention reduced the result to its summary (`serve --retention-days`).
    #[error(
        "its latency histograms were dropped by retention (only the summary is kept); compare it \
         with its baseline or a newer run"
    )]
    Dropped,
}

/// The V2 encoding's cookie, and the cookie of its deflate wrapper.
const V2_COOKIE: u32 = 0x1c84_9313;
const V2_DEFLATE_COOKIE: u32 = 0x1c84_9314;
/// The V2 header: cookie, payload length, normalizing offset, significant digits (4 bytes each),
/// lowest and highest trackable value and the integer-to-double ratio (8 bytes each).
const V2_HEADER: usize = 40;
/// The most bytes a V2 encoding may inflate to. A latency histogram of 3 significant digits from
/// 1 ns to an hour encodes in well under 1 MB; this is 16 times that.
const MAX_V2_BYTES: usize = 16 << 20;

/// Decodes an HdrHistogram V2 encoding (plain or deflate-wrapped), as the agents write them.
/// The bytes come from an agent, so they are checked before `hdrhistogram` reads them: it
/// would inflate without a bound, allocate whatever payload length the header claims, and
/// negate a zero run of `i64::MIN` (an overflow) — found by fuzzing.
pub fn decode_histogram(bytes: &[u8]) -> Result<Histogram<u64>, HistogramError> {
    let bad = |why: &str| HistogramError::Decode(why.to_string());
    let u32_at = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .map(|w| u32::from_be_bytes(w.try_into().expect("4 bytes")))
    };
    let plain: std::borrow::Cow<'_, [u8]> = match u32_at(bytes, 0) {
        Some(V2_COOKIE) => bytes.into(),
        Some(V2_DEFLATE_COOKIE) => {
            let len = u32_at(bytes, 4).ok_or_else(|| bad("truncated deflate header"))? as usize;
            let compressed = bytes
                .get(8..8usize.saturating_add(len))
                .ok_or_else(|| bad("shorter than its deflate header says"))?;
            let mut out = Vec::new();
            std::io::Read::read_to_end(
                &mut std::io::Read::take(
                    flate2::read::ZlibDecoder::new(compressed),
                    MAX_V2_BYTES as u64 + 1,
                ),
                &mut out,
            )
            .map_err(|e| HistogramError::Decode(format!("does not inflate: {e}")))?;
            if out.len() > MAX_V2_BYTES {
                return Err(bad("inflates to more than 16 MiB"));
            }
            out.into()
        }
        _ => return Err(bad("not an HdrHistogram V2 encoding")),
    };
    if u32_at(&plain, 0) != Some(V2_COOKIE) || plain.len() < V2_HEADER {
        return Err(bad("no V2 header"));
    }
    let payload_len = u32_at(&plain, 4).expect("checked above") as usize;
    let payload = plain
        .get(V2_HEADER..V2_HEADER.saturating_add(payload_len))
        .ok_or_else(|| bad("the payload is shorter than its header says"))?;
    // Counts are zig-zag varints (LEB128, the ninth byte taken whole); a negative one is a run
    // of zeros, and all ones (zig-zag for i64::MIN) is a run no histogram can have.
    let mut at = 0;
    while at < payload.len() {
        let mut value = 0u64;
        for i in 0..9 {
            let Some(&b) = payload.get(at) else { break };
            at += 1;
            if i == 8 {
                value |= u64::from(b) << 56;
                break;
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                break;
            }
        }
        if value == u64::MAX {
            return Err(bad("a run of zeros longer than any histogram"));
        }
    }
    Deserializer::new()
        .deserialize(&mut &plain[..V2_HEADER + payload_len])
        .map_err(|e| HistogramError::Decode(format!("{e:?}")))
}

/// Warm latencies of one side of a comparison (one or several runs merged), as cumulative bucket
/// counts in milliseconds.
#[derive(Debug, Clone)]
pub struct Latencies {
    /// Each recorded bucket's value (highest equivalent value), ascending, in ms.
    values_ms: Vec<f64>,
    /// Samples at or below each bucket.
    cumulative: Vec<u64>,
    mean_ms: f64,
    stddev_ms: f64,
}

impl Latencies {
    /// Decodes and merges base64 HdrHistograms (V2, deflate; nanoseconds).
    pub fn from_hdr_base64<'a>(
        encoded: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, HistogramError> {
        let mut merged: Option<Histogram<u64>> = None;
        for text in encoded {
            if text.is_empty() {
                return Err(HistogramError::Dropped);
            }
            let bytes = base64::engine::general_purpose::STANDARD.decode(text)?;
            let hist = decode_histogram(&bytes)?;
            match &mut merged {
                Some(m) => m
                    .add(&hist)
                    .map_err(|e| HistogramError::Merge(format!("{e:?}")))?,
                None => merged = Some(hist),
            }
        }
        let hist = merged.ok_or(HistogramError::Empty)?;
        Self::from_histogram(&hist)
    }

    fn from_histogram(hist: &Histogram<u64>) -> Result<Self, HistogramError> {
        if hist.is_empty() {
            return Err(HistogramError::Empty);
        }
        let mut values_ms = Vec::new();
        let mut cumulative = Vec::new();
        let mut total = 0u64;
        for bucket in hist.iter_recorded() {
            // Counts near 2^64 decode (found by fuzzing); their sum is no number of latencies.
            total = total
                .checked_add(bucket.count_at_value())
                .ok_or_else(|| HistogramError::Decode("counts more than 2^64 latencies".into()))?;
            values_ms.push(hist.highest_equivalent(bucket.value_iterated_to()) as f64 / 1e6);
            cumulative.push(total);
        }
        Ok(Self {
            values_ms,
            cumulative,
            mean_ms: hist.mean() / 1e6,
            stddev_ms: hist.stdev() / 1e6,
        })
    }

    /// How many latencies.
    pub fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    pub fn mean_ms(&self) -> f64 {
        self.mean_ms
    }

    /// The nearest-rank percentile (`p` in 0..=100).
    pub fn percentile_ms(&self, p: f64) -> f64 {
        self.at_rank(nearest_rank(p, self.count()))
    }

    /// The value of the `rank`-th smallest latency (1-based).
    fn at_rank(&self, rank: u64) -> f64 {
        let i = self.cumulative.partition_point(|&c| c < rank);
        self.values_ms[i.min(self.values_ms.len() - 1)]
    }

    /// The sample's quantile function at `u` in (0, 1): the smallest latency with at least
    /// ⌈u·n⌉ latencies at or below it.
    fn quantile(&self, u: f64) -> f64 {
        let n = self.count();
        let rank = ((u * n as f64).ceil() as u64).clamp(1, n);
        self.at_rank(rank)
    }

    /// Draws of the percentile of a bootstrap resample.
    fn percentile_draws(&self, p: f64, rng: &mut StdRng) -> Vec<f64> {
        let n = self.count();
        let k = nearest_rank(p, n) as f64;
        match Beta::new(k, n as f64 - k + 1.0) {
            Ok(beta) => (0..REPLICATES)
                .map(|_| self.quantile(beta.sample(rng)))
                .collect(),
            // k = n = 1 and similar corners: one latency has no spread to resample.
            Err(_) => vec![self.percentile_ms(p); REPLICATES],
        }
    }

    /// Draws of the mean of a bootstrap resample.
    fn mean_draws(&self, rng: &mut StdRng) -> Vec<f64> {
        let se = self.stddev_ms / (self.count() as f64).sqrt();
        match Normal::new(self.mean_ms, se) {
            Ok(normal) => (0..REPLICATES).map(|_| normal.sample(rng)).collect(),
            Err(_) => vec![self.mean_ms; REPLICATES],
        }
    }
}

/// The 1-based nearest rank of percentile `p` among `n` values.
fn nearest_rank(p: f64, n: u64) -> u64 {
    ((p / 100.0 * n as f64).ceil() as u64).clamp(1, n.max(1))
}

/// A ratio `b / a` and its 95% percentile-bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatioInterval {
    pub ratio: f64,
    pub low: f64,
    pub high: f64,
}

impl RatioInterval {
    pub fn contains_one(&self) -> bool {
        self.low <= 1.0 && 1.0 <= self.high
    }
}

/// `b`'s percentile `p` over `a`'s, with the interval.
pub fn percentile_ratio(a: &Latencies, b: &Latencies, p: f64) -> RatioInterval {
    let mut rng = StdRng::seed_from_u64(SEED);
    let da = a.percentile_draws(p, &mut rng);
    let db = b.percentile_draws(p, &mut rng);
    interval(a.percentile_ms(p), b.percentile_ms(p), &da, &db)
}

/// `b`'s mean latency over `a`'s, with the interval.
pub fn mean_ratio(a: &Latencies, b: &Latencies) -> RatioInterval {
    let mut rng = StdRng::seed_from_u64(SEED);
    let da = a.mean_draws(&mut rng);
    let db = b.mean_draws(&mut rng);
    interval(a.mean_ms, b.mean_ms, &da, &db)
}

fn interval(point_a: f64, point_b: f64, draws_a: &[f64], draws_b: &[f64]) -> RatioInterval {
    let mut ratios: Vec<f64> = draws_a
        .iter()
        .zip(draws_b)
        .map(|(a, b)| b / a)
        .filter(|r| r.is_finite())
        .collect();
    ratios.sort_by(f64::total_cmp);
    let point = point_b / point_a;
    if ratios.is_empty() {
        return RatioInterval {
            ratio: point,
            low: point,
            high: point,
        };
    }
    let at = |q: f64| ratios[((q * ratios.len() as f64) as usize).min(ratios.len() - 1)];
    RatioInterval {
        ratio: point,
        low: at(0.025),
        high: at(0.975),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};

    /// A histogram of the given latencies (ms), base64 as agents store it.
    fn encoded(latencies_ms: impl IntoIterator<Item = f64>) -> String {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        for ms in latencies_ms {
            hist.record((ms * 1e6) as u64).unwrap();
        }
        let mut bytes = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&hist, &mut bytes)
            .unwrap();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// A plain V2 encoding with the given header payload length and payload.
    fn v2(payload_len: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for word in [V2_COOKIE, payload_len, 0, 3] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out.extend_from_slice(&1u64.to_be_bytes());
        out.extend_from_slice(&3_600_000_000_000u64.to_be_bytes());
        out.extend_from_slice(&1f64.to_bits().to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn deflated(plain: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(plain).unwrap();
        let packed = z.finish().unwrap();
        let mut out = V2_DEFLATE_COOKIE.to_be_bytes().to_vec();
        out.extend_from_slice(&(packed.len() as u32).to_be_bytes());
        out.extend(packed);
        out
    }

    #[test]
    fn histograms_an_agent_could_send_are_checked_before_they_are_read() {
        let err = |bytes: &[u8]| decode_histogram(bytes).unwrap_err().to_string();
        // Found by fuzzing (fuzz/regressions/link_messages/hdr-zero-run-of-i64-min): a zero run
        // of i64::MIN (nine 0xff bytes) overflowed hdrhistogram's negation.
        let all_ones = v2(9, &[0xff; 9]);
        assert!(err(&all_ones).contains("a run of zeros"));
        assert!(err(&deflated(&all_ones)).contains("a run of zeros"));
        // A header that claims 4 GB of payload is not believed.
        assert!(err(&v2(u32::MAX, &[2])).contains("shorter than its header says"));
        // Nor a small deflate stream that inflates without end.
        assert!(err(&deflated(&vec![0; MAX_V2_BYTES + 1])).contains("more than 16 MiB"));
        assert!(err(b"RIFF").contains("not an HdrHistogram V2 encoding"));
        // What agents send reads as before, plain or deflated.
        let sent = base64::engine::general_purpose::STANDARD
            .decode(encoded([1.0, 2.0, 3.0]))
            .unwrap();
        assert_eq!(decode_histogram(&sent).unwrap().len(), 3);
        let one = v2(1, &[2]);
        assert_eq!(decode_histogram(&one).unwrap().len(), 1);
        assert_eq!(decode_histogram(&deflated(&one)).unwrap().len(), 1);
    }

    #[test]
    fn counts_that_add_up_past_u64_are_an_error() {
        // Found by fuzzing (fuzz/regressions/link_messages/hdr-counts-past-u64): buckets of
        // nearly 2^63 latencies each overflowed the cumulative count. Each count here is the
        // zig-zag varint 0xff << 56 (eight continuation bytes, the ninth taken whole): 0x7f8 << 52.
        let big = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0xff];
        let payload = big.repeat(3);
        let encoded = base64::engine::general_purpose::STANDARD.encode(v2(27, &payload));
        let err = Latencies::from_hdr_base64([encoded.as_str()]).unwrap_err();
        assert!(err.to_string().contains("more than 2^64"), "{err}");
    }

    /// Deterministic latencies around `center` ms with a spread of ±`spread` (a sawtooth).
    fn around(center: f64, spread: f64, n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| center + spread * (((i * 37) % 101) as f64 / 50.0 - 1.0))
            .collect()
    }

    #[test]
    fn percentiles_match_nearest_rank_on_the_decoded_histogram() {
        let lat = Latencies::from_hdr_base64([encoded((1..=100).map(f64::from)).as_str()]).unwrap();
        assert_eq!(lat.count(), 100);
        for (p, want) in [(50.0, 50.0), (90.0, 90.0), (99.0, 99.0), (100.0, 100.0)] {
            let got = lat.percentile_ms(p);
            assert!((got - want).abs() / want < 0.001, "p{p}: {got} vs {want}");
        }
    }

    #[test]
    fn a_clear_speed_up_excludes_one_and_equal_samples_include_it() {
        let a = Latencies::from_hdr_base64([encoded(around(10.0, 1.0, 2000)).as_str()]).unwrap();
        let b = Latencies::from_hdr_base64([encoded(around(5.0, 0.5, 2000)).as_str()]).unwrap();
        let faster = percentile_ratio(&a, &b, 50.0);
        assert!((faster.ratio - 0.5).abs() < 0.01, "{faster:?}");
        assert!(!faster.contains_one() && faster.high < 0.55, "{faster:?}");
        let same = Latencies::from_hdr_base64([encoded(around(10.0, 1.0, 2000)).as_str()]).unwrap();
        let none = percentile_ratio(&a, &same, 90.0);
        assert!(none.contains_one(), "{none:?}");
        assert!(mean_ratio(&a, &same).contains_one());
        assert!(!mean_ratio(&a, &b).contains_one());
    }

    #[test]
    fn few_noisy_samples_give_a_wide_interval() {
        let a = Latencies::from_hdr_base64([encoded(around(10.0, 5.0, 10)).as_str()]).unwrap();
        let b = Latencies::from_hdr_base64([encoded(around(11.0, 5.0, 10)).as_str()]).unwrap();
        let r = percentile_ratio(&a, &b, 50.0);
        assert!(r.contains_one(), "{r:?}");
        assert!(r.high - r.low > 0.3, "{r:?}");
    }

    #[test]
    fn histograms_of_several_runs_merge() {
        let one = encoded([1.0, 2.0]);
        let two = encoded([3.0, 4.0]);
        let lat = Latencies::from_hdr_base64([one.as_str(), two.as_str()]).unwrap();
        assert_eq!(lat.count(), 4);
        assert!((lat.percentile_ms(100.0) - 4.0).abs() < 0.01);
    }

    #[test]
    fn unreadable_histograms_are_errors() {
        assert!(matches!(
            Latencies::from_hdr_base64(["%%%"]),
            Err(HistogramError::Base64(_))
        ));
        assert!(matches!(
            Latencies::from_hdr_base64(["AAAA"]),
            Err(HistogramError::Decode(_))
        ));
        assert!(matches!(
            Latencies::from_hdr_base64(std::iter::empty()),
            Err(HistogramError::Empty)
        ));
        // A result retention reduced to its summary says so.
        let one = encoded([7.0]);
        assert!(matches!(
            Latencies::from_hdr_base64([one.as_str(), ""]),
            Err(HistogramError::Dropped)
        ));
        let one = Latencies::from_hdr_base64([encoded([7.0]).as_str()]).unwrap();
        let r = percentile_ratio(&one, &one, 50.0);
        assert_eq!((r.low, r.ratio, r.high), (1.0, 1.0, 1.0));
    }
}
