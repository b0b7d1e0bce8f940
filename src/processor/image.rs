//! Decoding image files into 8-bit RGB exactly as transformers' `load_image` does with Pillow:
//! decode, apply the EXIF orientation (`ImageOps.exif_transpose`), then `convert("RGB")` (alpha
//! dropped, grayscale replicated, palettes expanded).
//!
//! JPEG goes through libjpeg-turbo's decoder (the `mozjpeg` crate: same integer IDCT and fancy
//! upsampling as Pillow's libjpeg-turbo, so pixels are bit-identical); GIF through the `gif` crate at
//! palette level (so transparent pixels keep their palette colour, as in Pillow); PNG, WebP and BMP
//! through the `image` crate.

use std::ffi::c_int;
use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat};

use crate::error::{Error, Result};

/// Pillow refuses images above twice `Image.MAX_IMAGE_PIXELS` (89,478,485) as decompression bombs.
pub const MAX_PIXELS: u64 = 2 * 89_478_485;

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height·width·3` bytes.
    pub data: Vec<u8>,
    /// The colour Pillow keeps as `info["transparency"]` after `convert("RGB")`: the colour of a PNG or
    /// GIF's single transparent palette index, or a PNG's tRNS colour key. transformers' processor
    /// composites such images over white, so pixels of exactly this colour become white there.
    pub color_key: Option<[u8; 3]>,
}

impl RgbImage {
    /// Wraps raw RGB8 pixels, checking the size.
    pub fn from_raw(width: usize, height: usize, data: Vec<u8>) -> Result<Self> {
        check_size(width as u64, height as u64, "raw RGB image")?;
        // Below the pixel limit, so the product cannot overflow.
        let needed = width * height * 3;
        if data.len() != needed {
            return Err(Error::input(format!(
                "raw RGB image: {} bytes given for {width}×{height} pixels (expected {needed})",
                data.len(),
            )));
        }
        Ok(RgbImage {
            width,
            height,
            data,
            color_key: None,
        })
    }

    /// Composites the image over white as transformers' `convert_to_rgb` does for an image with a
    /// transparency colour: every pixel of the colour key becomes white.
    pub fn composite_color_key_on_white(&mut self) {
        if let Some(key) = self.color_key.take() {
            for px in self.data.chunks_exact_mut(3) {
                if px == key {
                    px.copy_from_slice(&[255, 255, 255]);
                }
            }
        }
    }
}

fn check_size(w: u64, h: u64, what: &str) -> Result<()> {
    if w == 0 || h == 0 {
        return Err(Error::input(format!(
            "{what}: the image is empty ({w}×{h} pixels)"
        )));
    }
    match w.checked_mul(h) {
        Some(n) if n <= MAX_PIXELS => {}
        n => {
            let n = n.map_or_else(|| "more than 2⁶⁴".to_string(), |n| n.to_string());
            return Err(Error::input(format!(
                "{what}: {w}×{h} = {n} pixels exceeds the limit of {MAX_PIXELS} (a possible decompression bomb)"
            )));
        }
    }
    Ok(())
}

/// Reads and decodes an image file.
pub fn load_image_file(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_image(&bytes, &path.display().to_string())
}

/// Decodes an encoded image (PNG, JPEG, WebP, GIF, BMP); `what` names it in errors.
pub fn decode_image(bytes: &[u8], what: &str) -> Result<RgbImage> {
    let format = supported_format(bytes, what)?;
    // Decoders of damaged files must fail, never take the process down.
    let decoded = std::panic::catch_unwind(|| match format {
        ImageFormat::Jpeg => decode_jpeg(bytes, what),
        ImageFormat::Gif => decode_gif(bytes, what),
        _ => decode_with_image_crate(bytes, format, what),
    });
    decoded.unwrap_or_else(|_| Err(Error::input(format!("{what}: the image data is corrupt"))))
}

/// The size of an encoded image once upright (EXIF orientations 5–8 swap width and height), read
/// from its header alone, and checked against [`MAX_PIXELS`]: no pixel is decoded, so the image
/// token count of a prompt is known before any image is (see `Processor::image_grids`).
pub fn image_size(bytes: &[u8], what: &str) -> Result<(usize, usize)> {
    let format = supported_format(bytes, what)?;
    let header = std::panic::catch_unwind(|| match format {
        ImageFormat::Jpeg => catch_libjpeg(what, || {
            let (d, orientation) = jpeg_header(bytes, what)?;
            Ok((d.width(), d.height(), orientation.unwrap_or(1)))
        }),
        ImageFormat::Gif => {
            let d = gif_header(bytes, what)?;
            Ok((d.width() as usize, d.height() as usize, 1))
        }
        _ => {
            let (d, orientation) = image_crate_header(bytes, format, what)?;
            let (w, h) = d.dimensions();
            Ok((w as usize, h as usize, orientation))
        }
    });
    let (w, h, orientation) = header
        .unwrap_or_else(|_| Err(Error::input(format!("{what}: the image data is corrupt"))))?;
    Ok(if (5..=8).contains(&orientation) {
        (h, w)
    } else {
        (w, h)
    })
}

/// The format of an encoded image, if it is one of those decoded here.
fn supported_format(bytes: &[u8], what: &str) -> Result<ImageFormat> {
    match image::guess_format(bytes) {
        Ok(
            f @ (ImageFormat::Jpeg
            | ImageFormat::Gif
            | ImageFormat::Png
            | ImageFormat::WebP
            | ImageFormat::Bmp),
        ) => Ok(f),
        Ok(other) => Err(Error::input(format!(
            "{what}: {other:?} images are not supported (supported: PNG, JPEG, WebP, GIF, BMP)"
        ))),
        Err(_) => Err(Error::input(format!(
            "{what}: unknown image format (supported: PNG, JPEG, WebP, GIF, BMP)"
        ))),
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error::input(format!("{what}: cannot decode the image: {e}"))
}

/// libjpeg's fatal errors unwind (as the `mozjpeg` crate's own handler does) with the message.
extern "C-unwind" fn jpeg_error_exit(cinfo: &mut mozjpeg_sys::jpeg_common_struct) {
    let msg = jpeg_message(cinfo);
    std::panic::resume_unwind(Box::new(msg));
}

/// libjpeg reports data that ends early only as a warning (`JWRN_JPEG_EOF`, "Premature end of JPEG
/// file") and goes on decoding made-up data; Pillow refuses such a file as truncated, and so do we.
/// Other warnings (extraneous bytes between markers, ...) Pillow ignores too.
extern "C-unwind" fn jpeg_emit_message(cinfo: &mut mozjpeg_sys::jpeg_common_struct, level: c_int) {
    // SAFETY: libjpeg calls this with its own error manager installed.
    let code = unsafe { (*cinfo.err).msg_code };
    if level < 0 && code == mozjpeg_sys::JWRN_JPEG_EOF as c_int {
        std::panic::resume_unwind(Box::new(TRUNCATED.to_string()));
    }
}

/// Pillow's words for a file whose data ends early.
const TRUNCATED: &str = "image file is truncated";

fn jpeg_message(cinfo: &mut mozjpeg_sys::jpeg_common_struct) -> String {
    // libjpeg writes at most JMSG_LENGTH_MAX (200) bytes, NUL included.
    let mut buf = [0u8; 256];
    // SAFETY: `err` is the manager installed by `decode_jpeg`; format_message writes a NUL-terminated
    // message of at most 200 bytes into the buffer it is given (the binding's parameter type is a
    // shared reference, hence the cast to the C signature).
    unsafe {
        let Some(fmt) = (*cinfo.err).format_message else {
            return format!("libjpeg error {}", (*cinfo.err).msg_code);
        };
        let fmt: unsafe extern "C-unwind" fn(&mut mozjpeg_sys::jpeg_common_struct, *mut u8) =
            std::mem::transmute(fmt);
        fmt(cinfo, buf.as_mut_ptr());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn decode_jpeg(bytes: &[u8], what: &str) -> Result<RgbImage> {
    catch_libjpeg(what, || decode_jpeg_unguarded(bytes, what))
}

/// Runs libjpeg work, turning the panic `jpeg_error_exit` raises into the error it names.
fn catch_libjpeg<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "the image data is corrupt".into());
        if msg == TRUNCATED {
            Err(Error::input(format!("{what}: {TRUNCATED}")))
        } else {
            Err(corrupt(what, msg))
        }
    })
}

/// Reads a JPEG's header (markers included, no scan data): the decompressor, ready to decode, and
/// the EXIF orientation. libjpeg reports errors through `jpeg_error_exit`'s panic: callers catch it.
fn jpeg_header<'a>(
    bytes: &'a [u8],
    what: &str,
) -> Result<(mozjpeg::Decompress<&'a [u8]>, Option<u16>)> {
    // SAFETY: jpeg_std_error fills every field of the zeroed manager.
    let mut err: mozjpeg_sys::jpeg_error_mgr = unsafe { std::mem::zeroed() };
    unsafe { mozjpeg_sys::jpeg_std_error(&mut err) };
    err.error_exit = Some(jpeg_error_exit);
    err.emit_message = Some(jpeg_emit_message);
    let d = mozjpeg::Decompress::builder()
        .with_err(err)
        .with_markers(&[mozjpeg::Marker::APP(1)])
        .from_mem(bytes)
        .map_err(|e| corrupt(what, e))?;
    check_size(d.width() as u64, d.height() as u64, what)?;
    let orientation = d
        .markers()
        .filter(|m| m.marker == mozjpeg::Marker::APP(1))
        .find_map(|m| m.data.strip_prefix(b"Exif\0\0").and_then(exif_orientation));
    Ok((d, orientation))
}

fn decode_jpeg_unguarded(bytes: &[u8], what: &str) -> Result<RgbImage> {
    let (d, orientation) = jpeg_header(bytes, what)?;
    let (w, h) = (d.width(), d.height());
    use mozjpeg::ColorSpace as C;
    let data = match d.color_space() {
        C::JCS_CMYK | C::JCS_YCCK => {
            return Err(Error::input(format!(
                "{what}: CMYK JPEG images are not supported; convert the image to RGB"
            )))
        }
        _ => {
            let mut started = d.rgb().map_err(|e| corrupt(what, e))?;
            let px: Vec<[u8; 3]> = started.read_scanlines().map_err(|e| corrupt(what, e))?;
            started.finish().map_err(|e| corrupt(what, e))?;
            px.into_iter().flatten().collect::<Vec<u8>>()
        }
    };
    if data.len() != w * h * 3 {
        return Err(corrupt(what, "the JPEG data ends early"));
    }
    Ok(orient(
        RgbImage {
            width: w,
            height: h,
            data,
            color_key: None,
        },
        orientation.unwrap_or(1),
    ))
}

/// Reads a GIF's header (the logical screen) and its global palette, no frame.
fn gif_header<'a>(bytes: &'a [u8], what: &str) -> Result<gif::Decoder<Cursor<&'a [u8]>>> {
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::Indexed);
    let dec = opts
        .read_info(Cursor::new(bytes))
        .map_err(|e| corrupt(what, e))?;
    check_size(dec.width() as u64, dec.height() as u64, what)?;
    Ok(dec)
}

fn decode_gif(bytes: &[u8], what: &str) -> Result<RgbImage> {
    let mut dec = gif_header(bytes, what)?;
    let (w, h) = (dec.width() as usize, dec.height() as usize);
    let global = dec.global_palette().map(<[u8]>::to_vec);
    let frame = dec
        .read_next_frame()
        .map_err(|e| corrupt(what, e))?
        .ok_or_else(|| corrupt(what, "the GIF has no frame"))?;
    let palette = frame.palette.clone().or(global).unwrap_or_else(|| {
        // No palette at all: Pillow reads the indices as grey levels.
        (0..=255u8).flat_map(|v| [v, v, v]).collect()
    });
    // Pillow's first frame starts from the transparent index (else 0) outside the frame's rectangle.
    let mut indices = vec![frame.transparent.unwrap_or(0); w * h];
    let (fl, ft, fw) = (
        frame.left as usize,
        frame.top as usize,
        frame.width as usize,
    );
    for (r, row) in frame.buffer.chunks(fw.max(1)).enumerate() {
        let y = ft + r;
        if y >= h {
            break;
        }
        for (c, &i) in row.iter().enumerate() {
            if fl + c < w {
                indices[y * w + fl + c] = i;
            }
        }
    }
    let color = |i: u8| -> [u8; 3] {
        let o = i as usize * 3;
        if o + 2 < palette.len() {
            [palette[o], palette[o + 1], palette[o + 2]]
        } else {
            [0, 0, 0]
        }
    };
    let data = indices.into_iter().flat_map(color).collect();
    Ok(RgbImage {
        width: w,
        height: h,
        data,
        color_key: frame.transparent.map(color),
    })
}

/// Reads the header of a PNG, WebP or BMP file (chunks before the image data, for PNG; the chunk
/// index, for WebP): the decoder, ready to decode, and the EXIF orientation.
fn image_crate_header<'a>(
    bytes: &'a [u8],
    format: ImageFormat,
    what: &str,
) -> Result<(impl ImageDecoder + 'a, u16)> {
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 8 + (1 << 20));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| corrupt(what, e))?;
    let (w, h) = decoder.dimensions();
    check_size(w as u64, h as u64, what)?;
    let orientation = decoder.orientation().map(exif_value).unwrap_or(1);
    Ok((decoder, orientation))
}

fn decode_with_image_crate(bytes: &[u8], format: ImageFormat, what: &str) -> Result<RgbImage> {
    let (decoder, orientation) = image_crate_header(bytes, format, what)?;
    let (w, h) = decoder.dimensions();
    let img = DynamicImage::from_decoder(decoder).map_err(|e| corrupt(what, e))?;
    let data = match img {
        DynamicImage::ImageRgb8(b) => b.into_raw(),
        DynamicImage::ImageRgba8(b) => b
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        DynamicImage::ImageLuma8(b) => b.into_raw().into_iter().flat_map(|v| [v, v, v]).collect(),
        DynamicImage::ImageLumaA8(b) => b
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        // Pillow reads 16-bit RGB(A) PNGs as 8-bit by keeping the high byte.
        DynamicImage::ImageRgb16(b) => b.into_raw().into_iter().map(|v| (v >> 8) as u8).collect(),
        DynamicImage::ImageRgba16(b) => b
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
            .collect(),
        // 16-bit grey is mode "I;16" in Pillow, whose conversion to RGB clips at 255.
        DynamicImage::ImageLuma16(b) => b
            .into_raw()
            .into_iter()
            .flat_map(|v| [v.min(255) as u8; 3])
            .collect(),
        DynamicImage::ImageLumaA16(b) => b
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| [p[0].min(255) as u8; 3])
            .collect(),
        other => other.to_rgb8().into_raw(),
    };
    let color_key = if format == ImageFormat::Png {
        png_color_key(bytes)
    } else {
        None
    };
    Ok(orient(
        RgbImage {
            width: w as usize,
            height: h as usize,
            data,
            color_key,
        },
        orientation,
    ))
}

/// The transparency colour Pillow records for an 8-bit PNG: a palette whose tRNS makes exactly one
/// index transparent (and the rest opaque) gives that index's colour, a grey or RGB tRNS gives its
/// colour key. Other alpha tables leave none.
fn png_color_key(bytes: &[u8]) -> Option<[u8; 3]> {
    let mut pos = 8;
    let (mut color_type, mut depth) = (None, 0u8);
    let mut palette: &[u8] = &[];
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().ok()?) as usize;
        let kind = &bytes[pos + 4..pos + 8];
        let data = bytes.get(pos + 8..pos + 8 + len)?;
        match kind {
            b"IHDR" if len >= 10 => {
                depth = data[8];
                color_type = Some(data[9]);
            }
            b"PLTE" => palette = data,
            b"tRNS" => {
                return match (color_type?, depth) {
                    (3, _) => {
                        let zeros = data.iter().filter(|&&a| a == 0).count();
                        if zeros == 1 && data.iter().all(|&a| a == 0 || a == 255) {
                            let i = data.iter().position(|&a| a == 0)?;
                            palette.get(i * 3..i * 3 + 3).map(|c| [c[0], c[1], c[2]])
                        } else {
                            None
                        }
                    }
                    (0, 8) if len >= 2 => Some([data[1]; 3]),
                    (2, 8) if len >= 6 => Some([data[1], data[3], data[5]]),
                    _ => None,
                };
            }
            b"IDAT" | b"IEND" => return None,
            _ => {}
        }
        pos += 12 + len;
    }
    None
}

fn exif_value(o: image::metadata::Orientation) -> u16 {
    use image::metadata::Orientation as O;
    match o {
        O::NoTransforms => 1,
        O::FlipHorizontal => 2,
        O::Rotate180 => 3,
        O::FlipVertical => 4,
        O::Rotate90FlipH => 5,
        O::Rotate90 => 6,
        O::Rotate270FlipH => 7,
        O::Rotate270 => 8,
    }
}

/// The Orientation tag (0x0112) of IFD0 of a TIFF-structured EXIF block.
pub fn exif_orientation(tiff: &[u8]) -> Option<u16> {
    let le = match tiff.get(0..2)? {
        b"II" => true,
        b"MM" => false,
        _ => return None,
    };
    let u16_at = |o: usize| -> Option<u16> {
        let b: [u8; 2] = tiff.get(o..o + 2)?.try_into().ok()?;
        Some(if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    let u32_at = |o: usize| -> Option<u32> {
        let b: [u8; 4] = tiff.get(o..o + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let ifd = u32_at(4)? as usize;
    let count = u16_at(ifd)? as usize;
    for i in 0..count {
        let e = ifd + 2 + i * 12;
        if u16_at(e)? == 0x0112 {
            let v = u16_at(e + 8)?;
            return (1..=8).contains(&v).then_some(v);
        }
    }
    None
}

/// Applies an EXIF orientation (1–8) so that the result is upright, as `ImageOps.exif_transpose`.
pub fn orient(img: RgbImage, orientation: u16) -> RgbImage {
    if !(2..=8).contains(&orientation) {
        return img;
    }
    let (w, h) = (img.width, img.height);
    let swap = orientation >= 5;
    let (ow, oh) = if swap { (h, w) } else { (w, h) };
    let mut out = vec![0u8; w * h * 3];
    for y in 0..oh {
        for x in 0..ow {
            // Source pixel of output (x, y) for each EXIF orientation.
            let (sx, sy) = match orientation {
                2 => (w - 1 - x, y),
                3 => (w - 1 - x, h - 1 - y),
                4 => (x, h - 1 - y),
                5 => (y, x),
                6 => (y, h - 1 - x),
                7 => (w - 1 - y, h - 1 - x),
                _ => (w - 1 - y, x),
            };
            let s = (sy * w + sx) * 3;
            let d = (y * ow + x) * 3;
            out[d..d + 3].copy_from_slice(&img.data[s..s + 3]);
        }
    }
    RgbImage {
        width: ow,
        height: oh,
        data: out,
        color_key: img.color_key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(w: usize, h: usize) -> RgbImage {
        RgbImage {
            width: w,
            height: h,
            data: (0..w * h).flat_map(|i| [i as u8, 0, 0]).collect(),
            color_key: None,
        }
    }

    fn red(i: &RgbImage) -> Vec<u8> {
        i.data.chunks(3).map(|p| p[0]).collect()
    }

    #[test]
    fn orientations_make_the_image_upright() {
        // 3×2 image: row 0 = 0 1 2, row 1 = 3 4 5.
        let i = img(3, 2);
        assert_eq!(red(&orient(i.clone(), 2)), vec![2, 1, 0, 5, 4, 3]);
        assert_eq!(red(&orient(i.clone(), 3)), vec![5, 4, 3, 2, 1, 0]);
        assert_eq!(red(&orient(i.clone(), 4)), vec![3, 4, 5, 0, 1, 2]);
        // 6: the camera was turned 90° clockwise; upright = rotate the stored image 90° clockwise.
        let r6 = orient(i.clone(), 6);
        assert_eq!((r6.width, r6.height), (2, 3));
        assert_eq!(red(&r6), vec![3, 0, 4, 1, 5, 2]);
        let r8 = orient(i.clone(), 8);
        assert_eq!(red(&r8), vec![2, 5, 1, 4, 0, 3]);
        assert_eq!(red(&orient(i.clone(), 5)), vec![0, 3, 1, 4, 2, 5]);
        assert_eq!(red(&orient(i, 7)), vec![5, 2, 4, 1, 3, 0]);
    }

    #[test]
    fn exif_orientation_is_read_in_both_byte_orders() {
        let mut le = b"II*\0\x08\0\0\0\x01\0".to_vec();
        le.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0]);
        assert_eq!(exif_orientation(&le), Some(6));
        let mut be = b"MM\0*\0\0\0\x08\0\x01".to_vec();
        be.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 8, 0, 0]);
        assert_eq!(exif_orientation(&be), Some(8));
        assert_eq!(exif_orientation(b"XX"), None);
    }

    #[test]
    fn bad_data_is_an_error() {
        assert!(decode_image(b"not an image at all", "x")
            .unwrap_err()
            .to_string()
            .contains("unknown image format"));
        let e = decode_image(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "t.png")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.png"), "{e}");
        let e = decode_image(b"\xff\xd8\xff\xe0\0\x10JFIF\0", "t.jpg")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.jpg"), "{e}");
        assert!(RgbImage::from_raw(0, 5, vec![]).is_err());
        assert!(RgbImage::from_raw(2, 2, vec![0; 11]).is_err());
    }
}
