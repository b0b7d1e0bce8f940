//! Device buffers and pinned host buffers that free themselves, and typed copies between them.
//! Runtime docs/zh/api_ref/11-01 (device memory), 11-02 (host memory), 11-03 (copies and memset).
//!
//! Every copy passes the real room at the destination as `destMax`, so the runtime itself refuses a copy
//! that would overrun it. Asynchronous copies are `unsafe`: the buffers involved must stay alive and (for
//! host memory) unchanged until the stream has passed the copy, which the type system cannot see.

use std::ffi::c_void;
use std::sync::Arc;

use crate::bindings::{
    aclrtMemcpyKind, ACL_MEMCPY_DEVICE_TO_DEVICE, ACL_MEMCPY_DEVICE_TO_HOST,
    ACL_MEMCPY_HOST_TO_DEVICE, ACL_MEM_MALLOC_HUGE_FIRST,
};
use crate::error::{check, Error, Result};
use crate::runtime::Context;
use crate::stream::Stream;

/// Plain data that may be copied to and from the device byte for byte.
///
/// # Safety
/// Implementors have no padding, no invalid bit patterns and no pointers to host memory.
pub unsafe trait Plain: Copy + 'static {}
// SAFETY: primitive numbers have neither padding nor invalid bit patterns.
unsafe impl Plain for u8 {}
// SAFETY: as above.
unsafe impl Plain for i8 {}
// SAFETY: as above.
unsafe impl Plain for u16 {}
// SAFETY: as above.
unsafe impl Plain for i16 {}
// SAFETY: as above.
unsafe impl Plain for u32 {}
// SAFETY: as above.
unsafe impl Plain for i32 {}
// SAFETY: as above.
unsafe impl Plain for u64 {}
// SAFETY: as above.
unsafe impl Plain for i64 {}
// SAFETY: as above.
unsafe impl Plain for f32 {}
// SAFETY: as above.
unsafe impl Plain for f64 {}

fn bytes_of<T: Plain>(s: &[T]) -> usize {
    std::mem::size_of_val(s)
}

/// Device memory from `aclrtMalloc`, freed on drop. Its address is not host memory: never dereference it.
pub struct DeviceBuffer {
    ctx: Arc<Context>,
    ptr: *mut c_void,
    len: usize,
}

// SAFETY: a device address is usable from any thread with the context bound; cann-sys binds it.
unsafe impl Send for DeviceBuffer {}
// SAFETY: shared access only reads the address and length.
unsafe impl Sync for DeviceBuffer {}

impl DeviceBuffer {
    /// Allocates `len` bytes (huge pages first, as ggml-cann does).
    pub fn new(ctx: &Arc<Context>, len: usize) -> Result<DeviceBuffer> {
        ctx.bind()?;
        let mut ptr: *mut c_void = std::ptr::null_mut();
        // SAFETY: out-pointer to a local.
        let status = unsafe { (ctx.api.aclrtMalloc)(&mut ptr, len, ACL_MEM_MALLOC_HUGE_FIRST) };
        check(ctx.api, "aclrtMalloc", status).map_err(|e| match e {
            Error::Call {
                call,
                status,
                message,
            } => Error::Call {
                call,
                status,
                message: format!("{message} (asked for {len} bytes)"),
            },
            other => other,
        })?;
        Ok(DeviceBuffer {
            ctx: ctx.clone(),
            ptr,
            len,
        })
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device address of the first byte.
    pub fn as_ptr(&self) -> *mut c_void {
        self.ptr
    }

    /// The device address `offset` bytes in, and the room left from there.
    fn at(&self, offset: usize) -> Result<(*mut c_void, usize)> {
        if offset > self.len {
            return Err(Error::Invalid(format!(
                "offset {offset} is past the end of a {}-byte device buffer",
                self.len
            )));
        }
        Ok((self.ptr.wrapping_byte_add(offset), self.len - offset))
    }

    fn memcpy(
        &self,
        dst: *mut c_void,
        dest_max: usize,
        src: *const c_void,
        count: usize,
        kind: aclrtMemcpyKind,
    ) -> Result<()> {
        self.ctx.bind()?;
        // SAFETY: host pointers come from live slices of at least `count` bytes (checked by the callers);
        // device ranges are checked by the runtime against destMax and the allocation.
        check(self.ctx.api, "aclrtMemcpy", unsafe {
            (self.ctx.api.aclrtMemcpy)(dst, dest_max, src, count, kind)
        })
    }

    /// Copies `src` to `offset` bytes into this buffer, and waits for it.
    pub fn copy_from_host<T: Plain>(&mut self, offset: usize, src: &[T]) -> Result<()> {
        let (dst, room) = self.at(offset)?;
        self.memcpy(
            dst,
            room,
            src.as_ptr().cast(),
            bytes_of(src),
            ACL_MEMCPY_HOST_TO_DEVICE,
        )
    }

    /// Fills `dst` from `offset` bytes into this buffer, and waits for it.
    pub fn copy_to_host<T: Plain>(&self, offset: usize, dst: &mut [T]) -> Result<()> {
        let (src, _) = self.at(offset)?;
        let count = bytes_of(dst);
        self.memcpy(
            dst.as_mut_ptr().cast(),
            count,
            src,
            count,
            ACL_MEMCPY_DEVICE_TO_HOST,
        )
    }

    /// Reads the whole buffer as `T`s (the length must be a multiple of `size_of::<T>()`).
    pub fn to_vec<T: Plain + Default>(&self) -> Result<Vec<T>> {
        let size = std::mem::size_of::<T>();
        if !self.len.is_multiple_of(size) {
            return Err(Error::Invalid(format!(
                "a {}-byte buffer is not a whole number of {size}-byte elements",
                self.len
            )));
        }
        let mut out = vec![T::default(); self.len / size];
        self.copy_to_host(0, &mut out)?;
        Ok(out)
    }

    /// Copies `count` bytes from `src` (at `src_offset`) to this buffer (at `offset`), and waits for it.
    pub fn copy_from_device(
        &mut self,
        offset: usize,
        src: &DeviceBuffer,
        src_offset: usize,
        count: usize,
    ) -> Result<()> {
        let (dst, room) = self.at(offset)?;
        let (from, _) = src.at(src_offset)?;
        self.memcpy(dst, room, from, count, ACL_MEMCPY_DEVICE_TO_DEVICE)
    }

    /// Sets `count` bytes from `offset` to `value`, and waits for it.
    pub fn memset(&mut self, offset: usize, value: u8, count: usize) -> Result<()> {
        let (dst, room) = self.at(offset)?;
        self.ctx.bind()?;
        // SAFETY: device range checked by the runtime against maxCount.
        check(self.ctx.api, "aclrtMemset", unsafe {
            (self.ctx.api.aclrtMemset)(dst, room, i32::from(value), count)
        })
    }

    fn memcpy_async(
        &self,
        dst: *mut c_void,
        dest_max: usize,
        src: *const c_void,
        count: usize,
        kind: aclrtMemcpyKind,
        stream: &Stream,
    ) -> Result<()> {
        // SAFETY: the caller's contract (see the public methods) keeps both sides alive until the copy ran.
        let status = unsafe {
            (self.ctx.api.aclrtMemcpyAsync)(dst, dest_max, src, count, kind, stream.raw())
        };
        check(self.ctx.api, "aclrtMemcpyAsync", status)
    }

    /// Queues a copy of `src` to `offset` bytes into this buffer on `stream`.
    ///
    /// # Safety
    /// `src` (best: a [`HostBuffer`]) and this buffer must stay alive, and `src` unchanged, until `stream`
    /// has passed the copy (e.g. after [`Stream::synchronize`]).
    pub unsafe fn copy_from_host_async<T: Plain>(
        &mut self,
        offset: usize,
        src: &[T],
        stream: &Stream,
    ) -> Result<()> {
        let (dst, room) = self.at(offset)?;
        self.memcpy_async(
            dst,
            room,
            src.as_ptr().cast(),
            bytes_of(src),
            ACL_MEMCPY_HOST_TO_DEVICE,
            stream,
        )
    }

    /// Queues a copy from `offset` bytes into this buffer to `dst` on `stream`.
    ///
    /// # Safety
    /// `dst` and this buffer must stay alive, and `dst` untouched, until `stream` has passed the copy.
    pub unsafe fn copy_to_host_async<T: Plain>(
        &self,
        offset: usize,
        dst: &mut [T],
        stream: &Stream,
    ) -> Result<()> {
        let (src, _) = self.at(offset)?;
        let count = bytes_of(dst);
        self.memcpy_async(
            dst.as_mut_ptr().cast(),
            count,
            src,
            count,
            ACL_MEMCPY_DEVICE_TO_HOST,
            stream,
        )
    }

    /// Queues a device-to-device copy on `stream`.
    ///
    /// # Safety
    /// Both buffers must stay alive until `stream` has passed the copy.
    pub unsafe fn copy_from_device_async(
        &mut self,
        offset: usize,
        src: &DeviceBuffer,
        src_offset: usize,
        count: usize,
        stream: &Stream,
    ) -> Result<()> {
        let (dst, room) = self.at(offset)?;
        let (from, _) = src.at(src_offset)?;
        self.memcpy_async(dst, room, from, count, ACL_MEMCPY_DEVICE_TO_DEVICE, stream)
    }

    /// Queues a memset on `stream`.
    ///
    /// # Safety
    /// This buffer must stay alive until `stream` has passed the memset.
    pub unsafe fn memset_async(
        &mut self,
        offset: usize,
        value: u8,
        count: usize,
        stream: &Stream,
    ) -> Result<()> {
        let (dst, room) = self.at(offset)?;
        // SAFETY: per the caller's contract.
        let status = unsafe {
            (self.ctx.api.aclrtMemsetAsync)(dst, room, i32::from(value), count, stream.raw())
        };
        check(self.ctx.api, "aclrtMemsetAsync", status)
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from aclrtMalloc and is freed once; context bound first (any thread).
        unsafe {
            (self.ctx.api.aclrtSetCurrentContext)(self.ctx.raw());
            (self.ctx.api.aclrtFree)(self.ptr);
        }
    }
}

/// Page-locked host memory from `aclrtMallocHost` (the fast source and target of async copies), freed on
/// drop. Zero-filled at allocation.
pub struct HostBuffer {
    ctx: Arc<Context>,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: ordinary host memory owned by this value.
unsafe impl Send for HostBuffer {}
// SAFETY: shared access is read-only through &self.
unsafe impl Sync for HostBuffer {}

impl HostBuffer {
    /// Allocates `len` bytes of pinned host memory.
    pub fn new(ctx: &Arc<Context>, len: usize) -> Result<HostBuffer> {
        ctx.bind()?;
        let mut ptr: *mut c_void = std::ptr::null_mut();
        // SAFETY: out-pointer to a local.
        check(ctx.api, "aclrtMallocHost", unsafe {
            (ctx.api.aclrtMallocHost)(&mut ptr, len)
        })?;
        if ptr.is_null() && len > 0 {
            return Err(Error::Invalid(format!(
                "aclrtMallocHost returned success but no memory for {len} bytes"
            )));
        }
        let ptr = ptr.cast::<u8>();
        // SAFETY: `len` writable bytes were just allocated.
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
        Ok(HostBuffer {
            ctx: ctx.clone(),
            ptr,
            len,
        })
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `len` initialised bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: `len` initialised bytes owned exclusively by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// The memory as `T`s; fails if the length is not a whole number of them or the start is misaligned.
    pub fn as_typed_mut<T: Plain>(&mut self) -> Result<&mut [T]> {
        let size = std::mem::size_of::<T>();
        if !self.len.is_multiple_of(size)
            || !(self.ptr as usize).is_multiple_of(std::mem::align_of::<T>())
        {
            return Err(Error::Invalid(format!(
                "a {}-byte pinned buffer cannot be viewed as {size}-byte elements",
                self.len
            )));
        }
        if self.len == 0 {
            return Ok(&mut []);
        }
        // SAFETY: aligned, initialised, exclusively borrowed, and T: Plain accepts any bits.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr.cast::<T>(), self.len / size) })
    }
}

impl Drop for HostBuffer {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from aclrtMallocHost and is freed once.
        unsafe {
            (self.ctx.api.aclrtSetCurrentContext)(self.ctx.raw());
            (self.ctx.api.aclrtFreeHost)(self.ptr.cast());
        }
    }
}
