//! The Idefics3 image processor's PIL path (spec section 7.3): resize so the longest edge is L, resize
//! again to multiples of the tile side M, cut row-major M×M crops and append a global M×M view, then
//! rescale and normalise in f32. Sizes follow the Python float64 arithmetic with truncation exactly.

use super::image::RgbImage;
use super::resize::resize;
use crate::config::{ImageProcessorConfig, ResizeTarget};

/// transformers caps the first resize at 4096 pixels (`MAX_IMAGE_SIZE`).
pub const MAX_IMAGE_SIZE: usize = 4096;

/// One image turned into tiles.
#[derive(Debug, Clone)]
pub struct Tiles {
    /// Row count of the crop grid (0 when the image was not split).
    pub rows: usize,
    /// Column count of the crop grid (0 when not split).
    pub cols: usize,
    /// The tiles in order (crops row-major, then the global view), each `3·M·M` values, channels first.
    pub tiles: Vec<Vec<f32>>,
}

/// `_resize_output_size_rescale_to_max_len` then `_resize_output_size_scale_below_upper_bound`:
/// the longest edge becomes `longest`, the short side keeps the aspect ratio (rounded up to even).
pub fn longest_edge_size(height: usize, width: usize, longest: usize) -> (usize, usize) {
    let (mut h, mut w) = (height as i64, width as i64);
    let ar = w as f64 / h as f64;
    if w >= h {
        w = longest as i64;
        h = (w as f64 / ar) as i64;
        if h % 2 != 0 {
            h += 1;
        }
    } else {
        h = longest as i64;
        w = (h as f64 * ar) as i64;
        if w % 2 != 0 {
            w += 1;
        }
    }
    h = h.max(1);
    w = w.max(1);
    let ar = w as f64 / h as f64;
    let cap = MAX_IMAGE_SIZE as i64;
    if w >= h && w > cap {
        w = cap;
        h = (w as f64 / ar) as i64;
    } else if h > w && h > cap {
        h = cap;
        w = (h as f64 * ar) as i64;
    }
    (h.max(1) as usize, w.max(1) as usize)
}

/// `resize_for_vision_encoder`: both sides to multiples of `m`.
pub fn vision_encoder_size(height: usize, width: usize, m: usize) -> (usize, usize) {
    let ar = width as f64 / height as f64;
    let mf = m as f64;
    if width >= height {
        let w = (width as f64 / mf).ceil() as usize * m;
        let h = (w as f64 / ar) as usize;
        let h = (h as f64 / mf).ceil() as usize * m;
        (h, w)
    } else {
        let h = (height as f64 / mf).ceil() as usize * m;
        let w = (h as f64 * ar) as usize;
        let w = (w as f64 / mf).ceil() as usize * m;
        (h, w)
    }
}

fn crop(img: &RgbImage, top: usize, left: usize, size: usize) -> RgbImage {
    let mut data = Vec::with_capacity(size * size * 3);
    for y in top..top + size {
        data.extend_from_slice(
            &img.data[(y * img.width + left) * 3..(y * img.width + left + size) * 3],
        );
    }
    RgbImage {
        width: size,
        height: size,
        data,
        color_key: None,
    }
}

/// Rescale (`float32(float64(u)·factor)`) and normalise (`(x − mean)/std` in f32), channels first.
fn to_tensor(img: &RgbImage, c: &ImageProcessorConfig) -> Vec<f32> {
    let n = img.width * img.height;
    let mut out = vec![0f32; 3 * n];
    for (i, px) in img.data.chunks_exact(3).enumerate() {
        for ch in 0..3 {
            let mut v = if c.do_rescale {
                (px[ch] as f64 * c.rescale_factor) as f32
            } else {
                px[ch] as f32
            };
            if c.do_normalize {
                v = (v - c.image_mean[ch]) / c.image_std[ch];
            }
            out[ch * n + i] = v;
        }
    }
    out
}

/// The crop grid `(rows, cols)` that [`process_image`] makes of a `width × height` image (`(0, 0)`:
/// not split), from the sizes alone: the prompt's length is known before any pixel is resized.
pub fn grid(width: usize, height: usize, c: &ImageProcessorConfig) -> (usize, usize) {
    let m = c.max_image_size;
    let (mut h, mut w) = (height, width);
    if c.do_resize {
        (h, w) = match c.size {
            ResizeTarget::LongestEdge(l) => longest_edge_size(h, w, l),
            ResizeTarget::Exact { height, width } => (height, width),
        };
    }
    if c.do_image_splitting {
        let (h, w) = vision_encoder_size(h, w, m);
        if h > m || w > m {
            return ((h - m) / m + 1, (w - m) / m + 1);
        }
    }
    (0, 0)
}

/// Runs the image processor on one RGB image.
pub fn process_image(img: &RgbImage, c: &ImageProcessorConfig) -> Tiles {
    let m = c.max_image_size;
    let mut img = std::borrow::Cow::Borrowed(img);
    if img.color_key.is_some() {
        img.to_mut().composite_color_key_on_white();
    }
    if c.do_resize {
        let (h, w) = match c.size {
            ResizeTarget::LongestEdge(l) => longest_edge_size(img.height, img.width, l),
            ResizeTarget::Exact { height, width } => (height, width),
        };
        img = std::borrow::Cow::Owned(resize(&img, w, h, c.filter));
    }
    let (frames, rows, cols) = if c.do_image_splitting {
        let (h, w) = vision_encoder_size(img.height, img.width, m);
        let img = resize(&img, w, h, c.filter);
        if h > m || w > m {
            let (rows, cols) = ((h - m) / m + 1, (w - m) / m + 1);
            let mut frames = Vec::with_capacity(rows * cols + 1);
            for r in 0..rows {
                for cc in 0..cols {
                    frames.push(crop(&img, r * m, cc * m, m));
                }
            }
            frames.push(resize(&img, m, m, c.filter));
            (frames, rows, cols)
        } else {
            (vec![img], 0, 0)
        }
    } else {
        (vec![resize(&img, m, m, c.filter)], 0, 0)
    };
    Tiles {
        rows,
        cols,
        tiles: frames.iter().map(|f| to_tensor(f, c)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_sizes_from_the_spec() {
        // Idefics3 (L 1456, M 364).
        for ((h, w), first, second) in [
            ((480, 640), (1092, 1456), (1092, 1456)),
            ((1000, 500), (1456, 728), (1456, 728)),
            ((100, 100), (1456, 1456), (1456, 1456)),
            ((1080, 1920), (820, 1456), (1092, 1456)),
            ((333, 500), (970, 1456), (1092, 1456)),
        ] {
            let s1 = longest_edge_size(h, w, 1456);
            assert_eq!(s1, first, "{h}×{w}");
            assert_eq!(vision_encoder_size(s1.0, s1.1, 364), second, "{h}×{w}");
        }
        // SmolVLM-256M (L 2048, M 512).
        let s1 = longest_edge_size(1080, 1920, 2048);
        assert_eq!(s1, (1152, 2048));
        assert_eq!(vision_encoder_size(s1.0, s1.1, 512), (1536, 2048));
    }

    #[test]
    fn the_grid_from_sizes_matches_the_processed_tiles() {
        let c = ImageProcessorConfig {
            size: ResizeTarget::LongestEdge(12),
            max_image_size: 4,
            ..Default::default()
        };
        for (w, h) in [
            (1, 1),
            (3, 17),
            (17, 3),
            (4, 4),
            (5, 4),
            (12, 9),
            (40, 7),
            (2, 50),
        ] {
            let img = RgbImage {
                width: w,
                height: h,
                data: vec![9; w * h * 3],
                color_key: None,
            };
            let t = process_image(&img, &c);
            assert_eq!(grid(w, h, &c), (t.rows, t.cols), "{w}×{h}");
            let n = if t.rows == 0 { 1 } else { t.rows * t.cols + 1 };
            assert_eq!(t.tiles.len(), n, "{w}×{h}");
        }
    }

    #[test]
    fn extreme_aspect_ratios_stay_positive() {
        // int(1456 / 5000) = 0 is even, so it stays 0 until the final max(·, 1).
        assert_eq!(longest_edge_size(1, 5000, 1456), (1, 1456));
        assert_eq!(longest_edge_size(5000, 1, 1456), (1456, 1));
        assert_eq!(vision_encoder_size(1, 1456, 364), (364, 1456));
    }

    #[test]
    fn tiles_are_row_major_crops_then_the_global_view() {
        let c = ImageProcessorConfig {
            size: ResizeTarget::LongestEdge(8),
            max_image_size: 4,
            ..Default::default()
        };
        // An 8×4 (w×h) image, already at its sizes: 1 row × 2 columns of crops + global.
        let img = RgbImage {
            width: 8,
            height: 4,
            data: (0..32).flat_map(|i| [(i * 7 % 256) as u8, 1, 2]).collect(),
            color_key: None,
        };
        let t = process_image(&img, &c);
        assert_eq!((t.rows, t.cols, t.tiles.len()), (1, 2, 3));
        assert_eq!(grid(8, 4, &c), (1, 2));
        // Second crop's red channel, first row: pixels x = 4..8 of row 0.
        let want: Vec<f32> = (4..8)
            .map(|i| (((i * 7) as f64 / 255.0) as f32 - 0.5) / 0.5)
            .collect();
        assert_eq!(&t.tiles[1][..4], &want[..]);
    }
}
