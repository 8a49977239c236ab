//! The network layer below the session: the client side of a connection up to an authenticated
//! user (startup, TLS, SCRAM, lockout) and the proxy's connections to PostgreSQL (upstream, its
//! settings, the Unix socket, cancel keys). Depends on `wire` only among the layer folders.
//! Not for: what a session does once it relays (see `session`) or policy decisions (`enforce`).

pub(crate) mod cancel;
pub(crate) mod client_auth;
pub(crate) mod lockout;
pub(crate) mod password;
pub mod scram;
pub(crate) mod socket_upstream;
pub mod startup;
pub(crate) mod tls;
pub mod upstream;
pub(crate) mod upstream_settings;
