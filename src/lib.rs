//! An inference engine for the Idefics3 vision-language model (Idefics3-8B-Llama3 and the SmolVLM v1
//! checkpoints), with a CPU backend that is both the exact reference and a fast engine.
//!
//! ```no_run
//! use idefics3::{backend::{cpu::CpuBackend, ActDtype}, model::Idefics3};
//! # fn main() -> idefics3::Result<()> {
//! let model = Idefics3::load("path/to/checkpoint".as_ref(), CpuBackend::new(ActDtype::Bf16, None)?)?;
//! let out = idefics3::generate::greedy(&model, &[1, 2, 3], None, 8, false)?;
//! println!("{:?}", out.ids);
//! # Ok(())
//! # }
//! ```

pub mod aligned_alloc;
pub mod backend;
pub mod bench;
pub mod capi;
pub mod config;
pub mod engine;
pub mod error;
pub mod generate;
pub mod hub;
pub mod limits;
pub mod model;
pub mod numeric;
pub mod processor;
pub mod tensor_io;
pub mod weights;

pub use error::{Error, Result};
