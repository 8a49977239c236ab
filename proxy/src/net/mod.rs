//! The network layer below the session: the client side of a connection up to an authenticated
//! user (startup, TLS, SCRAM, lockout) and the proxy's connections to PostgreSQL (upstream, its
//! settings, the Unix socket, cancel keys). Depends on `wire` only among the layer folders.
//! Not for: what a session does once it relays (see `session`) or policy decisions (`enforce`).

pub mod cancel;
pub mod client_auth;
pub mod lockout;
pub mod password;
pub mod scram;
pub mod socket_upstream;
pub mod startup;
pub mod tls;
pub mod upstream;
pub mod upstream_settings;
