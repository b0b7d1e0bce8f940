//! The whole model on `--backend ascend` over our CANN simulator (libcann_sim.so, built here by a
//! nested `cargo build -p cann-sim`), against the same transformers references and bounds as the CPU
//! parity tests; the command line and the schedule's promises (one synchronisation and a few bytes
//! per greedy token); a fault injected in the middle of a request; the simulator's delay mode.
//!
//! The simulator is process-wide (its counters and injected faults are global), so the tests of
//! this file take one lock and run one at a time.

#[path = "common/parity_checks.rs"]
mod checks;
mod common;

use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};

use checks::{check_bf16, check_f16, check_f32, expected, Run, N};
use common::*;
use idefics3::backend::ascend::{sim, AscendBackend, AscendDevice, KernelChoice};
use idefics3::backend::{ActDtype, Backend};
use idefics3::generate::greedy;
use idefics3::model::Idefics3;
use idefics3::tensor_io::read_inputs;

/// `IDEFICS3_TEST_DEVICE=real` (bench/ascend-smoke.sh on a 910B) runs these tests on the installed
/// CANN runtime instead of the simulator; the tests that need the simulator's counters, fault
/// injection or delay mode then say they are skipped.
fn real_device() -> bool {
    std::env::var("IDEFICS3_TEST_DEVICE").is_ok_and(|v| v == "real")
}

/// Serialises the tests and points this process's runtime loader at the simulator.
fn on_sim() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if !real_device() {
        let lib = simulator();
        static ENV: OnceLock<()> = OnceLock::new();
        // Set once, before the first runtime call of the process (the loader reads it once).
        ENV.get_or_init(|| std::env::set_var("IDEFICS3_ASCEND_LIBS", lib));
        sim::clear_faults();
    }
    guard
}

/// True (after saying so) when the test needs the simulator and runs on a real device.
fn needs_simulator(test: &str) -> bool {
    if real_device() {
        eprintln!("{test}: skipped on a real device (it needs the simulator)");
    }
    real_device()
}

fn backend(dtype: ActDtype) -> AscendBackend {
    AscendBackend::new(AscendDevice::open(0).unwrap(), dtype).unwrap()
}

fn run(case: &str, dtype: ActDtype) -> Run {
    let dir = fixture(case);
    let inputs = read_inputs(&dir.join("inputs.safetensors")).unwrap();
    let model = Idefics3::load(&dir.join("model"), backend(dtype)).unwrap();
    let out = greedy(&model, &inputs.input_ids, inputs.pixels.as_ref(), N, true).unwrap();
    Run {
        logits: out.prompt_logits,
        features: out.image_features,
        ids: out.ids.iter().map(|&i| i as i64).collect(),
    }
}

#[test]
fn f32_matches_transformers_on_the_simulated_device() {
    let _g = on_sim();
    for case in CASES {
        check_f32(case, run(case, ActDtype::F32));
    }
}

#[test]
fn bf16_matches_transformers_bf16_on_the_simulated_device() {
    let _g = on_sim();
    for case in CASES {
        check_bf16(case, run(case, ActDtype::Bf16));
    }
}

#[test]
fn f16_is_within_f16_rounding_on_the_simulated_device() {
    let _g = on_sim();
    for case in CASES {
        check_f16(case, run(case, ActDtype::F16));
    }
}

/// Device memory the simulator has handed out and not taken back.
fn device_bytes_in_use() -> u64 {
    sim::counters().unwrap()["memory"]["in_use"]
        .as_u64()
        .unwrap()
}

/// A failure injected into the middle of a request ends that request with an error naming the
/// operator, its status and the runtime's message; the next request gives the same answer as
/// before, and device memory returns to where it was (the failed request's blocks went back to
/// the pool, nothing leaked).
#[test]
fn a_failure_mid_request_leaves_the_model_usable_and_leaks_nothing() {
    let _g = on_sim();
    if needs_simulator("a_failure_mid_request_leaves_the_model_usable_and_leaks_nothing") {
        return;
    }
    let case = "idefics3_like";
    let dir = fixture(case);
    let inputs = read_inputs(&dir.join("inputs.safetensors")).unwrap();
    let model = Idefics3::load(&dir.join("model"), backend(ActDtype::F32)).unwrap();
    let request = || greedy(&model, &inputs.input_ids, inputs.pixels.as_ref(), 4, true);
    let first = request().unwrap();
    let before = device_bytes_in_use();
    // The 40th product from now falls inside the vision tower's layers.
    assert!(sim::inject_fault("aclnnMm", 40, 561103));
    let err = request().map(|_| ()).unwrap_err().to_string();
    assert!(
        err.contains("aclnnMm") && err.contains("561103") && err.contains("ascend backend, op"),
        "{err}"
    );
    sim::clear_faults();
    let again = request().unwrap();
    assert_eq!(again.ids, first.ids);
    assert_eq!(again.prompt_logits, first.prompt_logits);
    assert_eq!(
        device_bytes_in_use(),
        before,
        "device memory after the failed request"
    );
    let want = expected(case, "f32", "generated_ids").unwrap().i64;
    let got: Vec<i64> = again.ids.iter().map(|&i| i64::from(i)).collect();
    assert_eq!(got, want[..4]);
}

/// A request whose KV cache does not fit on the device is refused before any work.
#[test]
fn a_cache_that_does_not_fit_is_an_error_before_work() {
    let _g = on_sim();
    let b = backend(ActDtype::Bf16);
    let err = b
        .cache_new(1 << 20, 1 << 30)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("KV cache") && err.contains("does not fit"),
        "{err}"
    );
}

fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_idefics3"));
    cmd.args(args).env("HF_HUB_OFFLINE", "1");
    if !real_device() {
        cmd.env("IDEFICS3_ASCEND_LIBS", simulator());
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `generate --backend ascend` answers from image files exactly as the CPU backend does (f32, greedy),
/// for one image and for a two-image chat.
#[test]
fn generate_from_images_and_a_two_image_chat_match_the_cpu() {
    let _g = on_sim();
    let model = fixture("processor/smolvlm_style");
    let images = fixture("processor/images");
    let (model, one, two) = (
        model.to_str().unwrap(),
        images.join("one_tile.png"),
        images.join("wide.png"),
    );
    let chat = fixture("processor/chat.json");
    let (one, two, chat) = (
        one.to_str().unwrap(),
        two.to_str().unwrap(),
        chat.to_str().unwrap(),
    );
    let runs: [&[&str]; 2] = [
        &["--image", one, "--prompt", "What is in the picture?"],
        &["--image", one, "--image", two, "--chat", chat],
    ];
    for extra in runs {
        let mut args = vec![
            "generate",
            "--model",
            model,
            "--dtype",
            "f32",
            "--max-new-tokens",
            "12",
            "--json",
        ];
        args.extend_from_slice(extra);
        let cpu = stdout_of(&cli(&args, &[]));
        args.extend_from_slice(&["--backend", "ascend"]);
        let npu = stdout_of(&cli(&args, &[]));
        let answer = |s: &str| {
            let v: serde_json::Value = serde_json::from_str(s).unwrap();
            (
                v["text"].clone(),
                v["new_tokens"].clone(),
                v["prompt_tokens"].clone(),
            )
        };
        assert_eq!(
            answer(&npu),
            answer(&cpu),
            "{extra:?}\ncpu: {cpu}\nascend: {npu}"
        );
        assert_eq!(answer(&cpu).1, 12, "{cpu}");
    }
}

/// With every simulated task delayed (a missing synchronisation would then read stale data), the
/// `forward` command still matches transformers.
#[test]
fn delay_mode_still_matches_transformers() {
    let _g = on_sim();
    if needs_simulator("delay_mode_still_matches_transformers") {
        return;
    }
    let case = "idefics3_like";
    let dir = fixture(case);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.safetensors");
    let model = dir.join("model");
    let inputs = dir.join("inputs.safetensors");
    let args = [
        "forward",
        "--backend",
        "ascend",
        "--dtype",
        "f32",
        "--model",
        model.to_str().unwrap(),
        "--inputs",
        inputs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--greedy",
        "4",
    ];
    stdout_of(&cli(&args, &[("CANN_SIM_DELAY_US", "300")]));
    let logits = load(&out, "logits").unwrap();
    let want = expected(case, "f32", "logits").unwrap();
    assert!(rel_max_err(&logits.f32, &want.f32) < 1e-4);
    let ids = load(&out, "generated_ids").unwrap();
    assert_eq!(
        ids.i64,
        expected(case, "f32", "generated_ids").unwrap().i64[..4]
    );
}

/// The bench on the simulator reports, per decoded token, one synchronisation and the few bytes of
/// the token id and the finiteness check crossing to the host.
#[test]
fn bench_counts_one_sync_and_a_few_bytes_per_greedy_token() {
    let _g = on_sim();
    if needs_simulator("bench_counts_one_sync_and_a_few_bytes_per_greedy_token") {
        return;
    }
    let model = fixture("processor/smolvlm_style");
    let image = fixture("processor/images/one_tile.png");
    let out = cli(
        &[
            "bench",
            "--backend",
            "ascend",
            "--model",
            model.to_str().unwrap(),
            "--image",
            image.to_str().unwrap(),
            "--new-tokens",
            "6",
            "--runs",
            "1",
            "--warmup",
            "0",
            "--json",
        ],
        &[],
    );
    let v: serde_json::Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    let c = &v["counters"];
    assert_eq!(c["decode_syncs_per_token"].as_f64(), Some(1.0), "{v}");
    let d2h = c["decode_d2h_bytes_per_token"].as_f64().unwrap();
    assert!(d2h > 0.0 && d2h <= 16.0, "{v}");
    assert!(
        c["decode_launches_per_token"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    assert!(
        c["decode_device_bytes_per_token"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    assert!(
        v["estimate_910b"]["tokens_per_s"].as_f64().unwrap() > 0.0,
        "{v}"
    );
}

/// A device the runtime does not have is an error naming the count.
#[test]
fn a_missing_device_number_is_named() {
    let _g = on_sim();
    let model = fixture("processor/smolvlm_style");
    let out = cli(
        &[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "Hi",
            "--backend",
            "ascend",
            "--device",
            "3",
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--device 3: the Ascend runtime sees 1 device(s)"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// `--kernels custom`: our AscendC kernels (built for the simulator by scripts/build_kernel_cpu.sh)
/// run every product and attention of the whole model in bf16 and fp16, within the same bounds
/// against transformers as aclnn.
#[test]
fn custom_kernels_match_transformers_on_the_simulated_device() {
    let _g = on_sim();
    if !real_device() {
        let kernels = kernel_binaries();
        static ENV: OnceLock<()> = OnceLock::new();
        ENV.get_or_init(|| std::env::set_var("IDEFICS3_ASCEND_KERNELS", kernels));
    }
    for case in CASES {
        let dir = fixture(case);
        let inputs = read_inputs(&dir.join("inputs.safetensors")).unwrap();
        for dtype in [ActDtype::Bf16, ActDtype::F16] {
            let b = AscendBackend::with_kernels(
                AscendDevice::open(0).unwrap(),
                dtype,
                KernelChoice::Custom,
            )
            .unwrap();
            assert_eq!(b.kernels(), KernelChoice::Custom);
            sim::reset_counters();
            let model = Idefics3::load(&dir.join("model"), b).unwrap();
            let on_sim = sim::is_simulator();
            let out = greedy(&model, &inputs.input_ids, inputs.pixels.as_ref(), N, true).unwrap();
            if on_sim {
                let launches = sim::counters().unwrap()["streams"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| {
                        s["kernel_launches"]
                            .as_object()
                            .map_or(0, |m| m.values().map(|v| v.as_u64().unwrap()).sum::<u64>())
                    })
                    .sum::<u64>();
                assert!(launches > 0, "{case}: no custom kernel ran");
            }
            let run = Run {
                logits: out.prompt_logits,
                features: out.image_features,
                ids: out.ids.iter().map(|&i| i as i64).collect(),
            };
            match dtype {
                ActDtype::Bf16 => check_bf16(case, run),
                _ => check_f16(case, run),
            }
        }
    }
}
