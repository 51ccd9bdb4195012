//! The only home of `unsafe`: fork, signals, shared memory, raw fds and the few CPython calls
//! PyO3 does not wrap. Every other module calls the safe wrappers here.
#![expect(unsafe_code, reason = "thin safe wrappers over libc and CPython")]

pub mod daemon;
pub mod fd;
pub mod mules;
pub mod proc;
pub mod py;
pub mod shm;
pub mod shmlock;
pub mod signals;
pub mod spooler;
pub mod time;
pub mod unix;
mod uwsgi_core;

pub use fd::{Epoll, EpollEvent};
pub use proc::{ForkResult, SysError};
