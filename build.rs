//! Build script. The Ascend kernels in `kernels/` (flash attention, matmul) will be compiled here with
//! the CANN toolchain when it is installed; until the Ascend backend lands there is nothing to build,
//! so the script only records that it depends on nothing but itself.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
}
