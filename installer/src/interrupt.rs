//! Stopping cleanly on SIGINT/SIGTERM: the flag and the signal thread live
//! in `opdbus_common::interrupt` (so `Task` can stop its commands); steps of
//! the disk phase and the install call [`check`] at their safe points, long
//! loops (extraction) call [`interrupted`].

pub use opdbus_common::interrupt::{check, install, interrupted, Interrupted};
