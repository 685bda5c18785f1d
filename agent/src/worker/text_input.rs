//! Text input for a worker: sentences through the model's tokenizer, grouped into batches padded
//! to a common length, and matched to the model's declared inputs by name and shape.

use super::error::InputError;
use super::protocol::WorkerJob;
use crate::engine::Model;

/// One sentence as token ids, mask and type ids.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenInput {
    pub ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub type_ids: Vec<i64>,
}

/// Several sentences padded to one length: row-major `[rows, columns]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBatch {
    pub rows: usize,
    pub columns: usize,
    pub ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub type_ids: Vec<i64>,
}

/// Tokenizes every sentence of the job (padding/truncating to its sequence length, if set).
pub fn tokenize(job: &WorkerJob) -> Result<Vec<TokenInput>, InputError> {
    encode(&load_tokenizer(job)?, &job.sentences)
}

/// The model's tokenizer, set to pad/truncate to the job's sequence length (if any).
pub fn load_tokenizer(job: &WorkerJob) -> Result<tokenizers::Tokenizer, InputError> {
    let path = job.tokenizer_path.as_ref().ok_or(InputError::NoTokenizer)?;
    let mut tokenizer =
        tokenizers::Tokenizer::from_file(path).map_err(|e| InputError::Tokenizer {
            path: path.clone(),
            message: e.to_string(),
        })?;
    match job.sequence_length {
        None => {
            tokenizer.with_padding(None);
            tokenizer
                .with_truncation(None)
                .map_err(|e| InputError::TokenizerSettings(e.to_string()))?;
        }
        Some(len) => {
            let len = len as usize;
            tokenizer.with_padding(Some(tokenizers::PaddingParams {
                strategy: tokenizers::PaddingStrategy::Fixed(len),
                ..Default::default()
            }));
            tokenizer
                .with_truncation(Some(tokenizers::TruncationParams {
                    max_length: len,
                    ..Default::default()
                }))
                .map_err(|e| InputError::TokenizerSettings(e.to_string()))?;
        }
    }
    Ok(tokenizer)
}

/// Each sentence as token ids, mask and type ids.
pub fn encode(
    tokenizer: &tokenizers::Tokenizer,
    sentences: &[String],
) -> Result<Vec<TokenInput>, InputError> {
    if sentences.is_empty() {
        return Err(InputError::NoSentences);
    }
    sentences
        .iter()
        .map(|s| {
            let enc = tokenizer
                .encode(s.as_str(), true)
                .map_err(|e| InputError::Tokenize {
                    sentence: s.clone(),
                    message: e.to_string(),
                })?;
            let widen = |v: &[u32]| v.iter().map(|&x| i64::from(x)).collect::<Vec<i64>>();
            Ok(TokenInput {
                ids: widen(enc.get_ids()),
                attention_mask: widen(enc.get_attention_mask()),
                type_ids: widen(enc.get_type_ids()),
            })
        })
        .collect()
}

/// `rows` consecutive sentences from `start` (wrapping around), padded with zeros (and a zero
/// attention mask) to the longest of them.
pub fn batch(sentences: &[TokenInput], start: usize, rows: usize) -> TokenBatch {
    let picked: Vec<&TokenInput> = (0..rows)
        .map(|i| &sentences[(start + i) % sentences.len()])
        .collect();
    let columns = picked.iter().map(|t| t.ids.len()).max().unwrap_or(0);
    let pad = |v: &[i64]| {
        let mut row = v.to_vec();
        row.resize(columns, 0);
        row
    };
    TokenBatch {
        rows,
        columns,
        ids: picked.iter().flat_map(|t| pad(&t.ids)).collect(),
        attention_mask: picked.iter().flat_map(|t| pad(&t.attention_mask)).collect(),
        type_ids: picked.iter().flat_map(|t| pad(&t.type_ids)).collect(),
    }
}

/// Matches a batch to the model's declared inputs; an input text cannot feed, or a shape the
/// model cannot take, is an error naming the input with the expected and the given shape.
pub fn feed_for(model: &Model, batch: &TokenBatch) -> Result<Vec<(String, Vec<i64>)>, InputError> {
    let given = [batch.rows as i64, batch.columns as i64];
    let mut feed = Vec::new();
    for input in &model.inputs {
        let values = match input.name.as_str() {
            "input_ids" => batch.ids.clone(),
            "attention_mask" => batch.attention_mask.clone(),
            "token_type_ids" => batch.type_ids.clone(),
            other => {
                return Err(InputError::NotText {
                    name: other.to_string(),
                    dtype: input.dtype.clone(),
                    shape: shape_text(&input.shape),
                })
            }
        };
        if input.dtype != "i64" {
            return Err(InputError::NotTokens {
                name: input.name.clone(),
                dtype: input.dtype.clone(),
            });
        }
        let fits = input.shape.len() == 2
            && input
                .shape
                .iter()
                .zip(given)
                .all(|(&want, have)| want < 0 || want == have);
        if !fits {
            let note = match input.shape.get(1) {
                Some(&n) if n > 0 && n != given[1] => {
                    format!("; set `sequence_length = {n}` in the suite's [input]")
                }
                _ => String::new(),
            };
            return Err(InputError::Shape {
                name: input.name.clone(),
                expected: shape_text(&input.shape),
                given: shape_text(&given),
                note,
            });
        }
        feed.push((input.name.clone(), values));
    }
    Ok(feed)
}

/// `[batch, 128]` style, with `?` for dynamic dimensions.
pub(crate) fn shape_text(shape: &[i64]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|&d| {
            if d < 0 {
                "?".to_string()
            } else {
                d.to_string()
            }
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentence(ids: &[i64]) -> TokenInput {
        TokenInput {
            ids: ids.to_vec(),
            attention_mask: vec![1; ids.len()],
            type_ids: vec![0; ids.len()],
        }
    }

    #[test]
    fn batches_pad_to_the_longest_sentence_and_wrap_around() {
        let s = [sentence(&[5, 6, 7]), sentence(&[8])];
        let b = batch(&s, 1, 3);
        assert_eq!((b.rows, b.columns), (3, 3));
        assert_eq!(b.ids, [8, 0, 0, 5, 6, 7, 8, 0, 0]);
        assert_eq!(b.attention_mask, [1, 0, 0, 1, 1, 1, 1, 0, 0]);
        let single = batch(&s, 0, 1);
        assert_eq!(
            (single.rows, single.columns, single.ids.clone()),
            (1, 3, vec![5, 6, 7])
        );
    }

    #[test]
    fn shapes_read_naturally() {
        assert_eq!(shape_text(&[-1, 128]), "[?, 128]");
    }
}
