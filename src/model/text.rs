//! The Llama decoder (spec section 6): RMSNorm, GQA attention with half-split RoPE and a KV cache,
//! SiLU-gated MLP, final norm and lm_head.

use crate::backend::{AttentionMask, AttentionParams, Backend};
use crate::config::TextConfig;
use crate::error::Result;
use crate::weights::{Checkpoint, ExpectedTensor};

/// Names of the layers' tensors start with this and the layer number.
pub const LAYER_PREFIX: &str = "model.text_model.layers.";
const PREFIX: &str = "model.text_model";
/// Name of the token embedding matrix.
pub const EMBED: &str = "model.text_model.embed_tokens.weight";
/// Name of the output projection.
pub const LM_HEAD: &str = "lm_head.weight";

struct Linear<B: Backend> {
    w: B::Weight,
    b: Option<B::Weight>,
}

struct DecoderLayer<B: Backend> {
    input_norm: B::Weight,
    q: Linear<B>,
    k: Linear<B>,
    v: Linear<B>,
    o: Linear<B>,
    post_norm: B::Weight,
    gate: Linear<B>,
    up: Linear<B>,
    down: Linear<B>,
}

/// The decoder's weights.
pub struct TextModel<B: Backend> {
    cfg: TextConfig,
    inv_freq: Vec<f32>,
    embed: B::Weight,
    layers: Vec<DecoderLayer<B>>,
    norm: B::Weight,
    /// `None` when lm_head is tied to the embedding.
    lm_head: Option<B::Weight>,
}

/// Keys (after RoPE) and values of every layer for the tokens seen so far.
pub struct KvCache<B: Backend> {
    k: Vec<B::Cache>,
    v: Vec<B::Cache>,
    len: usize,
}

impl<B: Backend> KvCache<B> {
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The tensors the decoder reads; lm_head only when untied.
pub fn expected_tensors(c: &TextConfig, tied: bool) -> Vec<ExpectedTensor> {
    let (h, i, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let (q, kv) = (
        c.num_attention_heads * c.head_dim,
        c.num_key_value_heads * c.head_dim,
    );
    let mut out = vec![
        ExpectedTensor {
            name: EMBED.into(),
            shape: vec![v, h],
        },
        t("norm.weight", &[h]),
    ];
    if !tied {
        out.push(ExpectedTensor {
            name: LM_HEAD.into(),
            shape: vec![v, h],
        });
    }
    for l in 0..c.num_hidden_layers {
        let pre = format!("layers.{l}");
        out.push(t(&format!("{pre}.input_layernorm.weight"), &[h]));
        out.push(t(&format!("{pre}.post_attention_layernorm.weight"), &[h]));
        for (name, rows, cols, bias) in [
            ("self_attn.q_proj", q, h, c.attention_bias),
            ("self_attn.k_proj", kv, h, c.attention_bias),
            ("self_attn.v_proj", kv, h, c.attention_bias),
            ("self_attn.o_proj", h, q, c.attention_bias),
            ("mlp.gate_proj", i, h, c.mlp_bias),
            ("mlp.up_proj", i, h, c.mlp_bias),
            ("mlp.down_proj", h, i, c.mlp_bias),
        ] {
            out.push(t(&format!("{pre}.{name}.weight"), &[rows, cols]));
            if bias {
                out.push(t(&format!("{pre}.{name}.bias"), &[rows]));
            }
        }
    }
    out
}

fn t(name: &str, shape: &[usize]) -> ExpectedTensor {
    ExpectedTensor {
        name: format!("{PREFIX}.{name}"),
        shape: shape.to_vec(),
    }
}

impl<B: Backend> TextModel<B> {
    /// Binds the (already validated) weights.
    pub fn load(b: &B, ck: &Checkpoint, cfg: &TextConfig, tied: bool) -> Result<Self> {
        let w =
            |name: &str, rows: usize| b.load_weight(ck.require(&format!("{PREFIX}.{name}"))?, rows);
        let lin = |name: &str, rows: usize, bias: bool| -> Result<Linear<B>> {
            Ok(Linear {
                w: w(&format!("{name}.weight"), rows)?,
                b: if bias {
                    Some(w(&format!("{name}.bias"), 1)?)
                } else {
                    None
                },
            })
        };
        let (q, kv) = (
            cfg.num_attention_heads * cfg.head_dim,
            cfg.num_key_value_heads * cfg.head_dim,
        );
        let (ab, mb) = (cfg.attention_bias, cfg.mlp_bias);
        let mut layers = Vec::new();
        for l in 0..cfg.num_hidden_layers {
            let pre = format!("layers.{l}");
            layers.push(DecoderLayer {
                input_norm: w(&format!("{pre}.input_layernorm.weight"), 1)?,
                q: lin(&format!("{pre}.self_attn.q_proj"), q, ab)?,
                k: lin(&format!("{pre}.self_attn.k_proj"), kv, ab)?,
                v: lin(&format!("{pre}.self_attn.v_proj"), kv, ab)?,
                o: lin(&format!("{pre}.self_attn.o_proj"), cfg.hidden_size, ab)?,
                post_norm: w(&format!("{pre}.post_attention_layernorm.weight"), 1)?,
                gate: lin(&format!("{pre}.mlp.gate_proj"), cfg.intermediate_size, mb)?,
                up: lin(&format!("{pre}.mlp.up_proj"), cfg.intermediate_size, mb)?,
                down: lin(&format!("{pre}.mlp.down_proj"), cfg.hidden_size, mb)?,
            });
        }
        Ok(TextModel {
            cfg: cfg.clone(),
            inv_freq: super::rope::inv_freq(&cfg.rope, cfg.head_dim),
            embed: b.load_weight(ck.require(EMBED)?, cfg.vocab_size)?,
            layers,
            norm: w("norm.weight", 1)?,
            lm_head: if tied {
                None
            } else {
                Some(b.load_weight(ck.require(LM_HEAD)?, cfg.vocab_size)?)
            },
        })
    }

    /// An empty cache with room for `capacity` positions.
    pub fn new_cache(&self, b: &B, capacity: usize) -> Result<KvCache<B>> {
        let kv = self.cfg.num_key_value_heads * self.cfg.head_dim;
        let n = self.layers.len();
        Ok(KvCache {
            k: (0..n)
                .map(|_| b.cache_new(kv, capacity))
                .collect::<Result<_>>()?,
            v: (0..n)
                .map(|_| b.cache_new(kv, capacity))
                .collect::<Result<_>>()?,
            len: 0,
        })
    }

    /// Token embeddings `[ids.len(), H]` (ids already checked against the vocabulary).
    pub fn embed(&self, b: &B, ids: &[u32]) -> Result<B::Tensor> {
        b.embedding(&self.embed, ids)
    }

    /// Runs the decoder over `x` (the embeddings of the next positions), appending to the cache;
    /// returns the final-normed hidden states.
    pub fn forward(&self, b: &B, mut x: B::Tensor, cache: &mut KvCache<B>) -> Result<B::Tensor> {
        let c = &self.cfg;
        let (rows, _) = b.dims(&x);
        let offset = cache.len;
        let positions: Vec<u32> = (offset..offset + rows).map(|p| p as u32).collect();
        let eps = c.rms_norm_eps as f32;
        let params = AttentionParams {
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            scale: (c.head_dim as f32).powf(-0.5),
            mask: AttentionMask::Causal { offset },
        };
        for (l, layer) in self.layers.iter().enumerate() {
            let h = b.rms_norm(&x, &layer.input_norm, eps)?;
            let mut qkv = b.matmul_multi(
                &h,
                &[
                    (&layer.q.w, layer.q.b.as_ref()),
                    (&layer.k.w, layer.k.b.as_ref()),
                    (&layer.v.w, layer.v.b.as_ref()),
                ],
            )?;
            drop(h);
            let v = qkv.pop().expect("three outputs");
            let mut k = qkv.pop().expect("three outputs");
            let mut q = qkv.pop().expect("three outputs");
            b.rope(&mut q, c.head_dim, &positions, &self.inv_freq)?;
            b.rope(&mut k, c.head_dim, &positions, &self.inv_freq)?;
            b.cache_append(&mut cache.k[l], &k)?;
            b.cache_append(&mut cache.v[l], &v)?;
            let a = b.cached_attention(&q, &cache.k[l], &cache.v[l], &params)?;
            b.matmul_add(&mut x, &a, &layer.o.w, layer.o.b.as_ref())?;
            let h = b.rms_norm(&x, &layer.post_norm, eps)?;
            let gu = b.matmul_multi(
                &h,
                &[
                    (&layer.gate.w, layer.gate.b.as_ref()),
                    (&layer.up.w, layer.up.b.as_ref()),
                ],
            )?;
            let m = b.silu_mul(&gu[0], &gu[1])?;
            b.matmul_add(&mut x, &m, &layer.down.w, layer.down.b.as_ref())?;
        }
        cache.len += rows;
        b.rms_norm(&x, &self.norm, eps)
    }

    /// Logits `[rows, V]` of final-normed hidden states.
    pub fn logits(&self, b: &B, hidden: &B::Tensor) -> Result<B::Tensor> {
        b.matmul(hidden, self.lm_head.as_ref().unwrap_or(&self.embed), None)
    }
}
