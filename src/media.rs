//! Images and audio from what users hand us, checked before any large allocation.
//!
//! Encoded images (PNG, JPEG, WebP, GIF, BMP, ...) are sniffed, their size read from the header
//! and compared with the pixel limit before a single pixel is decoded, so a decompression bomb
//! is an error and not an out-of-memory kill. Raw RGB buffers (numpy arrays, PIL images) are
//! checked against their stated size.

use std::io::Cursor;

use image::{DynamicImage, ImageReader, Limits, RgbImage};
use mistralrs::core::AudioInput;

use crate::failure::{Failure, FailureKind, Outcome};

/// The default pixel limit: 64 megapixels (an 8K photo is 33).
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 64 * 1024 * 1024;

fn invalid(message: String) -> Failure {
    Failure::new(FailureKind::InvalidImage, message)
}

fn check_pixels(what: &str, width: u32, height: u32, max_pixels: u64) -> Outcome<()> {
    let pixels = u64::from(width) * u64::from(height);
    if width == 0 || height == 0 {
        return Err(invalid(format!(
            "{what} is empty ({width} x {height} pixels)"
        )));
    }
    if pixels > max_pixels {
        return Err(invalid(format!(
            "{what} is {width} x {height} = {pixels} pixels, past the limit of {max_pixels} \
             (raise max_image_pixels if you trust it, or resize it)"
        )));
    }
    Ok(())
}

/// Decodes an encoded image (PNG, JPEG, WebP, GIF, BMP, ...).
pub fn decode_image(what: &str, bytes: &[u8], max_pixels: u64) -> Outcome<DynamicImage> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| invalid(format!("{what} could not be read: {e}")))?;
    let Some(format) = reader.format() else {
        let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        return Err(invalid(format!(
            "{what} is not an image in a known format (PNG, JPEG, WebP, GIF, BMP, ...); \
             its first bytes are {}",
            if head.is_empty() {
                "none: it is empty".to_string()
            } else {
                head.join(" ")
            }
        )));
    };
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| invalid(format!("{what} is a damaged {format:?} image: {e}")))?;
    check_pixels(what, width, height, max_pixels)?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    // RGBA at 16 bits per channel is the most a decoder holds per pixel, plus some headroom.
    limits.max_alloc = Some(u64::from(width) * u64::from(height) * 8 + (16 << 20));
    reader.limits(limits);
    reader.decode().map_err(|e| {
        invalid(format!(
            "{what} is a truncated or damaged {format:?} image: {e}"
        ))
    })
}

/// An image from raw RGB bytes, row by row (a numpy `H x W x 3` uint8 array, a PIL image).
pub fn rgb_image(
    what: &str,
    bytes: Vec<u8>,
    width: u32,
    height: u32,
    max_pixels: u64,
) -> Outcome<DynamicImage> {
    check_pixels(what, width, height, max_pixels)?;
    let expected = u64::from(width) * u64::from(height) * 3;
    if bytes.len() as u64 != expected {
        return Err(invalid(format!(
            "{what} has {} bytes, but {width} x {height} RGB pixels need {expected}",
            bytes.len()
        )));
    }
    RgbImage::from_raw(width, height, bytes)
        .map(DynamicImage::ImageRgb8)
        .ok_or_else(|| {
            invalid(format!(
                "{what}: the RGB buffer does not fit {width} x {height}"
            ))
        })
}

/// The longest audio we take: one hour.
const MAX_AUDIO_SECONDS: u64 = 3600;

fn invalid_audio(message: String) -> Failure {
    Failure::invalid(message)
}

/// The highest sample rate we take (hardware goes to 384 kHz).
const MAX_SAMPLE_RATE: u32 = 384_000;

/// The most samples (all channels together) decoded from one sound: an hour of 48 kHz stereo
/// (1.4 GB as floats). The hour limit alone would allow 44 GB for an 8-channel 384 kHz header.
const MAX_DECODED_SAMPLES: u64 = MAX_AUDIO_SECONDS * 48_000 * 2;

/// Decodes an encoded sound (WAV, FLAC, MP3, Ogg Vorbis, ...), packet by packet, stopping
/// as soon as it passes `MAX_AUDIO_SECONDS`: compressed audio can expand a thousandfold (a
/// FLAC of silence), so the length is never trusted before decoding, and never decoded past.
pub fn decode_audio(what: &str, bytes: &[u8]) -> Outcome<AudioInput> {
    use symphonia::core::audio::SampleBuffer;
    use symphonia::core::codecs::DecoderOptions;
    use symphonia::core::errors::Error as AudioError;
    use symphonia::core::formats::FormatOptions;
    use symphonia::core::io::MediaSourceStream;
    use symphonia::core::meta::MetadataOptions;
    use symphonia::core::probe::Hint;

    if bytes.is_empty() {
        return Err(invalid_audio(format!("{what} is empty")));
    }
    let unknown = |e: &dyn std::fmt::Display| {
        invalid_audio(format!(
            "{what} is not a sound in a known format (WAV, FLAC, MP3, Ogg Vorbis): {e}"
        ))
    };
    let source = MediaSourceStream::new(
        Box::new(std::io::Cursor::new(bytes.to_vec())),
        Default::default(),
    );
    let probed = symphonia::default::get_probe()
        .format(
            &Hint::new(),
            source,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| unknown(&e))?;
    let mut format = probed.format;
    let track = format
        .default_track()
        .ok_or_else(|| unknown(&"it has no audio track"))?;
    let params = track.codec_params.clone();
    let sample_rate = params
        .sample_rate
        .filter(|r| (1..=MAX_SAMPLE_RATE).contains(r))
        .ok_or_else(|| unknown(&"its sample rate is missing or past 384 kHz"))?;
    let channels = params.channels.map_or(1, |c| c.count()).clamp(1, 64) as u16;
    let max_samples =
        (MAX_AUDIO_SECONDS * u64::from(sample_rate) * u64::from(channels)).min(MAX_DECODED_SAMPLES);
    let track_id = track.id;
    let mut decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(|e| unknown(&e))?;
    let mut samples: Vec<f32> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(packet) => packet,
            Err(AudioError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(unknown(&e)),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = decoder.decode(&packet).map_err(|e| unknown(&e))?;
        let mut buffer = SampleBuffer::<f32>::new(decoded.capacity() as u64, *decoded.spec());
        buffer.copy_interleaved_ref(decoded);
        if (samples.len() + buffer.samples().len()) as u64 > max_samples {
            return Err(too_long(what));
        }
        samples
            .try_reserve(buffer.samples().len())
            .map_err(|_| invalid_audio(format!("{what}: not enough memory to decode it")))?;
        samples.extend_from_slice(buffer.samples());
    }
    checked_audio(what, samples, sample_rate, channels)
}

fn too_long(what: &str) -> Failure {
    invalid_audio(format!(
        "{what} is longer than {MAX_AUDIO_SECONDS} seconds: cut it into pieces"
    ))
}

/// Sound from raw float samples (interleaved when there are several channels).
pub fn raw_audio(what: &str, bytes: &[u8], sample_rate: u32, channels: u16) -> Outcome<AudioInput> {
    if channels == 0 || !bytes.len().is_multiple_of(4 * usize::from(channels)) {
        return Err(invalid_audio(format!(
            "{what}: {} bytes are not whole float32 frames of {channels} channel(s)",
            bytes.len()
        )));
    }
    let samples = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    checked_audio(what, samples, sample_rate, channels)
}

/// The sound, if it has some, is at most `MAX_AUDIO_SECONDS` long and holds only numbers.
fn checked_audio(
    what: &str,
    samples: Vec<f32>,
    sample_rate: u32,
    channels: u16,
) -> Outcome<AudioInput> {
    let audio = AudioInput {
        samples,
        sample_rate,
        channels,
    };
    let frames = audio.samples.len() as u64 / u64::from(audio.channels.max(1));
    if audio.sample_rate == 0 || frames == 0 {
        return Err(invalid_audio(format!("{what} holds no sound")));
    }
    if frames > MAX_AUDIO_SECONDS * u64::from(audio.sample_rate) {
        return Err(too_long(what));
    }
    if audio.samples.iter().any(|s| !s.is_finite()) {
        return Err(invalid_audio(format!(
            "{what} has samples that are not finite numbers"
        )));
    }
    Ok(audio)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = Vec::new();
        DynamicImage::ImageRgb8(img)
            .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn decodes_a_png_to_the_same_pixels_as_raw_rgb() {
        let decoded = decode_image("image 1", &png(5, 3), 100).unwrap();
        let raw = decoded.to_rgb8().into_raw();
        let again = rgb_image("image 1", raw, 5, 3, 100).unwrap();
        assert_eq!(decoded.to_rgb8(), again.to_rgb8());
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
            }
        }
        !crc
    }

    #[test]
    fn refuses_a_bomb_from_its_header() {
        // A real PNG whose header claims 50,000 x 50,000 pixels (2.5 G).
        let mut bomb = png(1, 1);
        bomb[16..20].copy_from_slice(&50_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&50_000u32.to_be_bytes());
        let crc = crc32(&bomb[12..29]);
        bomb[29..33].copy_from_slice(&crc.to_be_bytes());
        let e = decode_image("image 1", &bomb, DEFAULT_MAX_IMAGE_PIXELS).unwrap_err();
        assert_eq!(e.kind, FailureKind::InvalidImage);
        assert!(
            e.message.contains("50000 x 50000 = 2500000000 pixels"),
            "{e}"
        );
    }

    #[test]
    fn explains_truncated_and_foreign_bytes() {
        let mut cut = png(16, 16);
        cut.truncate(cut.len() / 2);
        let e = decode_image("image 2", &cut, 1000).unwrap_err();
        assert!(e.message.contains("truncated or damaged Png"), "{e}");
        let e = decode_image("image 3", b"hello, not an image", 1000).unwrap_err();
        assert!(e.message.contains("not an image in a known format"), "{e}");
        assert!(e.message.contains("68 65 6c"), "{e}");
        let e = decode_image("image 4", b"", 1000).unwrap_err();
        assert!(e.message.contains("empty"), "{e}");
    }

    #[test]
    fn checks_audio() {
        let tone: Vec<u8> = (0..1600)
            .flat_map(|i| ((i as f32 * 0.1).sin() * 0.5).to_le_bytes())
            .collect();
        let a = raw_audio("audio 1", &tone, 16_000, 1).unwrap();
        assert_eq!((a.samples.len(), a.sample_rate), (1600, 16_000));
        assert!(raw_audio("audio 1", &tone[..7], 16_000, 1)
            .unwrap_err()
            .message
            .contains("float32 frames"));
        assert!(raw_audio("audio 1", &[], 16_000, 1)
            .unwrap_err()
            .message
            .contains("no sound"));
        let nan = f32::NAN.to_le_bytes();
        assert!(raw_audio("audio 1", &nan, 16_000, 1)
            .unwrap_err()
            .message
            .contains("finite"));
        let e = decode_audio("audio 2", b"not a sound at all, just text").unwrap_err();
        assert!(e.message.contains("not a sound in a known format"), "{e}");
    }

    #[test]
    fn checks_raw_buffers() {
        let e = rgb_image("image 1", vec![0; 10], 2, 2, 100).unwrap_err();
        assert!(
            e.message
                .contains("has 10 bytes, but 2 x 2 RGB pixels need 12"),
            "{e}"
        );
        let e = rgb_image("image 1", vec![], 0, 2, 100).unwrap_err();
        assert!(e.message.contains("empty"), "{e}");
        assert!(rgb_image("image 1", vec![0; 300], 10, 10, 99).is_err());
    }
}
