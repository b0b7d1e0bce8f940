//! Attention against a plain f64 softmax reference: the blocked (many queries) and split-key (few
//! queries, decoding) paths, f32 and bf16 caches, grouped heads, causal offsets, key masks, contexts
//! long enough to be split into several runs; and identical bits on 1 and 2 threads.

use idefics3::backend::cpu::CpuBackend;
use idefics3::backend::{ActDtype, AttentionMask, AttentionParams, Backend};

struct Rng(u64);
impl Rng {
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale
            })
            .collect()
    }
}

/// softmax(q·kᵀ·scale)·v in f64 for query row `i` and head `h`, over the keys `visible` admits.
fn reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    p: &AttentionParams,
    rows: usize,
    keys: usize,
    visible: impl Fn(usize, usize) -> bool,
) -> Vec<f64> {
    let hd = p.head_dim;
    let (qc, kc) = (p.heads * hd, p.kv_heads * hd);
    let group = p.heads / p.kv_heads;
    let mut out = vec![0f64; rows * qc];
    for i in 0..rows {
        for h in 0..p.heads {
            let g = h / group;
            let s: Vec<f64> = (0..keys)
                .map(|j| {
                    if !visible(i, j) {
                        return f64::NEG_INFINITY;
                    }
                    (0..hd)
                        .map(|d| q[i * qc + h * hd + d] as f64 * k[j * kc + g * hd + d] as f64)
                        .sum::<f64>()
                        * p.scale as f64
                })
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for d in 0..hd {
                out[i * qc + h * hd + d] = (0..keys)
                    .map(|j| e[j] * v[j * kc + g * hd + d] as f64)
                    .sum::<f64>()
                    / z;
            }
        }
    }
    out
}

fn bf16(v: &[f32]) -> Vec<f32> {
    v.iter()
        .map(|&x| half::bf16::from_f32(x).to_f32())
        .collect()
}

/// Largest error relative to the largest reference magnitude.
fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    let scale = want.iter().fold(0f64, |m, &x| m.max(x.abs()));
    got.iter()
        .zip(want)
        .fold(0f64, |m, (&g, &w)| m.max((g as f64 - w).abs()))
        / scale
}

/// Causal attention of `rows` new queries after `offset` cached positions, through the cache API.
fn cached_case(
    act: ActDtype,
    threads: usize,
    offset: usize,
    rows: usize,
    seed: u64,
    (heads, kv_heads, hd): (usize, usize, usize),
) -> (Vec<f32>, Vec<f64>) {
    let keys = offset + rows;
    let mut rng = Rng(seed);
    let round = |v: Vec<f32>| if act == ActDtype::Bf16 { bf16(&v) } else { v };
    // Scores of a few units: softmax neither flat nor one-hot.
    let q = round(rng.vec(rows * heads * hd, 0.6));
    let k = round(rng.vec(keys * kv_heads * hd, 0.6));
    let v = round(rng.vec(keys * kv_heads * hd, 1.0));
    let b = CpuBackend::new(act, Some(threads)).unwrap();
    let p = AttentionParams {
        heads,
        kv_heads,
        head_dim: hd,
        scale: (hd as f32).powf(-0.5),
        mask: AttentionMask::Causal { offset },
    };
    let mut kc = b.cache_new(kv_heads * hd, keys).unwrap();
    let mut vc = b.cache_new(kv_heads * hd, keys).unwrap();
    // Filled in two appends, as a prefill and a decode step would.
    let kvw = kv_heads * hd;
    let up = |x: &[f32], r| b.upload(x, r, kvw).unwrap();
    b.cache_append(&mut kc, &up(&k[..offset * kvw], offset))
        .unwrap();
    b.cache_append(&mut kc, &up(&k[offset * kvw..], rows))
        .unwrap();
    b.cache_append(&mut vc, &up(&v[..offset * kvw], offset))
        .unwrap();
    b.cache_append(&mut vc, &up(&v[offset * kvw..], rows))
        .unwrap();
    let qt = b.upload(&q, rows, heads * hd).unwrap();
    let got = b
        .download(&b.cached_attention(&qt, &kc, &vc, &p).unwrap())
        .unwrap();
    let want = reference(&q, &k, &v, &p, rows, keys, |i, j| j <= offset + i);
    (got, want)
}

/// Head layouts: (query heads, key heads, head width). Widths that are multiples of 16 take the
/// AVX-512 tiles (one to four heads per tile, 16 to 64 columns per tile); the others the generic loop.
const SHAPES: [(usize, usize, usize); 6] = [
    (6, 2, 32),
    (9, 3, 64),
    (8, 2, 128),
    (10, 2, 48),
    (4, 4, 16),
    (4, 2, 24),
];

#[test]
fn decoding_attention_matches_the_reference_at_every_context_length() {
    // 1–3 query rows (split-key path) over short contexts and ones cut into many runs.
    for shape in SHAPES {
        for (offset, rows) in [(0, 1), (4, 1), (150, 2), (700, 1), (3000, 1), (2100, 3)] {
            let seed = offset as u64 + 7;
            let (got, want) = cached_case(ActDtype::F32, 2, offset, rows, seed, shape);
            let e = rel_err(&got, &want);
            // f32 sums over up to 3000 keys; without AVX-512 each dot product is summed serially.
            assert!(
                e < 5e-6,
                "f32 {shape:?}, offset {offset}, rows {rows}: error {e:.2e}"
            );
            // bf16: probabilities and outputs are rounded to bf16 (8 bits), as in torch.
            let (got, want) = cached_case(ActDtype::Bf16, 2, offset, rows, seed, shape);
            let e = rel_err(&got, &want);
            assert!(
                e < 1.2e-2,
                "bf16 {shape:?}, offset {offset}, rows {rows}: error {e:.2e}"
            );
            assert!(
                got.iter().all(|&x| half::bf16::from_f32(x).to_f32() == x),
                "bf16 outputs"
            );
        }
    }
}

#[test]
fn prefill_attention_over_the_cache_matches_the_reference() {
    // 16+ query rows take the blocked matmul path; with an offset (a second turn) and without.
    for (offset, rows) in [(0, 40), (300, 17), (0, 260)] {
        let shape = (6, 2, 32);
        let (got, want) = cached_case(ActDtype::F32, 2, offset, rows, 99 + rows as u64, shape);
        let e = rel_err(&got, &want);
        assert!(e < 2e-6, "f32, offset {offset}, rows {rows}: error {e:.2e}");
        let (got, want) = cached_case(ActDtype::Bf16, 2, offset, rows, 99 + rows as u64, shape);
        let e = rel_err(&got, &want);
        assert!(
            e < 1.2e-2,
            "bf16, offset {offset}, rows {rows}: error {e:.2e}"
        );
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    for act in [ActDtype::F32, ActDtype::Bf16] {
        for (offset, rows) in [(1500, 1), (200, 20)] {
            let one = cached_case(act, 1, offset, rows, 3, (9, 3, 64)).0;
            let two = cached_case(act, 2, offset, rows, 3, (9, 3, 64)).0;
            assert_eq!(one, two, "{act:?}, offset {offset}, rows {rows}");
        }
    }
}

#[test]
fn bidirectional_attention_honours_the_key_mask_on_both_paths() {
    let (heads, kv_heads, hd) = (4, 4, 16);
    let mut rng = Rng(11);
    for (seqs, seq_len) in [(3, 8), (2, 40)] {
        let n = seqs * seq_len;
        let q = rng.vec(n * heads * hd, 0.6);
        let k = rng.vec(n * kv_heads * hd, 0.6);
        let v = rng.vec(n * kv_heads * hd, 1.0);
        // Every third key of each sequence is padding, and never the first.
        let valid: Vec<bool> = (0..n).map(|j| j % seq_len % 3 != 2).collect();
        let p = AttentionParams {
            heads,
            kv_heads,
            head_dim: hd,
            scale: 0.25,
            mask: AttentionMask::Bidirectional {
                seq_len,
                key_valid: Some(&valid),
            },
        };
        let b = CpuBackend::new(ActDtype::F32, Some(2)).unwrap();
        let t = |x: &[f32], c| b.upload(x, n, c).unwrap();
        let got = b
            .download(
                &b.attention(
                    &t(&q, heads * hd),
                    &t(&k, kv_heads * hd),
                    &t(&v, kv_heads * hd),
                    &p,
                )
                .unwrap(),
            )
            .unwrap();
        let want = reference(&q, &k, &v, &p, n, n, |i, j| {
            i / seq_len == j / seq_len && valid[j]
        });
        let e = rel_err(&got, &want);
        assert!(e < 2e-6, "{seqs} sequences of {seq_len}: error {e:.2e}");
    }
}
