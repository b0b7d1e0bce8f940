//! Status codes, data types and formats of the aclnn API.
//!
//! Numbers follow `docs/zh/context/aclnn_return_code.md` (ops-nn) for the status codes and the `aclDataType` /
//! `aclFormat` enumerations of the ACL base header (`include/external/acl/acl_base.h`, hicann/runtime).

/// `aclnnStatus`: 0 on success.
pub type AclnnStatus = i32;

/// Success.
pub const OK: AclnnStatus = 0;
/// A mandatory pointer argument is null.
pub const ACLNN_ERR_PARAM_NULLPTR: AclnnStatus = 161001;
/// An argument breaks the operator's documented rules (dtype, shape, attribute).
pub const ACLNN_ERR_PARAM_INVALID: AclnnStatus = 161002;
/// A runtime call made by the API failed (for us: the stream refused the task).
pub const ACLNN_ERR_RUNTIME_ERROR: AclnnStatus = 361001;
/// Internal tiling error; some operator documents list shape errors under this code.
pub const ACLNN_ERR_INNER_TILING_ERROR: AclnnStatus = 561002;
/// Internal null pointer (listed by `aclSetInputTensorAddr.md` for a null executor or tensor).
pub const ACLNN_ERR_INNER_NULLPTR: AclnnStatus = 561103;

/// `aclFormat` value of the plain row-major layout.
pub const ACL_FORMAT_ND: i32 = 2;
/// `aclFormat` values that describe plain row-major data under another name (accepted where a document lists them).
pub const ACL_FORMAT_NCHW: i32 = 0;
/// See [`ACL_FORMAT_NCHW`].
pub const ACL_FORMAT_NHWC: i32 = 1;

/// Element types the simulator can load and store; anything else is kept as `Other(code)` so that operators
/// reject it with a message instead of the tensor constructor failing.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum DType {
    /// ACL_FLOAT (0)
    F32,
    /// ACL_FLOAT16 (1)
    F16,
    /// ACL_INT8 (2)
    I8,
    /// ACL_INT32 (3)
    I32,
    /// ACL_UINT8 (4)
    U8,
    /// ACL_INT16 (6)
    I16,
    /// ACL_UINT16 (7)
    U16,
    /// ACL_UINT32 (8)
    U32,
    /// ACL_INT64 (9)
    I64,
    /// ACL_UINT64 (10)
    U64,
    /// ACL_DOUBLE (11)
    F64,
    /// ACL_BOOL (12)
    Bool,
    /// ACL_BF16 (27)
    BF16,
    /// Any other `aclDataType` value (complex, 8-bit floats, ...): not simulated.
    Other(i32),
}

impl DType {
    /// The type for an `aclDataType` value.
    pub fn from_code(code: i32) -> DType {
        match code {
            0 => DType::F32,
            1 => DType::F16,
            2 => DType::I8,
            3 => DType::I32,
            4 => DType::U8,
            6 => DType::I16,
            7 => DType::U16,
            8 => DType::U32,
            9 => DType::I64,
            10 => DType::U64,
            11 => DType::F64,
            12 => DType::Bool,
            27 => DType::BF16,
            c => DType::Other(c),
        }
    }

    /// The `aclDataType` value.
    pub fn code(self) -> i32 {
        match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::I8 => 2,
            DType::I32 => 3,
            DType::U8 => 4,
            DType::I16 => 6,
            DType::U16 => 7,
            DType::U32 => 8,
            DType::I64 => 9,
            DType::U64 => 10,
            DType::F64 => 11,
            DType::Bool => 12,
            DType::BF16 => 27,
            DType::Other(c) => c,
        }
    }

    /// Bytes per element (0 for types the simulator cannot store).
    pub fn size(self) -> usize {
        match self {
            DType::Bool | DType::I8 | DType::U8 => 1,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::Other(_) => 0,
        }
    }

    /// Floating-point types.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
    }

    /// Integer types (bool excluded).
    pub fn is_int(self) -> bool {
        matches!(
            self,
            DType::I8
                | DType::I16
                | DType::I32
                | DType::I64
                | DType::U8
                | DType::U16
                | DType::U32
                | DType::U64
        )
    }

    /// The name used in CANN's documents (FLOAT16, BFLOAT16, ...).
    pub fn name(self) -> String {
        match self {
            DType::F32 => "FLOAT".into(),
            DType::F16 => "FLOAT16".into(),
            DType::I8 => "INT8".into(),
            DType::I32 => "INT32".into(),
            DType::U8 => "UINT8".into(),
            DType::I16 => "INT16".into(),
            DType::U16 => "UINT16".into(),
            DType::U32 => "UINT32".into(),
            DType::I64 => "INT64".into(),
            DType::U64 => "UINT64".into(),
            DType::F64 => "DOUBLE".into(),
            DType::Bool => "BOOL".into(),
            DType::BF16 => "BFLOAT16".into(),
            DType::Other(c) => format!("aclDataType({c}, not simulated)"),
        }
    }
}

/// Name of an `aclFormat` value for messages.
pub fn format_name(format: i32) -> String {
    match format {
        -1 => "UNDEFINED".into(),
        0 => "NCHW".into(),
        1 => "NHWC".into(),
        2 => "ND".into(),
        3 => "NC1HWC0".into(),
        4 => "FRACTAL_Z".into(),
        29 => "FRACTAL_NZ".into(),
        f => format!("aclFormat({f})"),
    }
}

/// The common type of two operands by the documents' promotion table ("互推导关系"): bool < integers < floats,
/// wider wins inside a family, FLOAT16 with BFLOAT16 gives FLOAT, a signed with an unsigned integer the next
/// signed type that holds both. `None` for types outside the table.
pub fn promote(a: DType, b: DType) -> Option<DType> {
    use DType::*;
    if matches!(a, Other(_)) || matches!(b, Other(_)) {
        return None;
    }
    if a == b {
        return Some(a);
    }
    let rank_f = |t: DType| match t {
        F16 | BF16 => 1,
        F32 => 2,
        F64 => 3,
        _ => 0,
    };
    if a.is_float() || b.is_float() {
        if a.is_float() && b.is_float() {
            if rank_f(a) == rank_f(b) {
                // FLOAT16 with BFLOAT16
                return Some(F32);
            }
            return Some(if rank_f(a) > rank_f(b) { a } else { b });
        }
        return Some(if a.is_float() { a } else { b });
    }
    if a == Bool {
        return Some(b);
    }
    if b == Bool {
        return Some(a);
    }
    let signed = |t: DType| matches!(t, I8 | I16 | I32 | I64);
    let bits = |t: DType| t.size() * 8;
    if signed(a) == signed(b) {
        return Some(if bits(a) >= bits(b) { a } else { b });
    }
    let (s, u) = if signed(a) { (a, b) } else { (b, a) };
    if bits(s) > bits(u) {
        return Some(s);
    }
    Some(match bits(u) {
        8 => I16,
        16 => I32,
        _ => I64,
    })
}

/// Whether a value of type `from` may be written to an output of type `to` ("互转换关系"): a float result
/// only into a float output, an integer result into any integer or float output, bool into anything.
pub fn can_cast(from: DType, to: DType) -> bool {
    if matches!(from, DType::Other(_)) || matches!(to, DType::Other(_)) {
        return false;
    }
    if from.is_float() {
        return to.is_float();
    }
    if from.is_int() {
        return to != DType::Bool;
    }
    true
}
