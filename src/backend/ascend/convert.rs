//! Host-side conversions between f32 values and the device's element types, rounding to nearest even
//! as `tensor.to(dtype)` does in torch.

use cann_sys::bindings::{aclDataType, ACL_BF16, ACL_FLOAT, ACL_FLOAT16};

use crate::backend::ActDtype;
use crate::weights::DType;

/// The aclDataType activations of `act` have on the device.
pub fn acl_dtype(act: ActDtype) -> aclDataType {
    match act {
        ActDtype::F32 => ACL_FLOAT,
        ActDtype::Bf16 => ACL_BF16,
        ActDtype::F16 => ACL_FLOAT16,
    }
}

/// Bytes per element of `act` on the device.
pub fn elem_size(act: ActDtype) -> usize {
    match act {
        ActDtype::F32 => 4,
        ActDtype::Bf16 | ActDtype::F16 => 2,
    }
}

/// The checkpoint dtype whose bytes are the device layout of `act` (no conversion needed).
pub fn storage_dtype(act: ActDtype) -> DType {
    match act {
        ActDtype::F32 => DType::F32,
        ActDtype::Bf16 => DType::BF16,
        ActDtype::F16 => DType::F16,
    }
}

/// Writes `src` as `act` elements into `dst` (`src.len()·elem_size` bytes).
pub fn f32_into(act: ActDtype, src: &[f32], dst: &mut [u8]) {
    debug_assert_eq!(dst.len(), src.len() * elem_size(act));
    match act {
        ActDtype::F32 => {
            for (d, v) in dst.chunks_exact_mut(4).zip(src) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
        ActDtype::Bf16 => {
            for (d, v) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&half::bf16::from_f32(*v).to_le_bytes());
            }
        }
        ActDtype::F16 => {
            for (d, v) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&half::f16::from_f32(*v).to_le_bytes());
            }
        }
    }
}

/// Reads `act` elements from `src` as f32 values.
pub fn to_f32(act: ActDtype, src: &[u8]) -> Vec<f32> {
    let mut out = vec![0.0; src.len() / elem_size(act)];
    crate::numeric::convert_into(storage_dtype(act), src, &mut out);
    out
}

/// Converts checkpoint elements of `from` into `act` elements in `dst`: a plain copy when the
/// layouts agree, else through f32 (`scratch` holds the widened values).
pub fn checkpoint_into(
    from: DType,
    src: &[u8],
    act: ActDtype,
    dst: &mut [u8],
    scratch: &mut Vec<f32>,
) {
    if from == storage_dtype(act) {
        dst.copy_from_slice(src);
        return;
    }
    let n = src.len() / from.size();
    scratch.resize(n, 0.0);
    crate::numeric::convert_into(from, src, scratch);
    f32_into(act, scratch, dst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rounds_to_nearest_even() {
        let v = [1.0f32, -2.5, 1.0 + 1.0 / 256.0, 65504.0, 1e-3];
        for act in [ActDtype::F32, ActDtype::Bf16, ActDtype::F16] {
            let mut bytes = vec![0u8; v.len() * elem_size(act)];
            f32_into(act, &v, &mut bytes);
            let back = to_f32(act, &bytes);
            for (a, b) in v.iter().zip(&back) {
                assert_eq!(act.round(*a), *b, "{act:?} {a}");
            }
        }
        // A tie between two bf16 values goes to the even one.
        let mut b = [0u8; 2];
        f32_into(ActDtype::Bf16, &[1.0 + 1.0 / 256.0], &mut b);
        assert_eq!(to_f32(ActDtype::Bf16, &b), vec![1.0]);
    }

    #[test]
    fn checkpoint_conversion_widens_then_rounds() {
        let src: Vec<u8> = [1.5f32, 3.0e-8, 70000.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut dst = vec![0u8; 6];
        let mut scratch = Vec::new();
        checkpoint_into(DType::F32, &src, ActDtype::F16, &mut dst, &mut scratch);
        let got = to_f32(ActDtype::F16, &dst);
        assert_eq!(got[0], 1.5);
        assert_eq!(got[1], crate::numeric::round_f16(3.0e-8));
        assert!(
            got[2].is_infinite(),
            "beyond the f16 range, as model.to(torch.float16)"
        );
    }
}
