//! Pillow's convolution resampling (`Image.resize` with LANCZOS, BICUBIC, BILINEAR, BOX or HAMMING) on
//! 8-bit RGB, reproduced to the bit: coefficients in double precision, normalised, converted to 22-bit
//! fixed point with Pillow's rounding, accumulated in 32-bit integers with a half-unit bias, clipped;
//! 8-bit image between the two passes, each pass skipped when its size is unchanged. Like Pillow 13,
//! the vertical pass runs first when the height shrinks by more than twice as many pixels as the width
//! (python-pillow/Pillow#9549); the order changes the rounding of the intermediate image.

use super::image::RgbImage;
use crate::error::{Error, Result};

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// A Pillow resampling filter (the `resample` ids of PIL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `Image.LANCZOS` (1): windowed sinc, support 3.
    Lanczos,
    /// `Image.BILINEAR` (2): triangle, support 1.
    Bilinear,
    /// `Image.BICUBIC` (3): cubic with a = -0.5, support 2.
    Bicubic,
    /// `Image.BOX` (4): support 0.5.
    Box,
    /// `Image.HAMMING` (5): Hamming-windowed sinc, support 1.
    Hamming,
}

impl Filter {
    /// The filter for a PIL resample id; NEAREST (0) is not a convolution and is not supported.
    pub fn from_pil_id(id: u64) -> Result<Self> {
        Ok(match id {
            1 => Filter::Lanczos,
            2 => Filter::Bilinear,
            3 => Filter::Bicubic,
            4 => Filter::Box,
            5 => Filter::Hamming,
            other => {
                return Err(Error::input(format!(
                    "resample {other} is not supported (1 LANCZOS, 2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING)"
                )))
            }
        })
    }

    fn support(self) -> f64 {
        match self {
            Filter::Lanczos => 3.0,
            Filter::Bicubic => 2.0,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Box => 0.5,
        }
    }

    fn eval(self, x: f64) -> f64 {
        fn sinc(x: f64) -> f64 {
            if x == 0.0 {
                1.0
            } else {
                let x = x * std::f64::consts::PI;
                x.sin() / x
            }
        }
        match self {
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Hamming => {
                if x == 0.0 {
                    1.0
                } else if x.abs() >= 1.0 {
                    0.0
                } else {
                    // Pillow writes the window's constants as floats (0.54f, 0.46f).
                    let xp = x.abs() * std::f64::consts::PI;
                    xp.sin() / xp * (0.54f32 as f64 + 0.46f32 as f64 * xp.cos())
                }
            }
        }
    }
}

/// Fixed-point coefficients of one axis: for each output index, the first input index and its weights.
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    k: Vec<i32>,
}

fn precompute(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let ss = 1.0 / filterscale;
    let mut bounds = Vec::with_capacity(out_size);
    let mut k = vec![0i32; out_size * ksize];
    let mut w = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(xmax) {
            *wx = filter.eval((x as f64 + xmin as f64 - center + 0.5) * ss);
            ww += *wx;
        }
        for x in 0..xmax {
            let v = if ww != 0.0 { w[x] / ww } else { w[x] };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            // C's (int) conversion truncates toward zero after Pillow's ±0.5.
            k[xx * ksize + x] = if v < 0.0 {
                (f - 0.5) as i32
            } else {
                (f + 0.5) as i32
            };
        }
        bounds.push((xmin, xmax));
    }
    Coeffs { bounds, ksize, k }
}

#[inline(always)]
fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Resizes to `width × height` as `Image.resize((width, height), filter)` does for an RGB image.
pub fn resize(img: &RgbImage, width: usize, height: usize, filter: Filter) -> RgbImage {
    if width == img.width && height == img.height {
        return img.clone();
    }
    if width == img.width {
        return vertical(img, height, filter);
    }
    if height == img.height {
        return horizontal(img, width, filter);
    }
    let (dy, dx) = (
        img.height as i64 - height as i64,
        img.width as i64 - width as i64,
    );
    if dy > 0 && dy > 2 * dx {
        horizontal(&vertical(img, height, filter), width, filter)
    } else {
        vertical(&horizontal(img, width, filter), height, filter)
    }
}

fn horizontal(img: &RgbImage, width: usize, filter: Filter) -> RgbImage {
    let c = precompute(img.width, width, filter);
    let mut out = vec![0u8; img.height * width * 3];
    let half = 1i32 << (PRECISION_BITS - 1);
    for y in 0..img.height {
        let src = &img.data[y * img.width * 3..(y + 1) * img.width * 3];
        let dst = &mut out[y * width * 3..(y + 1) * width * 3];
        for (xx, &(xmin, xmax)) in c.bounds.iter().enumerate() {
            let k = &c.k[xx * c.ksize..xx * c.ksize + xmax];
            let (mut s0, mut s1, mut s2) = (half, half, half);
            for (x, &kx) in k.iter().enumerate() {
                let p = &src[(xmin + x) * 3..(xmin + x) * 3 + 3];
                s0 = s0.wrapping_add(p[0] as i32 * kx);
                s1 = s1.wrapping_add(p[1] as i32 * kx);
                s2 = s2.wrapping_add(p[2] as i32 * kx);
            }
            dst[xx * 3] = clip8(s0);
            dst[xx * 3 + 1] = clip8(s1);
            dst[xx * 3 + 2] = clip8(s2);
        }
    }
    RgbImage {
        width,
        height: img.height,
        data: out,
        color_key: None,
    }
}

fn vertical(img: &RgbImage, height: usize, filter: Filter) -> RgbImage {
    let c = precompute(img.height, height, filter);
    let row = img.width * 3;
    let mut out = vec![0u8; height * row];
    let half = 1i32 << (PRECISION_BITS - 1);
    let mut acc = vec![0i32; row];
    for (yy, &(ymin, ymax)) in c.bounds.iter().enumerate() {
        let k = &c.k[yy * c.ksize..yy * c.ksize + ymax];
        acc.iter_mut().for_each(|a| *a = half);
        for (y, &ky) in k.iter().enumerate() {
            let src = &img.data[(ymin + y) * row..(ymin + y + 1) * row];
            for (a, &p) in acc.iter_mut().zip(src) {
                *a = a.wrapping_add(p as i32 * ky);
            }
        }
        for (o, &a) in out[yy * row..(yy + 1) * row].iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    RgbImage {
        width: img.width,
        height,
        data: out,
        color_key: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity_and_constant_images_stay_constant() {
        let img = RgbImage {
            width: 5,
            height: 4,
            data: vec![77; 60],
            color_key: None,
        };
        assert_eq!(resize(&img, 5, 4, Filter::Lanczos), img);
        for f in [
            Filter::Lanczos,
            Filter::Bicubic,
            Filter::Bilinear,
            Filter::Box,
            Filter::Hamming,
        ] {
            let r = resize(&img, 13, 2, f);
            assert_eq!((r.width, r.height), (13, 2));
            assert!(r.data.iter().all(|&v| v == 77), "{f:?}");
        }
    }

    #[test]
    fn lanczos_coefficients_sum_to_one_in_fixed_point() {
        let c = precompute(100, 37, Filter::Lanczos);
        for (xx, &(_, n)) in c.bounds.iter().enumerate() {
            let s: i32 = c.k[xx * c.ksize..xx * c.ksize + n].iter().sum();
            assert!(
                (s - (1 << PRECISION_BITS)).abs() <= n as i32,
                "row {xx}: {s}"
            );
        }
    }
}
