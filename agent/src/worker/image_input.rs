//! Image input for a worker: PNG or JPEG files decoded, resized to the suite's size (stretched,
//! or kept in proportion and padded), normalised per channel, and batched as float RGB
//! `[batch, 3, height, width]` for the model's one image input.

use std::path::Path;

use image::imageops::FilterType;

use crate::engine::{Feed, Model, TensorData};

use super::error::InputError;
use super::text_input::shape_text;

/// The image settings of a job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageSpec {
    pub width: u32,
    pub height: u32,
    /// Keep the aspect ratio and pad (true), or stretch to width × height (false).
    pub pad: bool,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// One image as the model sees it: `[3, height, width]`, channel by channel.
pub fn load(path: &Path, spec: ImageSpec) -> Result<Vec<f32>, InputError> {
    // By content, not by name: artifacts are stored under their sha256, without an extension.
    let error = |source: image::ImageError| InputError::Image {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::read(path).map_err(|e| error(image::ImageError::IoError(e)))?;
    let decoded = decode(&bytes).map_err(error)?;
    Ok(prepare(&decoded, spec))
}

/// The widest and tallest image a job reads, in pixels: far more than any model input, and under
/// the 65,535 rows where jpeg-decoder 0.3's row arithmetic (`(mcu_y + 1) * 8` in `u16`) overflows.
pub const MAX_SIDE: u32 = 16_384;

/// The most pixels an image a job reads may have (16.8 megapixels, 4096 × 4096): a model input
/// is far smaller, and fuzzing found progressive JPEGs of a few hundred bytes that declare 25–30
/// megapixels and take seconds to decode.
pub const MAX_PIXELS: u64 = 4096 * 4096;

/// Decodes a PNG or JPEG file's bytes (the format recognised by content) into RGB. An image
/// wider or taller than [`MAX_SIDE`], or of more than [`MAX_PIXELS`] pixels, is refused from its
/// header, before it is decoded.
pub fn decode(bytes: &[u8]) -> Result<image::RgbImage, image::ImageError> {
    let reader = || {
        image::io::Reader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(image::ImageError::IoError)
    };
    let (width, height) = reader()?.into_dimensions()?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > MAX_PIXELS {
        return Err(image::ImageError::IoError(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the image is {width}×{height} pixels ({:.1} megapixels), over the {:.1}-megapixel limit for an input",
                pixels as f64 / 1e6,
                MAX_PIXELS as f64 / 1e6
            ),
        )));
    }
    let mut reader = reader()?;
    let mut limits = image::io::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    Ok(reader.decode()?.to_rgb8())
}

/// Resizes (bilinear) and normalises an RGB image: `(value / 255 - mean) / std` per channel;
/// padding is 0 after normalising.
pub fn prepare(rgb: &image::RgbImage, spec: ImageSpec) -> Vec<f32> {
    let (w, h) = (spec.width, spec.height);
    let (fit_w, fit_h) = if spec.pad {
        let scale =
            (f64::from(w) / f64::from(rgb.width())).min(f64::from(h) / f64::from(rgb.height()));
        let side = |n: u32, max: u32| ((f64::from(n) * scale).round() as u32).clamp(1, max);
        (side(rgb.width(), w), side(rgb.height(), h))
    } else {
        (w, h)
    };
    let resized = if (fit_w, fit_h) == rgb.dimensions() {
        rgb.clone()
    } else {
        image::imageops::resize(rgb, fit_w, fit_h, FilterType::Triangle)
    };
    let plane = (w * h) as usize;
    let mut out = vec![0.0f32; 3 * plane];
    for (x, y, pixel) in resized.enumerate_pixels() {
        for c in 0..3 {
            out[c * plane + (y * w + x) as usize] =
                (f32::from(pixel[c]) / 255.0 - spec.mean[c]) / spec.std[c];
        }
    }
    out
}

/// One query's feed: `rows` consecutive images from `start` (wrapping around), matched to the
/// model's one float32 input of shape `[batch, 3, height, width]`; any other input, or a shape
/// the model cannot take, is an error naming the input with the expected and the given shape.
pub fn feed(
    model: &Model,
    images: &[Vec<f32>],
    start: usize,
    rows: usize,
    spec: ImageSpec,
) -> Result<Feed, InputError> {
    let given = [
        rows as i64,
        3,
        i64::from(spec.height),
        i64::from(spec.width),
    ];
    let [input] = &model.inputs[..] else {
        let names: Vec<String> = model
            .inputs
            .iter()
            .map(|i| format!("`{}` {}", i.name, shape_text(&i.shape)))
            .collect();
        return Err(InputError::ImageInputs(names.join(", ")));
    };
    if input.dtype != "f32" {
        return Err(InputError::NotImage {
            name: input.name.clone(),
            dtype: input.dtype.clone(),
        });
    }
    let fits = input.shape.len() == 4
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
            note: String::new(),
        });
    }
    let values = (0..rows)
        .flat_map(|r| images[(start + r) % images.len()].iter().copied())
        .collect();
    model
        .feed_tensors(vec![(
            input.name.clone(),
            given.iter().map(|&d| d as usize).collect(),
            TensorData::F32(values),
        )])
        .map_err(InputError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(width: u32, height: u32, pad: bool) -> ImageSpec {
        ImageSpec {
            width,
            height,
            pad,
            mean: [0.5; 3],
            std: [0.5; 3],
        }
    }

    #[test]
    fn images_are_normalised_channel_by_channel() {
        let rgb = image::RgbImage::from_fn(2, 1, |x, _| {
            if x == 0 {
                image::Rgb([255, 0, 51])
            } else {
                image::Rgb([0, 255, 102])
            }
        });
        let out = prepare(&rgb, spec(2, 1, false));
        // [R plane, G plane, B plane], each (v / 255 - 0.5) / 0.5.
        let want = [1.0, -1.0, -1.0, 1.0, -0.6, -0.2];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn padding_keeps_the_aspect_ratio_and_fills_with_zero() {
        // A 4 x 2 white image into 4 x 4: scaled to fit (4 x 2), the lower half padded.
        let white = image::RgbImage::from_pixel(4, 2, image::Rgb([255, 255, 255]));
        let out = prepare(&white, spec(4, 4, true));
        assert_eq!(out.len(), 3 * 16);
        assert!(out[..8].iter().all(|&v| (v - 1.0).abs() < 1e-6), "{out:?}");
        assert!(out[8..16].iter().all(|&v| v == 0.0), "{out:?}");
        // Stretched, every pixel is white.
        let out = prepare(&white, spec(4, 4, false));
        assert!(out.iter().all(|&v| (v - 1.0).abs() < 1e-6));
        // A wide line into 320 x 48 keeps its full width and is padded below.
        let line = image::RgbImage::from_pixel(640, 60, image::Rgb([255, 255, 255]));
        let out = prepare(&line, spec(320, 48, true));
        let row = |y: usize| &out[y * 320..(y + 1) * 320];
        assert!(row(29).iter().all(|&v| v > 0.99), "30 rows of image");
        assert!(row(30).iter().all(|&v| v == 0.0), "then padding");
    }

    #[test]
    fn images_are_recognised_by_their_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0123abcd");
        image::RgbImage::from_pixel(3, 2, image::Rgb([255, 255, 255]))
            .save_with_format(&path, image::ImageFormat::Png)
            .unwrap();
        let out = load(&path, spec(3, 2, false)).unwrap();
        assert_eq!(out, vec![1.0; 18]);
    }

    #[test]
    fn images_taller_or_wider_than_the_limit_are_refused_from_their_header() {
        // Found by fuzzing: a JPEG of 65,535 rows overflowed jpeg-decoder's row arithmetic (a
        // panic with overflow checks, wrapped arithmetic without). The byte before it is the
        // fuzz target's choice of size.
        let jpeg = &include_bytes!("../../../fuzz/regressions/image_decode/jpeg-65535-rows")[1..];
        let err = decode(jpeg).unwrap_err();
        assert!(matches!(err, image::ImageError::Limits(_)), "{err}");
        // Up to the limit, an image decodes.
        let mut png = Vec::new();
        image::RgbImage::from_pixel(MAX_SIDE, 1, image::Rgb([1, 2, 3]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(decode(&png).unwrap().dimensions(), (MAX_SIDE, 1));
        let mut png = Vec::new();
        image::RgbImage::from_pixel(1, MAX_SIDE + 1, image::Rgb([1, 2, 3]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        assert!(matches!(decode(&png), Err(image::ImageError::Limits(_))));
    }

    #[test]
    fn images_of_more_pixels_than_the_limit_are_refused_from_their_header_in_one_line() {
        // 5,000 × 5,000 = 25 megapixels, each side well under MAX_SIDE: a progressive JPEG of this
        // size took seconds to decode before the pixel cap.
        let mut png = Vec::new();
        image::GrayImage::new(5_000, 5_000)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let err = decode(&png).unwrap_err().to_string();
        assert_eq!(
            err,
            "the image is 5000×5000 pixels (25.0 megapixels), over the 16.8-megapixel limit for an input"
        );
        // At the limit, it decodes.
        let mut png = Vec::new();
        image::GrayImage::new(4096, 4096)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(decode(&png).unwrap().dimensions(), (4096, 4096));
    }

    #[test]
    fn unreadable_images_name_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-an-image.png");
        std::fs::write(&path, b"plain text").unwrap();
        let err = load(&path, spec(4, 4, false)).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("cannot read image {}", path.display())),
            "{err}"
        );
        let err = load(Path::new("/nonexistent/page.png"), spec(4, 4, false))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/page.png"), "{err}");
    }
}
