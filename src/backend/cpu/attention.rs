//! Scaled dot-product attention (the numerics of torch's CPU flash attention), one query row at a time: scores for one row live in a buffer as long
//! as the visible keys, so the full score matrix is never materialised, even for long sequences.

use rayon::prelude::*;

use super::CpuTensor;
use crate::backend::{AttentionMask, AttentionParams};
use crate::numeric::round_bf16;

/// Query rows per task.
const ROWS_PER_TASK: usize = 8;

/// Attention of every query row of `q` over the keys it may see; softmax in f32.
pub fn attention(
    q: &CpuTensor,
    k: &CpuTensor,
    v: &CpuTensor,
    p: &AttentionParams,
    round: bool,
) -> Vec<f32> {
    let hd = p.head_dim;
    let (q_cols, kv_cols) = (p.heads * hd, p.kv_heads * hd);
    assert_eq!(q.cols, q_cols, "attention: q width");
    assert_eq!(k.cols, kv_cols, "attention: k width");
    assert_eq!(v.cols, kv_cols, "attention: v width");
    assert_eq!(k.rows, v.rows, "attention: k and v lengths differ");
    let group = p.heads / p.kv_heads;
    let mut out = vec![0f32; q.rows * q_cols];
    out.par_chunks_mut(ROWS_PER_TASK * q_cols)
        .enumerate()
        .for_each_init(
            || (Vec::new(), vec![0f32; hd]),
            |(scores, acc): &mut (Vec<f32>, Vec<f32>), (chunk, out_rows)| {
                for (r, out_row) in out_rows.chunks_exact_mut(q_cols).enumerate() {
                    let i = chunk * ROWS_PER_TASK + r;
                    let (k0, k1) = match p.mask {
                        AttentionMask::Bidirectional { seq_len, .. } => {
                            let s = i / seq_len;
                            (s * seq_len, (s + 1) * seq_len)
                        }
                        AttentionMask::Causal { offset } => (0, offset + i + 1),
                    };
                    let valid = match p.mask {
                        AttentionMask::Bidirectional { key_valid, .. } => key_valid,
                        AttentionMask::Causal { .. } => None,
                    };
                    for h in 0..p.heads {
                        let g = h / group;
                        let qv = &q.data[i * q_cols + h * hd..][..hd];
                        scores.clear();
                        let mut max = f32::NEG_INFINITY;
                        for j in k0..k1 {
                            let s = if valid.is_some_and(|m| !m[j]) {
                                f32::NEG_INFINITY
                            } else {
                                dot(qv, &k.data[j * kv_cols + g * hd..][..hd]) * p.scale
                            };
                            max = max.max(s);
                            scores.push(s);
                        }
                        let mut sum = 0f32;
                        for s in scores.iter_mut() {
                            let e = (*s - max).exp();
                            sum += e;
                            // torch's CPU flash attention multiplies V by the unnormalised
                            // probabilities in the activation dtype and divides by the f32 sum last.
                            *s = if round { round_bf16(e) } else { e };
                        }
                        let inv = 1.0 / sum;
                        acc.iter_mut().for_each(|a| *a = 0.0);
                        for (j, &w) in (k0..k1).zip(scores.iter()) {
                            if w == 0.0 {
                                continue;
                            }
                            let vv = &v.data[j * kv_cols + g * hd..][..hd];
                            for (a, &x) in acc.iter_mut().zip(vv) {
                                *a += w * x;
                            }
                        }
                        let o = &mut out_row[h * hd..(h + 1) * hd];
                        for (o, &a) in o.iter_mut().zip(acc.iter()) {
                            let val = a * inv;
                            *o = if round { round_bf16(val) } else { val };
                        }
                    }
                }
            },
        );
    out
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8 * 8;
    for c in (0..chunks).step_by(8) {
        for l in 0..8 {
            acc[l] += a[c + l] * b[c + l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks..a.len() {
        s += a[i] * b[i];
    }
    s
}
