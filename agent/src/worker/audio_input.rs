//! Audio input for a worker: WAV files read into mono float samples, cut into fixed chunks (with
//! context samples of the previous chunk in front), and streamed through a model one chunk a
//! query, its recurrent state carried from chunk to chunk (Silero VAD's `state` → `stateN`).
//! WAV files are decoded by `hound`.

use std::path::Path;

use crate::engine::{Carry, EngineError, Feed, FloatOutput, Model, OutputChoice, TensorData};

use super::error::{InputError, WavError};
use super::text_input::shape_text;

/// A decoded WAV file: mono samples in [-1, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Wav {
    pub sample_rate: u32,
    /// Channels in the file (averaged into `samples`).
    pub channels: u16,
    pub samples: Vec<f32>,
}

/// Reads a RIFF/WAVE file: PCM of 8, 16, 24 or 32 bits, or 32-bit float (also in the
/// WAVE_FORMAT_EXTENSIBLE wrapper); several channels are averaged into one.
pub fn read_wav(path: &Path) -> Result<Wav, InputError> {
    let bytes = std::fs::read(path).map_err(|source| InputError::ReadAudio {
        path: path.to_path_buf(),
        source,
    })?;
    parse_wav(&bytes).map_err(|source| InputError::Wav {
        path: path.to_path_buf(),
        source,
    })
}

/// [`read_wav`] on bytes. The `fmt ` and `data` chunks are found here (hound does not skip the
/// pad byte after an odd-sized chunk, and wants `fmt ` first), the data cut to whole frames (a
/// truncated file reads up to its last whole frame), and `hound` decodes the two.
pub fn parse_wav(bytes: &[u8]) -> Result<Wav, WavError> {
    hound::read_wave_header(&mut std::io::Cursor::new(bytes)).map_err(|_| WavError::NotWav)?;
    let format = chunk(bytes, b"fmt ").ok_or(WavError::NoFormat)?;
    let data = chunk(bytes, b"data").ok_or(WavError::NoData)?;
    if format.len() < 16 {
        return Err(WavError::FormatTooShort);
    }
    let frame = usize::from(u16::from_le_bytes([format[12], format[13]])).max(1);
    let data = &data[..data.len() - data.len() % frame];
    let mut wav = Vec::with_capacity(28 + format.len() + data.len());
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(
        &((20 + format.len() + format.len() % 2 + data.len()) as u32).to_le_bytes(),
    );
    wav.extend_from_slice(b"WAVE");
    for (id, body) in [(b"fmt ", format), (b"data", data)] {
        wav.extend_from_slice(id);
        wav.extend_from_slice(&(body.len() as u32).to_le_bytes());
        wav.extend_from_slice(body);
        if body.len() % 2 == 1 {
            wav.push(0);
        }
    }
    let mut reader =
        hound::WavReader::new(std::io::Cursor::new(wav)).map_err(|e| diagnose(format, e))?;
    let spec = reader.spec();
    // hound takes a sample rate of 0 when the byte rate agrees.
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(WavError::NoChannels);
    }
    // hound takes integer samples as wide as the block allows (`fmt ` of 1040 bits), but reads
    // none wider than 32 bits; they are refused here, before the scale is worked out from them.
    if spec.sample_format == hound::SampleFormat::Int && !(1..=32).contains(&spec.bits_per_sample) {
        return Err(WavError::Unsupported {
            tag: format_tag(format),
            bits: spec.bits_per_sample,
        });
    }
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().collect::<Result<_, _>>(),
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|s| s as f32 * scale))
                .collect::<Result<_, _>>()
        }
    }
    .map_err(WavError::Malformed)?;
    let samples = interleaved
        .chunks_exact(usize::from(spec.channels))
        .map(|frame| frame.iter().sum::<f32>() / f32::from(spec.channels))
        .collect();
    Ok(Wav {
        sample_rate: spec.sample_rate,
        channels: spec.channels,
        samples,
    })
}

/// Says why `hound` would not read a `fmt ` chunk, in edgefleet's words where the cause is a
/// known one: no channels or an encoding edgefleet does not read (named by its format tag and
/// bits).
fn diagnose(format: &[u8], error: hound::Error) -> WavError {
    let u16_at = |i: usize| u16::from_le_bytes([format[i], format[i + 1]]);
    let (tag, channels, bits) = (format_tag(format), u16_at(2), u16_at(14));
    let sample_rate = u32::from_le_bytes([format[4], format[5], format[6], format[7]]);
    if channels == 0 || sample_rate == 0 {
        WavError::NoChannels
    } else if !matches!((tag, bits), (1, 8 | 16 | 24 | 32) | (3, 32)) {
        WavError::Unsupported { tag, bits }
    } else {
        WavError::Malformed(error)
    }
}

/// The encoding a `fmt ` chunk (at least 16 bytes) names: its format tag, or for
/// WAVE_FORMAT_EXTENSIBLE the sub-format GUID's first two bytes.
fn format_tag(format: &[u8]) -> u16 {
    let u16_at = |i: usize| u16::from_le_bytes([format[i], format[i + 1]]);
    match u16_at(0) {
        0xFFFE if format.len() >= 26 => u16_at(24),
        tag => tag,
    }
}

/// The body of the first RIFF chunk named `id` (cut short where the file ends).
fn chunk<'a>(bytes: &'a [u8], id: &[u8; 4]) -> Option<&'a [u8]> {
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        if &bytes[at..at + 4] == id {
            return Some(&bytes[at + 8..(at + 8).saturating_add(size).min(bytes.len())]);
        }
        // Chunks are padded to an even size.
        at = at
            .saturating_add(8)
            .saturating_add(size)
            .saturating_add(size % 2);
    }
    None
}

/// Every whole chunk of `samples`, each behind the `context` samples that precede it (zeros
/// before the start): `context + chunk` values a chunk. A tail shorter than a chunk is dropped.
pub fn chunks(samples: &[f32], chunk: usize, context: usize) -> Vec<Vec<f32>> {
    (0..samples.len() / chunk.max(1))
        .map(|k| {
            let start = k * chunk;
            let mut out = vec![0.0; context.saturating_sub(start)];
            out.extend_from_slice(&samples[start.saturating_sub(context)..start + chunk]);
            out
        })
        .collect()
}

/// The audio settings of a job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioSpec {
    pub sample_rate: u32,
    pub chunk_samples: u32,
    pub context_samples: u32,
}

/// One file's chunks, read and checked against the job's sample rate.
pub fn load_chunks(path: &Path, spec: AudioSpec) -> Result<Vec<Vec<f32>>, InputError> {
    let wav = read_wav(path)?;
    if wav.sample_rate != spec.sample_rate {
        return Err(InputError::SampleRate {
            path: path.to_path_buf(),
            have: wav.sample_rate,
            want: spec.sample_rate,
        });
    }
    let out = chunks(
        &wav.samples,
        spec.chunk_samples as usize,
        spec.context_samples as usize,
    );
    if out.is_empty() {
        return Err(InputError::TooShort {
            path: path.to_path_buf(),
            samples: wav.samples.len(),
            chunk: spec.chunk_samples,
        });
    }
    Ok(out)
}

/// The files as one stream of queries: each chunk's feed (`rows` copies side by side for a
/// batched scenario), and whether it starts a file (the state is then reset).
pub struct Stream {
    feeds: Vec<(Feed, bool)>,
    carry: Carry,
}

impl Stream {
    /// Matches the chunks to the model's inputs: its recurrent inputs are carried, an `sr`
    /// input gets the sample rate, and the one remaining float input takes the audio.
    pub fn new(
        model: &Model,
        files: &[Vec<Vec<f32>>],
        spec: AudioSpec,
        rows: usize,
    ) -> Result<Stream, InputError> {
        let carry = model.carry(rows)?;
        let carried: Vec<&str> = carry.inputs().collect();
        let width = (spec.context_samples + spec.chunk_samples) as usize;
        let given = [rows as i64, width as i64];
        let mut audio = None;
        let mut sample_rate = None;
        for input in &model.inputs {
            if carried.contains(&input.name.as_str()) {
                continue;
            }
            if input.name == "sr" && input.dtype == "i64" && input.shape.is_empty() {
                sample_rate = Some(input.name.clone());
                continue;
            }
            if input.dtype != "f32" || audio.is_some() {
                return Err(InputError::NotAudio {
                    name: input.name.clone(),
                    dtype: input.dtype.clone(),
                    shape: shape_text(&input.shape),
                });
            }
            let fits = input.shape.len() == 2
                && input
                    .shape
                    .iter()
                    .zip(given)
                    .all(|(&want, have)| want < 0 || want == have);
            if !fits {
                return Err(InputError::Shape {
                    name: input.name.clone(),
                    expected: shape_text(&input.shape),
                    given: shape_text(&given),
                    note: format!(
                        " ({} context + {} new samples per chunk)",
                        spec.context_samples, spec.chunk_samples
                    ),
                });
            }
            audio = Some(input.name.clone());
        }
        let audio = audio.ok_or(InputError::NoAudioInput)?;
        let mut feeds = Vec::new();
        for file in files {
            for (k, chunk) in file.iter().enumerate() {
                let mut named = vec![(
                    audio.clone(),
                    vec![rows, width],
                    TensorData::F32(chunk.repeat(rows)),
                )];
                if let Some(sr) = &sample_rate {
                    named.push((
                        sr.clone(),
                        Vec::new(),
                        TensorData::I64(vec![i64::from(spec.sample_rate)]),
                    ));
                }
                let feed = model.feed_tensors(named)?;
                feeds.push((feed, k == 0));
            }
        }
        Ok(Stream { feeds, carry })
    }

    /// Chunks in the stream (a query each).
    pub fn len(&self) -> usize {
        self.feeds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.feeds.is_empty()
    }

    /// Runs query `i` (chunk `i` of the stream, wrapping around) with the carried state; returns
    /// the output `keep_output` picks, when given.
    pub fn run(
        &mut self,
        model: &mut Model,
        i: usize,
        keep_output: Option<&OutputChoice>,
    ) -> Result<Option<FloatOutput>, EngineError> {
        let (feed, starts_file) = &self.feeds[i % self.feeds.len()];
        if *starts_file {
            self.carry.reset();
        }
        model.run_streaming(feed, &mut self.carry, keep_output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAV file as a writer would produce it.
    fn wav(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8], extra: &[u8]) -> Vec<u8> {
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&tag.to_le_bytes());
        fmt.extend_from_slice(&channels.to_le_bytes());
        fmt.extend_from_slice(&rate.to_le_bytes());
        let block = channels * bits / 8;
        fmt.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
        fmt.extend_from_slice(&block.to_le_bytes());
        fmt.extend_from_slice(&bits.to_le_bytes());
        fmt.extend_from_slice(extra);
        let mut body = b"WAVE".to_vec();
        for (id, chunk) in [(b"fmt ", &fmt[..]), (b"LIST", &b"abc"[..]), (b"data", data)] {
            body.extend_from_slice(id);
            body.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
            body.extend_from_slice(chunk);
            if chunk.len() % 2 == 1 {
                body.push(0);
            }
        }
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn pcm_and_float_wav_files_read_as_mono_samples() {
        let pcm16: Vec<u8> = [0i16, 16384, -32768, 32767]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let w = parse_wav(&wav(1, 1, 16000, 16, &pcm16, &[])).unwrap();
        assert_eq!((w.sample_rate, w.channels), (16000, 1));
        assert_eq!(w.samples, [0.0, 0.5, -1.0, 32767.0 / 32768.0]);

        // Two channels are averaged; an odd-sized chunk before `data` is skipped with its pad.
        let stereo: Vec<u8> = [16384i16, 0, -16384, -16384]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let w = parse_wav(&wav(1, 2, 8000, 16, &stereo, &[])).unwrap();
        assert_eq!(w.samples, [0.25, -0.5]);

        let float: Vec<u8> = [0.25f32, -0.75]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        assert_eq!(
            parse_wav(&wav(3, 1, 16000, 32, &float, &[]))
                .unwrap()
                .samples,
            [0.25, -0.75]
        );
        let pcm24 = [0x00, 0x00, 0x40, 0x00, 0x00, 0xC0];
        assert_eq!(
            parse_wav(&wav(1, 1, 16000, 24, &pcm24, &[]))
                .unwrap()
                .samples,
            [0.5, -0.5]
        );
        assert_eq!(
            parse_wav(&wav(1, 1, 16000, 8, &[128, 192, 0], &[]))
                .unwrap()
                .samples,
            [0.0, 0.5, -1.0]
        );
        // WAVE_FORMAT_EXTENSIBLE with a float sub-format.
        let mut extensible = vec![22, 0, 32, 0, 4, 0, 0, 0];
        extensible.extend_from_slice(&[
            3, 0, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71,
        ]);
        assert_eq!(
            parse_wav(&wav(0xFFFE, 1, 16000, 32, &float, &extensible))
                .unwrap()
                .samples,
            [0.25, -0.75]
        );
    }

    #[test]
    fn broken_or_unsupported_wav_files_say_why() {
        let cases: [(Vec<u8>, &str); 5] = [
            (b"RIFF\0\0\0\0WAVX".to_vec(), "not a WAV file"),
            (b"ID3 something".to_vec(), "not a WAV file"),
            (
                wav(2, 1, 16000, 4, &[0; 8], &[]),
                "unsupported WAV encoding (format 2, 4 bits)",
            ),
            (wav(1, 0, 16000, 16, &[0; 8], &[]), "no channels"),
            (
                b"RIFF\x0c\0\0\0WAVEdata\0\0\0\0".to_vec(),
                "no `fmt ` chunk",
            ),
        ];
        for (bytes, message) in cases {
            let err = parse_wav(&bytes).unwrap_err().to_string();
            assert!(err.contains(message), "{err}");
        }
        let err = read_wav(Path::new("/nonexistent/clip.wav"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot read /nonexistent/clip.wav"),
            "{err}"
        );
    }

    #[test]
    fn integer_samples_wider_than_32_bits_are_refused() {
        // Found by fuzzing (fuzz/regressions/wav_decode/): 1040-bit PCM in 1024-byte blocks,
        // which hound accepts, overflowed the scale's shift.
        let bytes = b"RIFF@\0\0\0WAVEfmt \x10\0\0\0\x01\0\x02\0@\x1f\0\0\0\0}\0\0\x04\x10\x04\
                      LIST\x03\0\0\0abc\0data\0\0\0\0\0\0\0";
        let err = parse_wav(bytes).unwrap_err().to_string();
        assert!(
            err.contains("unsupported WAV encoding (format 1, 1040 bits)"),
            "{err}"
        );
        // Through WAVE_FORMAT_EXTENSIBLE's valid-bits field, too.
        let mut extensible = vec![22, 0, 40, 0, 0, 0, 0, 0];
        extensible.extend_from_slice(&[
            1, 0, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71,
        ]);
        let err = parse_wav(&wav(0xFFFE, 1, 16000, 64, &[0; 16], &extensible))
            .unwrap_err()
            .to_string();
        assert!(err.contains("(format 1, 40 bits)"), "{err}");
    }

    #[test]
    fn chunks_carry_the_previous_samples_as_context() {
        let samples: Vec<f32> = (1..=7).map(|x| x as f32).collect();
        assert_eq!(
            chunks(&samples, 3, 2),
            [vec![0.0, 0.0, 1.0, 2.0, 3.0], vec![2.0, 3.0, 4.0, 5.0, 6.0]],
            "the tail (7) is shorter than a chunk"
        );
        assert_eq!(chunks(&samples, 4, 0), [vec![1.0, 2.0, 3.0, 4.0]]);
        assert!(chunks(&samples[..2], 3, 2).is_empty());
    }
}
