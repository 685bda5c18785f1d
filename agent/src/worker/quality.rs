//! Quality of a model against a reference on golden inputs: what quantization gave up. Cosine
//! similarity of mean-pooled embeddings, top-1 agreement and mean KL divergence of logits, exact
//! match of classes. Pure functions over output tensors.

use std::collections::BTreeMap;

use crate::engine::FloatOutput;

/// The metrics a suite can ask for.
pub const METRICS: [&str; 3] = ["cosine", "logits", "classes"];

/// Compares candidate and reference outputs, one pair per golden input (with its attention
/// mask); returns named values such as `cosine_mean`.
pub fn compare(
    metric: &str,
    pairs: &[(FloatOutput, FloatOutput, Vec<i64>)],
) -> Result<BTreeMap<String, f64>, String> {
    let mut out = BTreeMap::new();
    match metric {
        "cosine" => {
            let sims = pairs
                .iter()
                .map(|(c, r, mask)| Ok(cosine(&mean_pool(c, mask)?, &mean_pool(r, mask)?)))
                .collect::<Result<Vec<f64>, String>>()?;
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
                let vocab = *c.shape.last().ok_or("logits have no dimensions")? as usize;
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
            let mut agree = 0usize;
            for (c, r, _) in pairs {
                same_shape(c, r)?;
                agree += usize::from(argmax(&c.values) == argmax(&r.values));
            }
            out.insert(
                "exact_match".into(),
                agree as f64 / pairs.len().max(1) as f64,
            );
        }
        other => {
            return Err(format!(
                "unknown quality metric `{other}` (supported: {})",
                METRICS.join(", ")
            ))
        }
    }
    Ok(out)
}

fn same_shape(c: &FloatOutput, r: &FloatOutput) -> Result<(), String> {
    if c.shape == r.shape {
        Ok(())
    } else {
        Err(format!(
            "the model's output shape {:?} differs from the reference's {:?}",
            c.shape, r.shape
        ))
    }
}

/// Mean over the sequence of a `[1, sequence, width]` output, counting only positions whose mask
/// is 1: the sentence embedding of a transformer encoder.
pub fn mean_pool(output: &FloatOutput, mask: &[i64]) -> Result<Vec<f64>, String> {
    let [_, seq, width] = output.shape[..] else {
        return Err(format!(
            "cosine needs a [batch, sequence, width] output, not {:?}",
            output.shape
        ));
    };
    let (seq, width) = (seq as usize, width as usize);
    if mask.len() != seq {
        return Err(format!("mask of {} for a sequence of {seq}", mask.len()));
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
    fn classes_and_bad_metrics() {
        let a = out(&[1, 3], &[0.1, 0.7, 0.2]);
        let b = out(&[1, 3], &[0.0, 0.9, 0.1]);
        assert_eq!(
            compare("classes", &[(a.clone(), b, vec![])]).unwrap()["exact_match"],
            1.0
        );
        assert!(compare("bleu", &[])
            .unwrap_err()
            .contains("unknown quality metric"));
        let wide = out(&[1, 4], &[0.0; 4]);
        assert!(compare("classes", &[(a, wide, vec![])])
            .unwrap_err()
            .contains("differs"));
    }
}
