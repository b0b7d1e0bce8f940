//! The connector (spec section 4): pixel shuffle by the scale factor, then a bias-free projection
//! into the text model's width.

use crate::backend::Backend;
use crate::config::ModelConfig;
use crate::error::Result;
use crate::weights::{Checkpoint, ExpectedTensor};

const PROJ: &str = "model.connector.modality_projection.proj.weight";

/// The connector's weight.
pub struct Connector<B: Backend> {
    proj: B::Weight,
    scale: usize,
}

/// The tensors the connector reads.
pub fn expected_tensors(c: &ModelConfig) -> Vec<ExpectedTensor> {
    vec![ExpectedTensor {
        name: PROJ.into(),
        shape: vec![
            c.text.hidden_size,
            c.vision.hidden_size * c.scale_factor * c.scale_factor,
        ],
    }]
}

impl<B: Backend> Connector<B> {
    /// Binds the (already validated) weight.
    pub fn load(b: &B, ck: &Checkpoint, c: &ModelConfig) -> Result<Self> {
        Ok(Connector {
            proj: b.load_weight(ck.require(PROJ)?, c.text.hidden_size)?,
            scale: c.scale_factor,
        })
    }

    /// `[T·W², Dv]` encoder output of tiles with W patches per side → `[T·W²/s², H]` image features.
    pub fn forward(&self, b: &B, x: &B::Tensor, side: usize) -> Result<B::Tensor> {
        let shuffled = b.pixel_shuffle(x, side, self.scale)?;
        b.matmul(&shuffled, &self.proj, None)
    }
}
