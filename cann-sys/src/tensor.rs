//! aclnn argument objects: tensor descriptors, scalars, int arrays and tensor lists, each destroyed on
//! drop. opbase include/nnopbase/aclnn/acl_meta.h and the aclCreateTensor documentation.

use std::ffi::c_void;

use crate::bindings::{
    aclDataType, aclFormat, aclIntArray, aclScalar, aclTensor, aclTensorList, ACL_FORMAT_ND,
};
use crate::bindings::{
    ACL_DOUBLE, ACL_FLOAT, ACL_INT16, ACL_INT32, ACL_INT64, ACL_INT8, ACL_UINT8,
};
use crate::error::{recent_message, Error, Result};
use crate::loader::{api, Api};

/// Host values that can be an aclScalar.
pub trait ScalarValue: crate::memory::Plain {
    /// The aclDataType describing it.
    const DTYPE: aclDataType;
}
impl ScalarValue for f32 {
    const DTYPE: aclDataType = ACL_FLOAT;
}
impl ScalarValue for f64 {
    const DTYPE: aclDataType = ACL_DOUBLE;
}
impl ScalarValue for i8 {
    const DTYPE: aclDataType = ACL_INT8;
}
impl ScalarValue for u8 {
    const DTYPE: aclDataType = ACL_UINT8;
}
impl ScalarValue for i16 {
    const DTYPE: aclDataType = ACL_INT16;
}
impl ScalarValue for i32 {
    const DTYPE: aclDataType = ACL_INT32;
}
impl ScalarValue for i64 {
    const DTYPE: aclDataType = ACL_INT64;
}

fn made<T>(api: &Api, call: &'static str, raw: *mut T) -> Result<*mut T> {
    if raw.is_null() {
        Err(Error::Null {
            call,
            message: recent_message(api),
        })
    } else {
        Ok(raw)
    }
}

/// Row-major strides, in elements, of `shape`.
pub fn contiguous_strides(shape: &[i64]) -> Vec<i64> {
    let mut strides = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1].max(1);
    }
    strides
}

/// A view of device memory as an aclnn tensor: shape, element strides, element offset, format and the
/// dims of the underlying storage. The memory is not owned: keep its buffer alive while the tensor is used.
pub struct Tensor {
    api: &'static Api,
    raw: *mut aclTensor,
}

// SAFETY: a descriptor is a host object that the runtime only reads; it may move between threads.
unsafe impl Send for Tensor {}

impl Tensor {
    /// A general view: `shape` and `strides` (elements) of equal rank, `offset` in elements from `data`,
    /// `storage` the dims of the whole allocation behind `data`.
    // `data` is a device address, never dereferenced on the host.
    #[allow(clippy::not_unsafe_ptr_arg_deref)]
    pub fn new(
        data: *mut c_void,
        dtype: aclDataType,
        shape: &[i64],
        strides: &[i64],
        offset: i64,
        format: aclFormat,
        storage: &[i64],
    ) -> Result<Tensor> {
        if shape.len() != strides.len() {
            return Err(Error::Invalid(format!(
                "tensor shape {shape:?} has rank {} but strides {strides:?} have {}",
                shape.len(),
                strides.len()
            )));
        }
        let api = api()?;
        // SAFETY: the arrays are live slices of the stated lengths; the runtime copies them.
        let raw = unsafe {
            (api.aclCreateTensor)(
                shape.as_ptr(),
                shape.len() as u64,
                dtype,
                strides.as_ptr(),
                offset,
                format,
                storage.as_ptr(),
                storage.len() as u64,
                data,
            )
        };
        Ok(Tensor {
            api,
            raw: made(api, "aclCreateTensor", raw)?,
        })
    }

    /// A row-major ND tensor covering `shape` from `data`.
    #[allow(clippy::not_unsafe_ptr_arg_deref)]
    pub fn contiguous(data: *mut c_void, dtype: aclDataType, shape: &[i64]) -> Result<Tensor> {
        Tensor::new(
            data,
            dtype,
            shape,
            &contiguous_strides(shape),
            0,
            ACL_FORMAT_ND,
            shape,
        )
    }

    /// The raw descriptor, for aclnn calls.
    pub fn raw(&self) -> *mut aclTensor {
        self.raw
    }

    /// Gives up ownership (the caller, or a tensor list, destroys it).
    fn into_raw(self) -> *mut aclTensor {
        let raw = self.raw;
        std::mem::forget(self);
        raw
    }
}

impl Drop for Tensor {
    fn drop(&mut self) {
        // SAFETY: created by aclCreateTensor, destroyed once.
        unsafe { (self.api.aclDestroyTensor)(self.raw) };
    }
}

/// A host scalar argument.
pub struct Scalar {
    api: &'static Api,
    raw: *mut aclScalar,
    // aclCreateScalar reads the value through this pointer; keep it alive as long as the scalar.
    _value: Box<[u8; 8]>,
}

// SAFETY: host object, read-only for the runtime.
unsafe impl Send for Scalar {}

impl Scalar {
    /// A scalar holding `value`.
    pub fn new<T: ScalarValue>(value: T) -> Result<Scalar> {
        let api = api()?;
        let mut storage = Box::new([0u8; 8]);
        // SAFETY: every ScalarValue is at most 8 bytes of plain data; the box is 8 bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&value as *const T).cast::<u8>(),
                storage.as_mut_ptr(),
                std::mem::size_of::<T>(),
            )
        };
        // SAFETY: the pointer stays valid for the scalar's life (owned box).
        let raw = unsafe { (api.aclCreateScalar)(storage.as_mut_ptr().cast(), T::DTYPE) };
        Ok(Scalar {
            api,
            raw: made(api, "aclCreateScalar", raw)?,
            _value: storage,
        })
    }

    /// The raw handle.
    pub fn raw(&self) -> *mut aclScalar {
        self.raw
    }
}

impl Drop for Scalar {
    fn drop(&mut self) {
        // SAFETY: created by aclCreateScalar, destroyed once.
        unsafe { (self.api.aclDestroyScalar)(self.raw) };
    }
}

/// A host array of integers (dims, permutations, sequence lengths).
pub struct IntArray {
    api: &'static Api,
    raw: *mut aclIntArray,
}

// SAFETY: host object, read-only for the runtime.
unsafe impl Send for IntArray {}

impl IntArray {
    /// An array holding a copy of `values`.
    pub fn new(values: &[i64]) -> Result<IntArray> {
        let api = api()?;
        // SAFETY: live slice of the stated length; the runtime copies it.
        let raw = unsafe { (api.aclCreateIntArray)(values.as_ptr(), values.len() as u64) };
        Ok(IntArray {
            api,
            raw: made(api, "aclCreateIntArray", raw)?,
        })
    }

    /// The raw handle.
    pub fn raw(&self) -> *mut aclIntArray {
        self.raw
    }
}

impl Drop for IntArray {
    fn drop(&mut self) {
        // SAFETY: created by aclCreateIntArray, destroyed once.
        unsafe { (self.api.aclDestroyIntArray)(self.raw) };
    }
}

/// A list of tensors (e.g. FusedInferAttentionScoreV2's key and value). The list owns its tensors:
/// aclDestroyTensorList destroys them with it.
pub struct TensorList {
    api: &'static Api,
    raw: *mut aclTensorList,
}

// SAFETY: host object, read-only for the runtime.
unsafe impl Send for TensorList {}

impl TensorList {
    /// A list taking ownership of `tensors`.
    pub fn new(tensors: Vec<Tensor>) -> Result<TensorList> {
        let api = api()?;
        let raws: Vec<*mut aclTensor> = tensors.into_iter().map(Tensor::into_raw).collect();
        let ptrs: Vec<*const aclTensor> = raws.iter().map(|&t| t.cast_const()).collect();
        // SAFETY: live array of live descriptors.
        let raw = unsafe { (api.aclCreateTensorList)(ptrs.as_ptr(), ptrs.len() as u64) };
        if raw.is_null() {
            let message = recent_message(api);
            for t in raws {
                // SAFETY: the list was not made, so the tensors are still ours to destroy.
                unsafe { (api.aclDestroyTensor)(t) };
            }
            return Err(Error::Null {
                call: "aclCreateTensorList",
                message,
            });
        }
        Ok(TensorList { api, raw })
    }

    /// The raw handle.
    pub fn raw(&self) -> *mut aclTensorList {
        self.raw
    }
}

impl Drop for TensorList {
    fn drop(&mut self) {
        // SAFETY: created by aclCreateTensorList, destroyed once (with its tensors).
        unsafe { (self.api.aclDestroyTensorList)(self.raw) };
    }
}
