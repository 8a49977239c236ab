//! The wire layer, the lowest of the proxy's layer folders (it uses no other): frames of protocol 3
//! (`frame`: splitting a buffer by headers, the size limit, the few backend messages the proxy
//! makes), client (frontend) messages decoded once into borrowed views of their frame and encoded
//! back (`frontend`), the relay's read buffers (`relay_buffer`), what a client is told of a refusal
//! (`client_error`) and what PostgreSQL runs in place of a refused message (`refusal_marker`).
//! Not for: deciding what to do with a message (hooks, the relay), or startup packets (`startup`).

pub mod client_error;
pub mod frame;
pub(crate) mod frontend;
pub(crate) mod refusal_marker;
pub(crate) mod relay_buffer;

pub use frontend::{BindValues, DecodeError, Frontend, Target};
