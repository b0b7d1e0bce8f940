//! The nnopbase descriptor API: `aclCreateTensor` and its siblings (scalars, int/float/bool arrays, tensor
//! lists). Declarations follow opbase `include/nnopbase/aclnn/acl_meta.h` and the API documents
//! `aclCreateTensor.md`, `aclCreateTensorList.md`, `aclDestroyTensorList.md` (the list owns its tensors).
//!
//! Every handle given to C is registered while live, so a destroyed or foreign handle passed to an operator is
//! reported instead of being dereferenced.

use super::types::{AclnnStatus, DType, ACLNN_ERR_PARAM_INVALID, ACLNN_ERR_PARAM_NULLPTR, OK};
use crate::errors::set_recent;
use std::collections::HashSet;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A tensor descriptor: view dims, element strides and offset over a storage of `storage_dims` elements
/// starting at a device address. The address is atomic because `aclSetInputTensorAddr` may change it while an
/// executor that holds the tensor exists.
#[derive(Debug)]
pub struct TensorDesc {
    /// View shape, outermost first.
    pub dims: Vec<i64>,
    /// View strides in elements.
    pub strides: Vec<i64>,
    /// View offset in elements from the storage start.
    pub offset: i64,
    /// Element type.
    pub dtype: DType,
    /// `aclFormat` value.
    pub format: i32,
    /// Storage shape (only its element count matters for an ND tensor).
    pub storage_dims: Vec<i64>,
    /// Device address of the storage start.
    pub addr: AtomicU64,
}

impl TensorDesc {
    /// Element count of the view.
    pub fn numel(&self) -> i64 {
        self.dims.iter().product()
    }

    /// Element count of the storage.
    pub fn storage_numel(&self) -> i64 {
        self.storage_dims.iter().product()
    }

    /// Current device address.
    pub fn addr(&self) -> u64 {
        self.addr.load(Ordering::Acquire)
    }

    /// Whether the view is row-major contiguous (size-1 dims may have any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut expect = 1i64;
        for (d, s) in self.dims.iter().zip(&self.strides).rev() {
            if *d != 1 && *s != expect {
                return false;
            }
            expect *= *d;
        }
        true
    }

    /// Shape and dtype for messages, e.g. `[2, 3] FLOAT16`.
    pub fn describe(&self) -> String {
        format!("{:?} {}", self.dims, self.dtype.name())
    }
}

/// The object behind an `aclTensor*`.
pub struct AclTensor(pub Arc<TensorDesc>);
/// The object behind an `aclScalar*`: the value as given, widened.
pub struct AclScalar {
    /// Type the caller declared.
    pub dtype: DType,
    /// The value as f64 (exact for every float type and for integers up to 2^53).
    pub value: f64,
}
/// The object behind an `aclIntArray*`.
pub struct AclIntArray(pub Vec<i64>);
/// The object behind an `aclFloatArray*`.
pub struct AclFloatArray(pub Vec<f32>);
/// The object behind an `aclBoolArray*`.
pub struct AclBoolArray(pub Vec<bool>);
/// The object behind an `aclTensorList*`: owns its tensor handles.
pub struct AclTensorList(pub Vec<*mut AclTensor>);

/// Kinds of handles, for the live registry and its messages.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Kind {
    /// aclTensor
    Tensor,
    /// aclScalar
    Scalar,
    /// aclIntArray
    IntArray,
    /// aclFloatArray
    FloatArray,
    /// aclBoolArray
    BoolArray,
    /// aclTensorList
    TensorList,
    /// aclOpExecutor
    Executor,
}

fn live() -> &'static Mutex<HashSet<(Kind, usize)>> {
    static LIVE: std::sync::OnceLock<Mutex<HashSet<(Kind, usize)>>> = std::sync::OnceLock::new();
    LIVE.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Records a new live handle.
pub fn register(kind: Kind, p: *const c_void) {
    live()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((kind, p as usize));
}

/// Removes a handle; false if it was not live.
pub fn unregister(kind: Kind, p: *const c_void) -> bool {
    live()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&(kind, p as usize))
}

/// Whether a handle is live.
pub fn is_live(kind: Kind, p: *const c_void) -> bool {
    live()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&(kind, p as usize))
}

fn fail_null<T>(msg: String) -> *mut T {
    set_recent(msg);
    std::ptr::null_mut()
}

unsafe fn slice<'a, T>(p: *const T, n: u64) -> Option<&'a [T]> {
    if n == 0 {
        return Some(&[]);
    }
    if p.is_null() {
        return None;
    }
    Some(std::slice::from_raw_parts(p, n as usize))
}

/// Builds a descriptor from the C arguments of `aclCreateTensor`, or says why not.
///
/// A null `stride` means row-major strides; null `storageDims` (with count 0) means a 1-D storage just large
/// enough for the view. Negative dims or strides are refused.
#[allow(clippy::too_many_arguments)]
pub unsafe fn make_desc(
    view_dims: *const i64,
    view_dims_num: u64,
    data_type: i32,
    stride: *const i64,
    offset: i64,
    format: i32,
    storage_dims: *const i64,
    storage_dims_num: u64,
    tensor_data: *mut c_void,
) -> Result<TensorDesc, String> {
    if view_dims_num > 64 {
        return Err(format!("viewDimsNum {view_dims_num} is not a tensor rank"));
    }
    let dims = slice(view_dims, view_dims_num)
        .ok_or_else(|| format!("viewDims is null with viewDimsNum {view_dims_num}"))?
        .to_vec();
    if let Some(d) = dims.iter().find(|d| **d < 0) {
        return Err(format!("view dim {d} in {dims:?} is negative"));
    }
    let strides = if stride.is_null() {
        super::access::contiguous_strides(&dims)
    } else {
        slice(stride, view_dims_num).unwrap_or(&[]).to_vec()
    };
    if let Some(s) = strides.iter().find(|s| **s < 0) {
        return Err(format!(
            "stride {s} in {strides:?} is negative (not simulated)"
        ));
    }
    if offset < 0 {
        return Err(format!("offset {offset} is negative"));
    }
    let span: i64 = if dims.contains(&0) {
        0
    } else {
        1 + dims
            .iter()
            .zip(&strides)
            .map(|(d, s)| (d - 1) * s)
            .sum::<i64>()
    };
    let storage = if storage_dims.is_null() && storage_dims_num == 0 {
        vec![offset + span]
    } else {
        slice(storage_dims, storage_dims_num)
            .ok_or_else(|| format!("storageDims is null with storageDimsNum {storage_dims_num}"))?
            .to_vec()
    };
    if let Some(d) = storage.iter().find(|d| **d < 0) {
        return Err(format!("storage dim {d} in {storage:?} is negative"));
    }
    Ok(TensorDesc {
        dims,
        strides,
        offset,
        dtype: DType::from_code(data_type),
        format,
        storage_dims: storage,
        addr: AtomicU64::new(tensor_data as u64),
    })
}

/// `aclCreateTensor` (acl_meta.h; aclCreateTensor.md). Strides and offset are in elements. Returns null, with a
/// message for `aclGetRecentErrMsg`, when the arguments cannot describe a tensor.
///
/// # Safety
/// Pointer arguments must point at the documented number of elements.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn aclCreateTensor(
    view_dims: *const i64,
    view_dims_num: u64,
    data_type: i32,
    stride: *const i64,
    offset: i64,
    format: i32,
    storage_dims: *const i64,
    storage_dims_num: u64,
    tensor_data: *mut c_void,
) -> *mut AclTensor {
    match make_desc(
        view_dims,
        view_dims_num,
        data_type,
        stride,
        offset,
        format,
        storage_dims,
        storage_dims_num,
        tensor_data,
    ) {
        Ok(d) => {
            let p = Box::into_raw(Box::new(AclTensor(Arc::new(d))));
            register(Kind::Tensor, p as *const c_void);
            p
        }
        Err(m) => fail_null(format!("aclCreateTensor: {m}")),
    }
}

/// Destroys a handle of `kind` that was made by `Box::into_raw`.
unsafe fn destroy<T>(kind: Kind, p: *const T, what: &str) -> AclnnStatus {
    if p.is_null() {
        // The documents allow destroying a null handle as a no-op.
        return OK;
    }
    if !unregister(kind, p as *const c_void) {
        set_recent(format!(
            "{what}: {p:p} is not a live handle (destroyed twice or never created)"
        ));
        return ACLNN_ERR_PARAM_INVALID;
    }
    drop(Box::from_raw(p as *mut T));
    OK
}

/// `aclDestroyTensor` (aclDestroyTensor.md). The device memory is the caller's and stays allocated.
///
/// # Safety
/// `tensor` is null or a handle from `aclCreateTensor`.
#[no_mangle]
pub unsafe extern "C" fn aclDestroyTensor(tensor: *const AclTensor) -> AclnnStatus {
    destroy(Kind::Tensor, tensor, "aclDestroyTensor")
}

/// `aclCreateScalar(void *value, aclDataType dataType)` (aclCreateScalar.md): copies the host value.
///
/// # Safety
/// `value` points at one element of `data_type`.
#[no_mangle]
pub unsafe extern "C" fn aclCreateScalar(value: *mut c_void, data_type: i32) -> *mut AclScalar {
    if value.is_null() {
        return fail_null("aclCreateScalar: value is null".into());
    }
    let dtype = DType::from_code(data_type);
    if dtype.size() == 0 {
        return fail_null(format!(
            "aclCreateScalar: data type {} is not simulated",
            dtype.name()
        ));
    }
    let v = super::access::load_f64(value as *const u8, dtype);
    let p = Box::into_raw(Box::new(AclScalar { dtype, value: v }));
    register(Kind::Scalar, p as *const c_void);
    p
}

/// `aclDestroyScalar`.
///
/// # Safety
/// `scalar` is null or a handle from `aclCreateScalar`.
#[no_mangle]
pub unsafe extern "C" fn aclDestroyScalar(scalar: *const AclScalar) -> AclnnStatus {
    destroy(Kind::Scalar, scalar, "aclDestroyScalar")
}

/// `aclCreateIntArray(const int64_t *value, uint64_t size)`: copies the values.
///
/// # Safety
/// `value` points at `size` elements.
#[no_mangle]
pub unsafe extern "C" fn aclCreateIntArray(value: *const i64, size: u64) -> *mut AclIntArray {
    match slice(value, size) {
        Some(s) => {
            let p = Box::into_raw(Box::new(AclIntArray(s.to_vec())));
            register(Kind::IntArray, p as *const c_void);
            p
        }
        None => fail_null(format!("aclCreateIntArray: value is null with size {size}")),
    }
}

/// `aclDestroyIntArray`.
///
/// # Safety
/// `array` is null or a handle from `aclCreateIntArray`.
#[no_mangle]
pub unsafe extern "C" fn aclDestroyIntArray(array: *const AclIntArray) -> AclnnStatus {
    destroy(Kind::IntArray, array, "aclDestroyIntArray")
}

/// `aclCreateFloatArray(const float *value, uint64_t size)`.
///
/// # Safety
/// `value` points at `size` elements.
#[no_mangle]
pub unsafe extern "C" fn aclCreateFloatArray(value: *const f32, size: u64) -> *mut AclFloatArray {
    match slice(value, size) {
        Some(s) => {
            let p = Box::into_raw(Box::new(AclFloatArray(s.to_vec())));
            register(Kind::FloatArray, p as *const c_void);
            p
        }
        None => fail_null(format!(
            "aclCreateFloatArray: value is null with size {size}"
        )),
    }
}

/// `aclDestroyFloatArray`.
///
/// # Safety
/// `array` is null or a handle from `aclCreateFloatArray`.
#[no_mangle]
pub unsafe extern "C" fn aclDestroyFloatArray(array: *const AclFloatArray) -> AclnnStatus {
    destroy(Kind::FloatArray, array, "aclDestroyFloatArray")
}

/// `aclCreateBoolArray(const bool *value, uint64_t size)`.
///
/// # Safety
/// `value` points at `size` elements.
#[no_mangle]
pub unsafe extern "C" fn aclCreateBoolArray(value: *const bool, size: u64) -> *mut AclBoolArray {
    match slice(value as *const u8, size) {
        Some(s) => {
            let p = Box::into_raw(Box::new(AclBoolArray(s.iter().map(|b| *b != 0).collect())));
            register(Kind::BoolArray, p as *const c_void);
            p
        }
        None => fail_null(format!(
            "aclCreateBoolArray: value is null with size {size}"
        )),
    }
}

/// `aclDestroyBoolArray`.
///
/// # Safety
/// `array` is null or a handle from `aclCreateBoolArray`.
#[no_mangle]
pub unsafe extern "C" fn aclDestroyBoolArray(array: *const AclBoolArray) -> AclnnStatus {
    destroy(Kind::BoolArray, array, "aclDestroyBoolArray")
}

/// `aclCreateTensorList(const aclTensor *const *value, uint64_t size)` (aclCreateTensorList.md): the list takes
/// ownership of the tensors, which `aclDestroyTensorList` destroys; the caller must not destroy them itself.
///
/// # Safety
/// `value` points at `size` tensor handles.
#[no_mangle]
pub unsafe extern "C" fn aclCreateTensorList(
    value: *const *const AclTensor,
    size: u64,
) -> *mut AclTensorList {
    let Some(s) = slice(value, size) else {
        return fail_null(format!(
            "aclCreateTensorList: value is null with size {size}"
        ));
    };
    for (i, t) in s.iter().enumerate() {
        if t.is_null() || !is_live(Kind::Tensor, *t as *const c_void) {
            return fail_null(format!(
                "aclCreateTensorList: element {i} ({t:p}) is not a live aclTensor"
            ));
        }
    }
    let p = Box::into_raw(Box::new(AclTensorList(
        s.iter().map(|t| *t as *mut AclTensor).collect(),
    )));
    register(Kind::TensorList, p as *const c_void);
    p
}

/// `aclDestroyTensorList`: destroys the list and the tensors it owns.
///
/// # Safety
/// `list` is null or a handle from `aclCreateTensorList`.
#[no_mangle]
pub unsafe extern "C" fn aclDestroyTensorList(list: *const AclTensorList) -> AclnnStatus {
    if list.is_null() {
        return OK;
    }
    if !unregister(Kind::TensorList, list as *const c_void) {
        set_recent(format!(
            "aclDestroyTensorList: {list:p} is not a live handle"
        ));
        return ACLNN_ERR_PARAM_INVALID;
    }
    let l = Box::from_raw(list as *mut AclTensorList);
    for t in l.0 {
        // A tensor destroyed separately by the caller despite the list's ownership is skipped, not freed twice.
        if unregister(Kind::Tensor, t as *const c_void) {
            drop(Box::from_raw(t));
        }
    }
    OK
}

/// Resolves a tensor argument: null gives 161001, a handle that is not live 161002.
pub unsafe fn tensor_arg(
    p: *const AclTensor,
    name: &str,
) -> Result<Arc<TensorDesc>, (AclnnStatus, String)> {
    opt_tensor_arg(p, name)?.ok_or((ACLNN_ERR_PARAM_NULLPTR, format!("{name} is null")))
}

/// Resolves an optional tensor argument (null is `None`).
pub unsafe fn opt_tensor_arg(
    p: *const AclTensor,
    name: &str,
) -> Result<Option<Arc<TensorDesc>>, (AclnnStatus, String)> {
    if p.is_null() {
        return Ok(None);
    }
    if !is_live(Kind::Tensor, p as *const c_void) {
        return Err((
            ACLNN_ERR_PARAM_INVALID,
            format!("{name} ({p:p}) is not a live aclTensor (destroyed?)"),
        ));
    }
    Ok(Some((*p).0.clone()))
}

/// Resolves a mandatory handle of another kind.
pub unsafe fn handle_arg<'a, T>(
    p: *const T,
    kind: Kind,
    name: &str,
) -> Result<&'a T, (AclnnStatus, String)> {
    if p.is_null() {
        return Err((ACLNN_ERR_PARAM_NULLPTR, format!("{name} is null")));
    }
    if !is_live(kind, p as *const c_void) {
        return Err((
            ACLNN_ERR_PARAM_INVALID,
            format!("{name} ({p:p}) is not a live {kind:?}"),
        ));
    }
    Ok(&*p)
}

/// Resolves a tensor-list argument into its tensors.
pub unsafe fn list_arg(
    p: *const AclTensorList,
    name: &str,
) -> Result<Vec<Arc<TensorDesc>>, (AclnnStatus, String)> {
    let l = handle_arg(p, Kind::TensorList, name)?;
    let mut out = Vec::with_capacity(l.0.len());
    for (i, t) in l.0.iter().enumerate() {
        out.push(tensor_arg(*t, &format!("{name}[{i}]"))?);
    }
    Ok(out)
}
