//! (placeholder: the access log; replace)
