//! The aclnn single-operator API, simulated: the nnopbase descriptor functions ([`tensor`]), the two-phase
//! protocol and executors ([`executor`]), and the operators, one module per family. Every rule enforced is
//! taken from the CANN document named in the module's comment; the computation is plain f32 code of our own.

pub mod access;
pub mod activation;
pub mod attention;
pub mod check;
pub mod elementwise;
pub mod executor;
pub mod fia;
pub mod index;
pub mod layout;
pub mod matmul;
pub mod norm;
pub mod rope;
pub mod tensor;
pub mod types;
