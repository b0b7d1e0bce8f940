//! Streams (ordered queues of device work) and events (markers on them, with timing).
//! Runtime docs/zh/api_ref/06_stream_management.md and 07_event_management.md.

use std::sync::Arc;

use crate::bindings::{
    aclrtEvent, aclrtStream, ACL_EVENT_RECORDED_STATUS_COMPLETE, ACL_EVENT_SYNC,
    ACL_EVENT_TIME_LINE,
};
use crate::error::{check, Result};
use crate::runtime::Context;

/// A device stream; destroyed on drop.
pub struct Stream {
    ctx: Arc<Context>,
    raw: aclrtStream,
}

// SAFETY: a stream handle may be used from any thread that has its context bound; cann-sys binds it.
unsafe impl Send for Stream {}

impl Stream {
    /// A new stream in `ctx` (default priority and flags).
    pub fn new(ctx: &Arc<Context>) -> Result<Stream> {
        ctx.bind()?;
        let mut raw: aclrtStream = std::ptr::null_mut();
        // SAFETY: out-pointer to a local.
        check(ctx.api, "aclrtCreateStream", unsafe {
            (ctx.api.aclrtCreateStream)(&mut raw)
        })?;
        Ok(Stream {
            ctx: ctx.clone(),
            raw,
        })
    }

    /// A new stream with a priority and `ACL_STREAM_*` flags.
    pub fn with_config(ctx: &Arc<Context>, priority: u32, flags: u32) -> Result<Stream> {
        ctx.bind()?;
        let mut raw: aclrtStream = std::ptr::null_mut();
        // SAFETY: out-pointer to a local.
        let status = unsafe { (ctx.api.aclrtCreateStreamWithConfig)(&mut raw, priority, flags) };
        check(ctx.api, "aclrtCreateStreamWithConfig", status)?;
        Ok(Stream {
            ctx: ctx.clone(),
            raw,
        })
    }

    /// The raw handle, passed to aclnn calls and kernel launches.
    pub fn raw(&self) -> aclrtStream {
        self.raw
    }

    /// The context the stream belongs to.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Blocks until all work queued so far has finished; reports any failure of that work.
    pub fn synchronize(&self) -> Result<()> {
        // SAFETY: live stream.
        check(self.ctx.api, "aclrtSynchronizeStream", unsafe {
            (self.ctx.api.aclrtSynchronizeStream)(self.raw)
        })
    }

    /// As [`Stream::synchronize`], giving up after `timeout_ms` milliseconds (-1: no limit).
    pub fn synchronize_timeout(&self, timeout_ms: i32) -> Result<()> {
        let sync = self.ctx.api.aclrtSynchronizeStreamWithTimeout.get()?;
        // SAFETY: live stream.
        let status = unsafe { sync(self.raw, timeout_ms) };
        check(self.ctx.api, "aclrtSynchronizeStreamWithTimeout", status)
    }

    /// Later work on this stream waits until `event` has been reached on its stream.
    pub fn wait(&self, event: &Event) -> Result<()> {
        // SAFETY: live stream and event.
        check(self.ctx.api, "aclrtStreamWaitEvent", unsafe {
            (self.ctx.api.aclrtStreamWaitEvent)(self.raw, event.raw)
        })
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: live stream; the context is bound first because drop may run on any thread.
        unsafe {
            (self.ctx.api.aclrtSetCurrentContext)(self.ctx.raw());
            (self.ctx.api.aclrtDestroyStream)(self.raw);
        }
    }
}

/// A device event; destroyed on drop.
pub struct Event {
    ctx: Arc<Context>,
    raw: aclrtEvent,
}

// SAFETY: as for Stream.
unsafe impl Send for Event {}

impl Event {
    /// An event that can be waited on by the host and timed (`ACL_EVENT_SYNC | ACL_EVENT_TIME_LINE`).
    pub fn new(ctx: &Arc<Context>) -> Result<Event> {
        Event::with_flags(ctx, (ACL_EVENT_SYNC | ACL_EVENT_TIME_LINE) as u32)
    }

    /// An event with explicit `ACL_EVENT_*` flags.
    pub fn with_flags(ctx: &Arc<Context>, flags: u32) -> Result<Event> {
        ctx.bind()?;
        let mut raw: aclrtEvent = std::ptr::null_mut();
        // SAFETY: out-pointer to a local.
        check(ctx.api, "aclrtCreateEventWithFlag", unsafe {
            (ctx.api.aclrtCreateEventWithFlag)(&mut raw, flags)
        })?;
        Ok(Event {
            ctx: ctx.clone(),
            raw,
        })
    }

    /// The raw handle.
    pub fn raw(&self) -> aclrtEvent {
        self.raw
    }

    /// Marks the current end of `stream`'s queue.
    pub fn record(&self, stream: &Stream) -> Result<()> {
        // SAFETY: live event and stream.
        check(self.ctx.api, "aclrtRecordEvent", unsafe {
            (self.ctx.api.aclrtRecordEvent)(self.raw, stream.raw)
        })
    }

    /// Blocks until the recorded point has been reached.
    pub fn synchronize(&self) -> Result<()> {
        // SAFETY: live event.
        check(self.ctx.api, "aclrtSynchronizeEvent", unsafe {
            (self.ctx.api.aclrtSynchronizeEvent)(self.raw)
        })
    }

    /// Whether the recorded point has been reached, without blocking.
    pub fn is_complete(&self) -> Result<bool> {
        let mut status = 0;
        // SAFETY: live event, out-pointer to a local.
        check(self.ctx.api, "aclrtQueryEventStatus", unsafe {
            (self.ctx.api.aclrtQueryEventStatus)(self.raw, &mut status)
        })?;
        Ok(status == ACL_EVENT_RECORDED_STATUS_COMPLETE)
    }

    /// Milliseconds between `self` and `end`, both recorded and reached.
    pub fn elapsed_ms(&self, end: &Event) -> Result<f32> {
        let mut ms = 0f32;
        // SAFETY: live events, out-pointer to a local.
        let status = unsafe { (self.ctx.api.aclrtEventElapsedTime)(&mut ms, self.raw, end.raw) };
        check(self.ctx.api, "aclrtEventElapsedTime", status)?;
        Ok(ms)
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: live event; context bound first (drop may run on any thread).
        unsafe {
            (self.ctx.api.aclrtSetCurrentContext)(self.ctx.raw());
            (self.ctx.api.aclrtDestroyEvent)(self.raw);
        }
    }
}
