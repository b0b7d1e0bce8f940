//! The tile operations on the real instructions (stable inline assembly), and the run-time check
//! that they may run: CPUID and Linux's permission for tile data.

use std::arch::asm;
use std::sync::OnceLock;

use super::tiles::{TileConfig, Tiles};

/// Whether this process can run AMX-BF16 (see [`status`]).
pub fn available() -> bool {
    status().is_ok()
}

/// Whether this process can run AMX-BF16, or why not: CPUID.(EAX=7,ECX=0):EDX bit 24 (AMX-TILE)
/// and bit 22 (AMX-BF16), AVX-512F/BW/BF16 and FMA for the rest of the path, and Linux granting the
/// tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, confirmed by
/// `ARCH_GET_XCOMP_PERM`). Checked once; the permission, once granted, holds for every thread of
/// the process.
pub fn status() -> Result<(), String> {
    static STATUS: OnceLock<Result<(), String>> = OnceLock::new();
    STATUS
        .get_or_init(|| {
            cpu_has_amx()?;
            kernel_grants_tiles().inspect_err(|e| {
                tracing::warn!("the CPU has AMX but {e}; the AVX-512 kernels run instead")
            })
        })
        .clone()
}

fn cpu_has_amx() -> Result<(), String> {
    use std::arch::x86_64::__cpuid_count;
    // `__cpuid_count` is a safe function on newer compilers and unsafe on older ones.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86_64 CPU; leaf 7 is read only when leaf 0 reports it.
    let edx = unsafe {
        if __cpuid_count(0, 0).eax >= 7 {
            __cpuid_count(7, 0).edx
        } else {
            0
        }
    };
    if edx >> 24 & 1 == 0 || edx >> 22 & 1 == 0 {
        return Err("the CPU lacks AMX-TILE or AMX-BF16 (CPUID leaf 7, EDX bits 24 and 22)".into());
    }
    let others = is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512bf16")
        && is_x86_feature_detected!("fma");
    if !others {
        return Err("the CPU has AMX but lacks AVX-512F/BW/BF16 or FMA".into());
    }
    Ok(())
}

/// Linux x86 `arch_prctl` codes (arch/x86/include/uapi/asm/prctl.h) and the XSAVE feature number of
/// tile data (Intel SDM Vol. 1, 13.2: state component 18, XTILEDATA).
const ARCH_GET_XCOMP_PERM: libc::c_long = 0x1022;
const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
const XFEATURE_XTILEDATA: libc::c_long = 18;

#[cfg(target_os = "linux")]
fn kernel_grants_tiles() -> Result<(), String> {
    // SAFETY: arch_prctl with these codes only reads/writes the process's XSAVE permissions and
    // the u64 we pass.
    unsafe {
        if libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) != 0
        {
            return Err(format!(
                "arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut granted: u64 = 0;
        let rc = libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_GET_XCOMP_PERM,
            &mut granted as *mut u64,
        );
        if rc != 0 || granted >> XFEATURE_XTILEDATA & 1 == 0 {
            return Err(format!(
                "arch_prctl(ARCH_GET_XCOMP_PERM) does not report tile data (rc {rc}, mask {granted:#x})"
            ));
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn kernel_grants_tiles() -> Result<(), String> {
    Err("tile data permission is only requested on Linux".into())
}

/// The tile registers themselves (no state of its own). Only used when [`available`] said yes.
pub struct Hw;

impl Tiles for Hw {
    fn new() -> Self {
        Hw
    }

    #[inline(always)]
    unsafe fn configure(&mut self, cfg: &TileConfig) {
        asm!("ldtilecfg [{0}]", in(reg) cfg as *const TileConfig, options(nostack, readonly, preserves_flags));
    }

    #[inline(always)]
    unsafe fn zero(&mut self, t: u8) {
        macro_rules! z {
            ($($n:literal),*) => {
                match t {
                    $($n => asm!(concat!("tilezero tmm", $n), options(nostack, nomem, preserves_flags)),)*
                    _ => unreachable!("tile {t}"),
                }
            };
        }
        z!(0, 1, 2, 3, 4, 5, 6, 7)
    }

    #[inline(always)]
    unsafe fn load(&mut self, t: u8, src: *const u8, stride: usize) {
        macro_rules! l {
            ($($n:literal),*) => {
                match t {
                    $($n => asm!(concat!("tileloadd tmm", $n, ", [{0} + {1}*1]"),
                        in(reg) src, in(reg) stride, options(nostack, readonly, preserves_flags)),)*
                    _ => unreachable!("tile {t}"),
                }
            };
        }
        l!(0, 1, 2, 3, 4, 5, 6, 7)
    }

    #[inline(always)]
    unsafe fn dpbf16ps(&mut self, c: u8, a: u8, b: u8) {
        // The kernel's only combinations: accumulators 0–3, A tiles 4–5, B tiles 6–7.
        macro_rules! d {
            ($(($c:literal, $a:literal, $b:literal)),*) => {
                match (c, a, b) {
                    $(($c, $a, $b) => asm!(concat!("tdpbf16ps tmm", $c, ", tmm", $a, ", tmm", $b),
                        options(nostack, nomem, preserves_flags)),)*
                    _ => unreachable!("tiles {c} {a} {b}"),
                }
            };
        }
        d!((0, 4, 6), (1, 4, 7), (2, 5, 6), (3, 5, 7))
    }

    #[inline(always)]
    unsafe fn store(&mut self, t: u8, dst: *mut u8, stride: usize) {
        macro_rules! s {
            ($($n:literal),*) => {
                match t {
                    $($n => asm!(concat!("tilestored [{0} + {1}*1], tmm", $n),
                        in(reg) dst, in(reg) stride, options(nostack, preserves_flags)),)*
                    _ => unreachable!("tile {t}"),
                }
            };
        }
        s!(0, 1, 2, 3, 4, 5, 6, 7)
    }

    #[inline(always)]
    unsafe fn release(&mut self) {
        asm!("tilerelease", options(nostack, nomem, preserves_flags));
    }
}
