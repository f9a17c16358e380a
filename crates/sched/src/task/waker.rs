//! Wakers for tasks.
//!
//! A task's `Waker` is its header pointer with [`VTABLE`]. Cloning adds a task
//! reference and dropping releases one; the borrowed waker handed to `poll`
//! ([`WakerRef`]) holds none, so polling costs no reference counting. Waking
//! dispatches on the calling thread: on the task's own worker it is a plain
//! push onto the local run queue; anywhere else it goes through the worker's
//! inbox (`worker::wake_task`).

use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::task::{RawWaker, RawWakerVTable, Waker};

use super::{Header, TaskPtr, release};

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake_by_ref, drop_waker);

unsafe fn clone(data: *const ()) -> RawWaker {
    // SAFETY: `data` is the header of a live task (the waker holds or borrows
    // a reference).
    unsafe { (*data.cast::<Header>()).state.ref_inc() };
    RawWaker::new(data, &VTABLE)
}

unsafe fn wake(data: *const ()) {
    // SAFETY: as in `clone`; this consumes the waker's reference.
    unsafe {
        wake_by_ref(data);
        drop_waker(data);
    }
}

unsafe fn wake_by_ref(data: *const ()) {
    // SAFETY: as in `clone`; header pointers are never null.
    let ptr = unsafe { TaskPtr::new_unchecked(data.cast_mut().cast::<Header>()) };
    wake_task(ptr);
}

unsafe fn drop_waker(data: *const ()) {
    // SAFETY: as in `clone`; the waker owned one reference.
    unsafe { release(TaskPtr::new_unchecked(data.cast_mut().cast::<Header>())) }
}

/// Whether `waker` is a task waker of this crate.
#[inline(always)]
pub(crate) fn is_task_waker(waker: &Waker) -> bool {
    std::ptr::eq(waker.vtable(), &VTABLE)
}

/// Wakes the task at `ptr`, which must be live.
#[inline(always)]
pub(crate) fn wake_task(ptr: TaskPtr) {
    crate::worker::wake_task(ptr);
}

/// A waker borrowed for the duration of one poll; holds no reference.
pub(crate) struct WakerRef(ManuallyDrop<Waker>);

impl WakerRef {
    /// # Safety
    /// The task must stay live while the `WakerRef` exists (the worker holds
    /// a reference while it polls).
    pub(crate) unsafe fn new(ptr: TaskPtr) -> WakerRef {
        let raw = RawWaker::new(ptr.as_ptr().cast_const().cast::<()>(), &VTABLE);
        // SAFETY: the vtable functions uphold the `RawWaker` contract; the
        // `ManuallyDrop` keeps us from releasing a reference we do not own.
        WakerRef(ManuallyDrop::new(unsafe { Waker::from_raw(raw) }))
    }
}

impl Deref for WakerRef {
    type Target = Waker;

    fn deref(&self) -> &Waker {
        &self.0
    }
}
