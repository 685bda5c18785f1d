//! Quality of a model against a reference on golden inputs: what quantization gave up. Cosine
//! similarity of mean-pooled embeddings (or of whole outputs), top-1 agreement and mean KL
//! divergence of logits, exact match of classes (or of yes/no decisions), and the text a CTC
//! recogniser reads. Pure functions over output tensors.

use std::collections::BTreeMap;

use crate::engine::FloatOutput;

/// The metrics a suite can ask for.
pub const METRICS: [&str; 4] = ["cosine", "logits", "classes", "ctc"];

/// Why outputs cannot be compared.
#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    #[error("unknown quality metric `{metric}` (supported: {supported})", supported = METRICS.join(", "))]
    UnknownMetric { metric: String },
    #[error("the model's output shape {candidate:?} differs from the reference's {reference:?}")]
    ShapeDiffers {
        candidate: Vec<i64>,
        reference: Vec<i64>,
    },
    #[error("logits have no dimensions")]
    NoDimensions,
    #[error("cosine needs a [1, sequence, width] or [1, width] output, not {0:?}")]
    NotPoolable(Vec<i64>),
    #[error("the model's sentence vector has {candidate} values, the reference's {reference}")]
    WidthDiffers { candidate: usize, reference: usize },
    #[error("mask of {mask} for a sequence of {sequence}")]
    MaskLength { mask: usize, sequence: usize },
    #[error("ctc needs a [1, time, classes] output, not {0:?}")]
    NotCtc(Vec<i64>),
    #[error("the model is a decoder but its quality reference is not")]
    ReferenceNotDecoder,
}

/// Compares candidate and reference outputs, one pair per golden input (with its attention
/// mask; empty for audio and image input); returns named values such as `cosine_mean`.
///
/// - `cosine`: of mean-pooled `[1, sequence, width]` outputs where there is a mask (sentence
///   embeddings; a `[1, width]` output is compared as it is), else of the whole outputs flattened (a detector's map, a track of
///   probabilities); `cosine_mean`, `cosine_min` over the pairs.
/// - `logits`: each row of the last dimension is a distribution: `top1_agreement`, `kl_mean`.
/// - `classes`: each row of the last dimension is a decision, the highest class; a row of one
///   value is a probability and the decision is whether it is above 0.5: `exact_match` (rows
///   that agree), and for yes/no decisions `positive_rate` and `reference_positive_rate`.
/// - `ctc`: `[1, time, classes]` outputs decoded greedily (blank is class 0, repeats merged;
///   as in PaddleOCR the last class is the space, not counted at either end of a line):
///   `text_exact_match` (lines read the same) and `char_error_rate` (edits per reference
///   character).
pub fn compare(
    metric: &str,
    pairs: &[(FloatOutput, FloatOutput, Vec<i64>)],
) -> Result<BTreeMap<String, f64>, QualityError> {
    let mut out = BTreeMap::new();
    match metric {
        "cosine" => {
            let sims = pairs
                .iter()
                .map(|(c, r, mask)| {
                    if mask.is_empty() {
                        same_shape(c, r)?;
                        let widen = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
                        Ok(cosine(&widen(&c.values), &widen(&r.values)))
                    } else {
                        let (c, r) = (sentence_vector(c, mask)?, sentence_vector(r, mask)?);
                        if c.len() != r.len() {
                            return Err(QualityError::WidthDiffers {
                                candidate: c.len(),
                                reference: r.len(),
                            });
                        }
                        Ok(cosine(&c, &r))
                    }
                })
                .collect::<Result<Vec<f64>, QualityError>>()?;
            out.insert("cosine_mean".into(), mean(&sims));
            out.insert(
                "cosine_min".into(),
                sims.iter().copied().fold(f64::INFINITY, f64::min),
            );
        }
        "logits" => {
            let (mut agree, mut total, mut kl_sum) = (0usize, 0usize, 0.0);
            for (c, r, _) in pairs {
                same_shape(c, r)?;
                let vocab = *c.shape.last().ok_or(QualityError::NoDimensions)? as usize;
                for (cv, rv) in c.values.chunks(vocab).zip(r.values.chunks(vocab)) {
                    agree += usize::from(argmax(cv) == argmax(rv));
                    kl_sum += kl_divergence(rv, cv);
                    total += 1;
                }
            }
            out.insert("top1_agreement".into(), agree as f64 / total.max(1) as f64);
            out.insert("kl_mean".into(), kl_sum / total.max(1) as f64);
        }
        "classes" => {
            let (mut agree, mut total, mut positive, mut reference_positive) = (0, 0, 0, 0);
            let mut binary = false;
            for (c, r, _) in pairs {
                same_shape(c, r)?;
                let width = (*c.shape.last().unwrap_or(&1)).max(1) as usize;
                binary = width == 1;
                for (cv, rv) in c.values.chunks(width).zip(r.values.chunks(width)) {
                    let (a, b) = if binary {
                        (usize::from(cv[0] > 0.5), usize::from(rv[0] > 0.5))
                    } else {
                        (argmax(cv), argmax(rv))
                    };
                    agree += usize::from(a == b);
                    positive += a;
                    reference_positive += b;
                    total += 1;
                }
            }
            let rate = |n: usize| n as f64 / total.max(1) as f64;
            out.insert("exact_match".into(), rate(agree));
            if binary {
                out.insert("positive_rate".into(), rate(positive));
                out.insert("reference_positive_rate".into(), rate(reference_positive));
            }
        }
        "ctc" => {
            let (mut same, mut edits, mut chars) = (0usize, 0usize, 0usize);
            for (c, r, _) in pairs {
                same_shape(c, r)?;
                let (read, expected) = (ctc_decode(c)?, ctc_decode(r)?);
                same += usize::from(read == expected);
                edits += edit_distance(&read, &expected);
                chars += expected.len();
            }
            out.insert(
                "text_exact_match".into(),
                same as f64 / pairs.len().max(1) as f64,
            );
            out.insert("char_error_rate".into(), edits as f64 / chars.max(1) as f64);
        }
        other => {
            return Err(QualityError::UnknownMetric {
                metric: other.to_string(),
            })
        }
    }
    Ok(out)
}

fn same_shape(c: &FloatOutput, r: &FloatOutput) -> Result<(), QualityError> {
    if c.shape == r.shape {
        Ok(())
    } else {
        Err(QualityError::ShapeDiffers {
            candidate: c.shape.clone(),
            reference: r.shape.clone(),
        })
    }
}

/// Mean over the sequence of a `[1, sequence, width]` output, counting only positions whose mask
/// is 1: the sentence embedding of a transformer encoder.
/// One sentence's vector: a `[1, sequence, width]` output mean-pooled over the mask, or a
/// `[1, width]` output (an already pooled sentence embedding) as it is.
pub fn sentence_vector(output: &FloatOutput, mask: &[i64]) -> Result<Vec<f64>, QualityError> {
    match output.shape[..] {
        [1, _] => Ok(output.values.iter().map(|&v| f64::from(v)).collect()),
        _ => mean_pool(output, mask),
    }
}

pub fn mean_pool(output: &FloatOutput, mask: &[i64]) -> Result<Vec<f64>, QualityError> {
    let [_, seq, width] = output.shape[..] else {
        return Err(QualityError::NotPoolable(output.shape.clone()));
    };
    let (seq, width) = (seq as usize, width as usize);
    if mask.len() != seq {
        return Err(QualityError::MaskLength {
            mask: mask.len(),
            sequence: seq,
        });
    }
    let mut sum = vec![0.0f64; width];
    let mut n = 0.0f64;
    for (row, &m) in output.values.chunks(width).zip(mask) {
        if m != 0 {
            for (s, &v) in sum.iter_mut().zip(row) {
                *s += f64::from(v);
            }
            n += 1.0;
        }
    }
    Ok(sum.into_iter().map(|s| s / n.max(1.0)).collect())
}

pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b)).max(f64::MIN_POSITIVE)
}

/// Greedy CTC decoding of a `[1, time, classes]` (or `[time, classes]`) output: the best class
/// per step, repeats merged, blanks (class 0) dropped, the space (the last class) trimmed at
/// both ends.
pub fn ctc_decode(output: &FloatOutput) -> Result<Vec<usize>, QualityError> {
    let classes = match output.shape[..] {
        [1, _, c] | [_, c] if c > 1 => c as usize,
        _ => return Err(QualityError::NotCtc(output.shape.clone())),
    };
    let mut labels = Vec::new();
    let mut previous = 0;
    for step in output.values.chunks(classes) {
        let best = argmax(step);
        if best != 0 && best != previous {
            labels.push(best);
        }
        previous = best;
    }
    let space = classes - 1;
    let start = labels
        .iter()
        .position(|&l| l != space)
        .unwrap_or(labels.len());
    let end = labels
        .iter()
        .rposition(|&l| l != space)
        .map_or(start, |i| i + 1);
    Ok(labels[start..end].to_vec())
}

/// Levenshtein distance.
fn edit_distance(a: &[usize], b: &[usize]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(x != y);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// KL(p ‖ q) of the softmax distributions of two logit rows, in nats.
pub fn kl_divergence(p_logits: &[f32], q_logits: &[f32]) -> f64 {
    let log_softmax = |v: &[f32]| {
        let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let log_sum = v.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
        v.iter()
            .map(move |&x| x as f64 - max - log_sum)
            .collect::<Vec<f64>>()
    };
    let (lp, lq) = (log_softmax(p_logits), log_softmax(q_logits));
    lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(shape: &[i64], values: &[f32]) -> FloatOutput {
        FloatOutput {
            shape: shape.to_vec(),
            values: values.to_vec(),
        }
    }

    #[test]
    fn mean_pooling_skips_padding_and_cosine_compares_directions() {
        let hidden = out(&[1, 3, 2], &[1.0, 0.0, 3.0, 0.0, 100.0, 100.0]);
        assert_eq!(mean_pool(&hidden, &[1, 1, 0]).unwrap(), vec![2.0, 0.0]);
        assert!((cosine(&[1.0, 0.0], &[2.0, 0.0]) - 1.0).abs() < 1e-12);
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-12);
        let same = compare("cosine", &[(hidden.clone(), hidden.clone(), vec![1, 1, 1])]).unwrap();
        assert!((same["cosine_mean"] - 1.0).abs() < 1e-12);
        assert!(mean_pool(&out(&[1, 2], &[1.0, 2.0]), &[1, 1]).is_err());
        // A pooled [1, width] embedding is compared as it is, also against a reference whose
        // [1, sequence, width] output is pooled here.
        let pooled = out(&[1, 2], &[2.0, 0.0]);
        let m = compare("cosine", &[(pooled.clone(), hidden.clone(), vec![1, 1, 0])]).unwrap();
        assert!((m["cosine_mean"] - 1.0).abs() < 1e-12, "{m:?}");
        let wide = out(&[1, 3], &[2.0, 0.0, 1.0]);
        assert!(compare("cosine", &[(wide, pooled, vec![1, 1])]).is_err());
    }

    #[test]
    fn logits_agreement_and_kl() {
        let reference = out(&[1, 2, 3], &[0.0, 5.0, 0.0, 4.0, 0.0, 0.0]);
        let candidate = out(&[1, 2, 3], &[0.0, 4.0, 0.0, 0.0, 4.0, 0.0]);
        let m = compare("logits", &[(candidate, reference.clone(), vec![1, 1])]).unwrap();
        assert_eq!(m["top1_agreement"], 0.5);
        assert!(m["kl_mean"] > 0.0);
        let m = compare("logits", &[(reference.clone(), reference, vec![1, 1])]).unwrap();
        assert!(m["kl_mean"].abs() < 1e-12);
        assert!((kl_divergence(&[1.0, 2.0], &[1.0, 2.0])).abs() < 1e-12);
    }

    #[test]
    fn cosine_of_whole_outputs_without_a_mask() {
        let a = out(&[1, 1, 2, 2], &[0.0, 1.0, 0.0, 1.0]);
        let b = out(&[1, 1, 2, 2], &[0.0, 2.0, 0.0, 2.0]);
        let c = out(&[1, 1, 2, 2], &[1.0, 0.0, 1.0, 0.0]);
        let m = compare("cosine", &[(a.clone(), b, vec![]), (a.clone(), c, vec![])]).unwrap();
        assert!((m["cosine_mean"] - 0.5).abs() < 1e-12, "{m:?}");
        assert!(m["cosine_min"].abs() < 1e-12);
        assert!(compare("cosine", &[(a, out(&[1, 3], &[1.0; 3]), vec![])]).is_err());
    }

    #[test]
    fn yes_no_decisions_of_probability_tracks() {
        // Speech probabilities per chunk: [chunks, 1].
        let reference = out(&[4, 1], &[0.9, 0.8, 0.2, 0.1]);
        let candidate = out(&[4, 1], &[0.7, 0.4, 0.3, 0.6]);
        let m = compare("classes", &[(candidate, reference, vec![])]).unwrap();
        assert_eq!(m["exact_match"], 0.5);
        assert_eq!(m["positive_rate"], 0.5);
        assert_eq!(m["reference_positive_rate"], 0.5);
        // Rows of several classes compare their highest class, one decision a row.
        let reference = out(&[1, 3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
        let candidate = out(&[1, 3, 2], &[1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
        let m = compare("classes", &[(candidate, reference, vec![])]).unwrap();
        assert!((m["exact_match"] - 2.0 / 3.0).abs() < 1e-12);
        assert!(!m.contains_key("positive_rate"));
    }

    /// One-hot steps of a [1, time, classes] output.
    fn steps(best: &[usize], classes: usize) -> FloatOutput {
        let mut values = vec![0.0; best.len() * classes];
        for (t, &c) in best.iter().enumerate() {
            values[t * classes + c] = 1.0;
        }
        out(&[1, best.len() as i64, classes as i64], &values)
    }

    #[test]
    fn ctc_reads_text_greedily() {
        // Classes: 0 blank, 1..=3 characters, 4 the space.
        assert_eq!(
            ctc_decode(&steps(&[4, 1, 1, 0, 1, 2, 2, 4, 3, 4, 0], 5)).unwrap(),
            [1, 1, 2, 4, 3]
        );
        assert!(ctc_decode(&out(&[2, 3, 4], &[0.0; 24])).is_err());
        let reference = [steps(&[1, 2, 3, 0], 5), steps(&[2, 0, 2, 0], 5)];
        let pairs = |candidate: [FloatOutput; 2]| -> Vec<_> {
            candidate
                .into_iter()
                .zip(reference.clone())
                .map(|(c, r)| (c, r, vec![]))
                .collect()
        };
        // A leading space and a held step read the same text.
        let m = compare(
            "ctc",
            &pairs([steps(&[4, 1, 2, 3], 5), steps(&[2, 2, 0, 2], 5)]),
        )
        .unwrap();
        assert_eq!((m["text_exact_match"], m["char_error_rate"]), (1.0, 0.0));
        let m = compare(
            "ctc",
            &pairs([steps(&[1, 3, 0, 0], 5), steps(&[2, 0, 2, 0], 5)]),
        )
        .unwrap();
        assert_eq!(m["text_exact_match"], 0.5);
        assert!((m["char_error_rate"] - 1.0 / 5.0).abs() < 1e-12, "{m:?}");
        assert_eq!(edit_distance(&[1, 2, 3], &[1, 3]), 1);
        assert_eq!(edit_distance(&[], &[1, 2]), 2);
    }

    #[test]
    fn classes_and_bad_metrics() {
        let a = out(&[1, 3], &[0.1, 0.7, 0.2]);
        let b = out(&[1, 3], &[0.0, 0.9, 0.1]);
        assert_eq!(
            compare("classes", &[(a.clone(), b, vec![])]).unwrap()["exact_match"],
            1.0
        );
        assert!(compare("bleu", &[])
            .unwrap_err()
            .to_string()
            .contains("unknown quality metric"));
        let wide = out(&[1, 4], &[0.0; 4]);
        assert!(compare("classes", &[(a, wide, vec![])])
            .unwrap_err()
            .to_string()
            .contains("differs"));
    }
}
