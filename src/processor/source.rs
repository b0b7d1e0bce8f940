//! Images as the processor takes them: decoded pixels, or encoded files whose size comes from
//! their header, so that a prompt's image tokens are counted (and a prompt too long for the
//! context refused) before any pixel is decoded.

use std::borrow::Cow;
use std::path::Path;

use super::image::{decode_image, image_size, RgbImage};
use crate::error::{Error, Result};

/// An image whose size is known before its pixels are.
pub trait ImageSource {
    /// Width and height of the upright image, in pixels.
    fn size(&self) -> (usize, usize);
    /// The pixels, decoding them if needed.
    fn pixels(&self) -> Result<Cow<'_, RgbImage>>;
}

impl ImageSource for RgbImage {
    fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn pixels(&self) -> Result<Cow<'_, RgbImage>> {
        Ok(Cow::Borrowed(self))
    }
}

/// An encoded image (PNG, JPEG, WebP, GIF, BMP) whose header has been read and checked against
/// the pixel limit; its pixels are decoded only when the processor needs them.
#[derive(Debug, Clone)]
pub struct ImageFile {
    what: String,
    bytes: Vec<u8>,
    size: (usize, usize),
}

impl ImageFile {
    /// Reads an image file and its header.
    pub fn open(path: &Path) -> Result<Self> {
        let len = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        if len > crate::limits::MAX_IMAGE_FILE_BYTES {
            return Err(Error::input(format!(
                "{}: the image file has {len} bytes, more than the limit of {} bytes",
                path.display(),
                crate::limits::MAX_IMAGE_FILE_BYTES
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(bytes, path.display().to_string())
    }

    /// Reads the header of an encoded image; `what` names it in errors.
    pub fn from_bytes(bytes: Vec<u8>, what: String) -> Result<Self> {
        let size = image_size(&bytes, &what)?;
        Ok(ImageFile { what, bytes, size })
    }
}

impl ImageSource for ImageFile {
    fn size(&self) -> (usize, usize) {
        self.size
    }

    fn pixels(&self) -> Result<Cow<'_, RgbImage>> {
        let img = decode_image(&self.bytes, &self.what)?;
        // The tokens were counted from the header's size: the pixels must agree with it.
        if (img.width, img.height) != self.size {
            return Err(Error::input(format!(
                "{}: the image decodes to {}×{} pixels but its header says {}×{}",
                self.what, img.width, img.height, self.size.0, self.size.1
            )));
        }
        Ok(Cow::Owned(img))
    }
}

/// Either kind of image, for callers that mix them (the C API's `rgb` and `path`/`data` images).
#[derive(Debug, Clone)]
pub enum AnyImage {
    /// Decoded pixels.
    Rgb(RgbImage),
    /// An encoded image, decoded when needed.
    File(ImageFile),
}

impl ImageSource for AnyImage {
    fn size(&self) -> (usize, usize) {
        match self {
            AnyImage::Rgb(i) => i.size(),
            AnyImage::File(f) => f.size(),
        }
    }

    fn pixels(&self) -> Result<Cow<'_, RgbImage>> {
        match self {
            AnyImage::Rgb(i) => i.pixels(),
            AnyImage::File(f) => f.pixels(),
        }
    }
}
