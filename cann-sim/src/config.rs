//! Simulator settings, read from the environment at `aclInit`.

use std::path::PathBuf;

/// Device capacity when `CANN_SIM_MEM_BYTES` is not set: 64 GiB, the HBM of a 910B3.
pub const DEFAULT_MEM_BYTES: u64 = 64 << 30;
/// SoC name when `CANN_SIM_SOC` is not set.
pub const DEFAULT_SOC: &str = "Ascend910B3";

/// The settings of one `aclInit`.
#[derive(Clone, Debug)]
pub struct Config {
    /// Device memory capacity in bytes (`CANN_SIM_MEM_BYTES`).
    pub mem_bytes: u64,
    /// Microseconds every stream task sleeps before it runs (`CANN_SIM_DELAY_US`, 0 = off).
    pub delay_us: u64,
    /// Where the JSON report goes at aclFinalize / exit (`CANN_SIM_REPORT`).
    pub report: Option<PathBuf>,
    /// What `aclrtGetSocName` returns (`CANN_SIM_SOC`).
    pub soc: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mem_bytes: DEFAULT_MEM_BYTES,
            delay_us: 0,
            report: None,
            soc: DEFAULT_SOC.to_string(),
        }
    }
}

fn parse_u64(name: &str) -> Result<Option<u64>, String> {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not valid UTF-8")),
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| format!("{name}={v:?} is not a non-negative integer")),
    }
}

impl Config {
    /// Reads the `CANN_SIM_*` variables; a malformed value is an error naming the variable.
    pub fn from_env() -> Result<Config, String> {
        let mut c = Config::default();
        if let Some(v) = parse_u64("CANN_SIM_MEM_BYTES")? {
            if v == 0 {
                return Err("CANN_SIM_MEM_BYTES=0: the device needs some memory".into());
            }
            c.mem_bytes = v;
        }
        if let Some(v) = parse_u64("CANN_SIM_DELAY_US")? {
            c.delay_us = v;
        }
        if let Some(p) = std::env::var_os("CANN_SIM_REPORT").filter(|p| !p.is_empty()) {
            c.report = Some(PathBuf::from(p));
        }
        if let Ok(s) = std::env::var("CANN_SIM_SOC") {
            if !s.is_empty() {
                c.soc = s;
            }
        }
        Ok(c)
    }
}
