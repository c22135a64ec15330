//! Small infrastructure shared by the daemon's components and the GStreamer plugin:
//! reconnection backoff, joining a thread by a deadline, rate-limited warnings, the
//! loopback address of a listener, and masking secrets in text.

pub mod backoff;
pub mod join;
pub mod net;
pub mod redact;
pub mod throttle;

pub use backoff::Backoff;
pub use join::join_by;
pub use net::reachable;
pub use throttle::Throttle;
