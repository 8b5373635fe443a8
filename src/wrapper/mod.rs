//! `extern "C"` callbacks Redis calls outside a command's own handler, apart from the logic
//! they call into: the blocked clients of `CACHE.LOCKGET ... WAIT`, their timer and the events
//! that wake it.

pub mod blocked;
