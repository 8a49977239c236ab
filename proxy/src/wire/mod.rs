//! The wire codec's typed layer: client (frontend) messages decoded once into borrowed views of
//! their frame, and encoded back from them (see `frontend`). Frames themselves (splitting a buffer
//! by headers, the size limit, the few backend messages the proxy makes) are `frame`'s.
//! Not for: deciding what to do with a message (hooks, the relay), or startup packets (`startup`).

pub mod client_error;
pub mod frame;
pub(crate) mod refusal_marker;
pub(crate) mod relay_buffer;

pub(crate) mod frontend;

pub use frontend::{DecodeError, Frontend, Target};
