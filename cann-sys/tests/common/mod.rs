//! Shared by the simulator tests: builds libcann_sim.so once per test binary (same profile and target
//! directory as this test) and points cann-sys at it through IDEFICS3_ASCEND_LIBS before the first load.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use cann_sys::Context;

/// Builds the simulator and sets the environment; `extra_env` are simulator settings (read at aclInit).
fn use_simulator(extra_env: &[(&str, &str)]) {
    let lib = cann_sim_locate::libcann_sim();
    // Set once, before cann-sys first reads the environment; other test threads wait on the OnceLock.
    std::env::set_var("IDEFICS3_ASCEND_LIBS", lib);
    for (k, v) in extra_env {
        std::env::set_var(k, v);
    }
}

/// The simulator's device 0 context, made once per test binary and bound on the calling thread.
pub fn context_with(extra_env: &[(&str, &str)]) -> Arc<Context> {
    static CTX: OnceLock<Arc<Context>> = OnceLock::new();
    let ctx = CTX.get_or_init(|| {
        use_simulator(extra_env);
        match Context::new(0) {
            Ok(c) => c,
            Err(e) => panic!("simulator context: {e}"),
        }
    });
    if let Err(e) = ctx.bind() {
        panic!("bind: {e}");
    }
    ctx.clone()
}

/// Deterministic pseudo-random f32s in [-1, 1).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
