//! Which patches of a tile are real, and their position ids (spec section 3.3), in the canonical
//! integer form: a valid patch (r, c) of a tile whose real part spans `nb_h × nb_w` patches gets
//! `bucket(r, nb_h)·N + bucket(c, nb_w)` with `bucket(x, nb) = min(⌊x·N/nb⌋, N−1)`; invalid patches get 0.

use crate::error::{Error, Result};

/// Patch validity of one tile: a patch is valid when any pixel under it is.
/// `mask` is the tile's `size × size` pixel mask; trailing pixels that do not fill a patch are ignored.
pub fn patch_mask(mask: &[bool], size: usize, patch: usize) -> Vec<bool> {
    let side = size / patch;
    let mut out = vec![false; side * side];
    for (i, row) in out.chunks_exact_mut(side).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..patch).any(|u| {
                mask[(i * patch + u) * size + j * patch..][..patch]
                    .iter()
                    .any(|&b| b)
            });
        }
    }
    out
}

/// Position ids of the patches of one tile (`side × side` row-major), N = patches per side of the
/// position grid. Fails when the tile has no valid patch in its first row or column, which leaves
/// the reference's bucket computation undefined.
pub fn position_ids(valid: &[bool], side: usize, n: usize, tile: usize) -> Result<Vec<u32>> {
    let nb_h = (0..side).filter(|&r| valid[r * side]).count();
    let nb_w = (0..side).filter(|&c| valid[c]).count();
    if nb_h == 0 || nb_w == 0 {
        return Err(Error::input(format!(
            "pixel_attention_mask of tile {tile}: the top-left patch is masked out, so the tile has no \
             position grid (a real tile must start at its top-left corner)"
        )));
    }
    let bucket = |x: usize, nb: usize| ((x * n) / nb).min(n - 1);
    let mut ids = vec![0u32; side * side];
    for r in 0..side {
        for c in 0..side {
            if valid[r * side + c] {
                ids[r * side + c] = (bucket(r, nb_h) * n + bucket(c, nb_w)) as u32;
            }
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_tile_is_identity() {
        let ids = position_ids(&[true; 16], 4, 4, 0).unwrap();
        assert_eq!(ids, (0..16).collect::<Vec<u32>>());
    }

    #[test]
    fn partial_tile_spreads_over_the_grid() {
        // A 6×5 real region in an 8×8 patch grid (N = 8): rows bucket as ⌊8r/6⌋ = 0,1,2,4,5,6 and
        // columns as ⌊8c/5⌋ = 0,1,3,4,6; masked patches get 0.
        let side = 8;
        let mut valid = vec![false; 64];
        for r in 0..6 {
            for c in 0..5 {
                valid[r * side + c] = true;
            }
        }
        let ids = position_ids(&valid, side, 8, 0).unwrap();
        let rows = [0, 1, 2, 4, 5, 6];
        let cols = [0, 1, 3, 4, 6];
        for r in 0..8 {
            for c in 0..8 {
                let want = if r < 6 && c < 5 {
                    rows[r] * 8 + cols[c]
                } else {
                    0
                };
                assert_eq!(ids[r * side + c], want as u32, "patch ({r}, {c})");
            }
        }
    }

    #[test]
    fn patch_mask_uses_any_pixel() {
        // 4×4 pixels, 2×2 patches; only pixel (2, 1) and the top-left block are real.
        let mut m = vec![false; 16];
        m[0] = true;
        m[2 * 4 + 1] = true;
        assert_eq!(patch_mask(&m, 4, 2), vec![true, false, true, false]);
    }

    #[test]
    fn masked_corner_is_an_error() {
        let mut valid = vec![true; 4];
        valid[0] = false;
        valid[2] = false;
        let e = position_ids(&valid, 2, 2, 3).unwrap_err().to_string();
        assert!(e.contains("tile 3"), "{e}");
    }
}
