//! The SigLIP-style vision encoder (spec section 3): patch embedding, position embedding, pre-LN
//! bidirectional encoder layers, post LayerNorm.

use crate::backend::{AttentionMask, AttentionParams, Backend};
use crate::config::VisionConfig;
use crate::error::Result;
use crate::weights::{Checkpoint, ExpectedTensor};

/// Names of the layers' tensors start with this and the layer number.
pub const LAYER_PREFIX: &str = "model.vision_model.encoder.layers.";
const PREFIX: &str = "model.vision_model";

struct Linear<B: Backend> {
    w: B::Weight,
    b: B::Weight,
}

struct EncoderLayer<B: Backend> {
    ln1: (B::Weight, B::Weight),
    q: Linear<B>,
    k: Linear<B>,
    v: Linear<B>,
    o: Linear<B>,
    ln2: (B::Weight, B::Weight),
    fc1: Linear<B>,
    fc2: Linear<B>,
}

/// The vision tower's weights.
pub struct VisionTower<B: Backend> {
    cfg: VisionConfig,
    patch_w: B::Weight,
    patch_b: B::Weight,
    pos_emb: B::Weight,
    layers: Vec<EncoderLayer<B>>,
    post_ln: (B::Weight, B::Weight),
}

/// The tensors the vision tower reads, with their shapes.
pub fn expected_tensors(c: &VisionConfig) -> Vec<ExpectedTensor> {
    let (d, i, p) = (c.hidden_size, c.intermediate_size, c.patch_size);
    let mut v = vec![
        t(
            "embeddings.patch_embedding.weight",
            &[d, c.num_channels, p, p],
        ),
        t("embeddings.patch_embedding.bias", &[d]),
        t(
            "embeddings.position_embedding.weight",
            &[c.num_positions(), d],
        ),
        t("post_layernorm.weight", &[d]),
        t("post_layernorm.bias", &[d]),
    ];
    for l in 0..c.num_hidden_layers {
        let pre = format!("encoder.layers.{l}");
        for ln in ["layer_norm1", "layer_norm2"] {
            v.push(t(&format!("{pre}.{ln}.weight"), &[d]));
            v.push(t(&format!("{pre}.{ln}.bias"), &[d]));
        }
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            v.push(t(&format!("{pre}.self_attn.{proj}.weight"), &[d, d]));
            v.push(t(&format!("{pre}.self_attn.{proj}.bias"), &[d]));
        }
        v.push(t(&format!("{pre}.mlp.fc1.weight"), &[i, d]));
        v.push(t(&format!("{pre}.mlp.fc1.bias"), &[i]));
        v.push(t(&format!("{pre}.mlp.fc2.weight"), &[d, i]));
        v.push(t(&format!("{pre}.mlp.fc2.bias"), &[d]));
    }
    v
}

fn t(name: &str, shape: &[usize]) -> ExpectedTensor {
    ExpectedTensor {
        name: format!("{PREFIX}.{name}"),
        shape: shape.to_vec(),
    }
}

impl<B: Backend> VisionTower<B> {
    /// Binds the (already validated) weights.
    pub fn load(b: &B, ck: &Checkpoint, cfg: &VisionConfig) -> Result<Self> {
        let w =
            |name: &str, rows: usize| b.load_weight(ck.require(&format!("{PREFIX}.{name}"))?, rows);
        let d = cfg.hidden_size;
        let vec = |name: &str| w(name, 1);
        let lin = |name: &str, rows: usize| -> Result<Linear<B>> {
            Ok(Linear {
                w: w(&format!("{name}.weight"), rows)?,
                b: vec(&format!("{name}.bias"))?,
            })
        };
        let mut layers = Vec::new();
        for l in 0..cfg.num_hidden_layers {
            let pre = format!("encoder.layers.{l}");
            layers.push(EncoderLayer {
                ln1: (
                    vec(&format!("{pre}.layer_norm1.weight"))?,
                    vec(&format!("{pre}.layer_norm1.bias"))?,
                ),
                q: lin(&format!("{pre}.self_attn.q_proj"), d)?,
                k: lin(&format!("{pre}.self_attn.k_proj"), d)?,
                v: lin(&format!("{pre}.self_attn.v_proj"), d)?,
                o: lin(&format!("{pre}.self_attn.out_proj"), d)?,
                ln2: (
                    vec(&format!("{pre}.layer_norm2.weight"))?,
                    vec(&format!("{pre}.layer_norm2.bias"))?,
                ),
                fc1: lin(&format!("{pre}.mlp.fc1"), cfg.intermediate_size)?,
                fc2: lin(&format!("{pre}.mlp.fc2"), d)?,
            });
        }
        Ok(VisionTower {
            cfg: cfg.clone(),
            patch_w: w("embeddings.patch_embedding.weight", d)?,
            patch_b: vec("embeddings.patch_embedding.bias")?,
            pos_emb: w("embeddings.position_embedding.weight", cfg.num_positions())?,
            layers,
            post_ln: (vec("post_layernorm.weight")?, vec("post_layernorm.bias")?),
        })
    }

    /// Encodes `T` tiles `[T, C·S·S]` (S = `size`) into `[T·(S/p)², Dv]`. `position_ids` and
    /// `key_valid` hold one entry per patch; `key_valid` is `None` when every patch is real.
    pub fn forward(
        &self,
        b: &B,
        pixels: &B::Tensor,
        size: usize,
        position_ids: &[u32],
        key_valid: Option<&[bool]>,
    ) -> Result<B::Tensor> {
        let c = &self.cfg;
        let side = size / c.patch_size;
        let patches = b.patchify(pixels, c.num_channels, size, c.patch_size)?;
        let mut x = b.matmul(&patches, &self.patch_w, Some(&self.patch_b))?;
        drop(patches);
        let pos = b.embedding(&self.pos_emb, position_ids)?;
        b.add_assign(&mut x, &pos)?;
        let eps = c.layer_norm_eps as f32;
        let params = AttentionParams {
            heads: c.num_attention_heads,
            kv_heads: c.num_attention_heads,
            head_dim: c.head_dim(),
            scale: (c.head_dim() as f32).powf(-0.5),
            mask: AttentionMask::Bidirectional {
                seq_len: side * side,
                key_valid,
            },
        };
        for l in &self.layers {
            let h = b.layer_norm(&x, &l.ln1.0, &l.ln1.1, eps)?;
            let qkv = b.matmul_multi(
                &h,
                &[
                    (&l.q.w, Some(&l.q.b)),
                    (&l.k.w, Some(&l.k.b)),
                    (&l.v.w, Some(&l.v.b)),
                ],
            )?;
            drop(h);
            let a = b.attention(&qkv[0], &qkv[1], &qkv[2], &params)?;
            b.matmul_add(&mut x, &a, &l.o.w, Some(&l.o.b))?;
            let h = b.layer_norm(&x, &l.ln2.0, &l.ln2.1, eps)?;
            let m = b.matmul_gelu(&h, &l.fc1.w, Some(&l.fc1.b))?;
            b.matmul_add(&mut x, &m, &l.fc2.w, Some(&l.fc2.b))?;
        }
        b.layer_norm(&x, &self.post_ln.0, &self.post_ln.1, eps)
    }
}
