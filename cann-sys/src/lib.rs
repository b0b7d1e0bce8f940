//! FFI to the CANN ACL runtime and the aclnn operators that idefics3 calls, loaded at run time, and a
//! thin safe layer over it (in the manner of cudarc and ggml-cann).
//!
//! - `include/cann_decls.h`: our own C declarations, each from its CANN document (release: CANN 9.1.0,
//!   ACL 1.17.0, see the header); `src/bindings.rs` is generated from it by bindgen and committed.
//! - [`api()`]: the libraries, found and opened once ([`loader`] says where it looks), every function
//!   resolved. `IDEFICS3_ASCEND_LIBS=/path/libcann_sim.so` selects the host simulator instead.
//! - Safe layer: [`Context`] (bind it on every thread), [`Stream`], [`Event`], [`DeviceBuffer`],
//!   [`HostBuffer`], [`Tensor`], [`Scalar`], [`IntArray`], [`TensorList`], the two-phase call in [`aclnn`],
//!   kernel binaries in [`kernel`]. Every failure is an [`Error`] naming the call, its status and
//!   `aclGetRecentErrMsg()`.

#[allow(non_camel_case_types, non_upper_case_globals, non_snake_case, dead_code, missing_docs, clippy::all)]
#[rustfmt::skip]
pub mod bindings;

pub mod aclnn;
mod error;
pub mod kernel;
pub mod loader;
mod memory;
mod runtime;
mod stream;
mod tensor;

pub use error::{check, Error, Result};
pub use loader::{api, Api};
pub use memory::{DeviceBuffer, HostBuffer, Plain};
pub use runtime::{device_count, init, soc_name, Context};
pub use stream::{Event, Stream};
pub use tensor::{contiguous_strides, IntArray, Scalar, ScalarValue, Tensor, TensorList};

#[cfg(test)]
mod tests {
    /// Every function the header declares is in the loader's table, and nothing else is.
    #[test]
    fn loader_table_matches_header() {
        let header = include_str!("../include/cann_decls.h");
        let mut declared: Vec<&str> = header
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                l.strip_prefix("CANN_PFN(")
                    .or_else(|| l.strip_prefix("CANN_ACLNN_RUN("))
                    .and_then(|r| r.strip_suffix(')'))
            })
            .filter(|name| *name != "f" && *name != "op")
            .collect();
        declared.sort_unstable();
        let mut table: Vec<&str> = super::loader::FUNCTION_NAMES.to_vec();
        table.sort_unstable();
        assert_eq!(declared, table);
        assert!(table.len() > 90, "only {} functions found", table.len());
    }

    #[test]
    fn contiguous_strides_are_row_major() {
        assert_eq!(super::contiguous_strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(super::contiguous_strides(&[5]), vec![1]);
        assert!(super::contiguous_strides(&[]).is_empty());
    }
}
