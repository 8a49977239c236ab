//! (placeholder, owned by a work stream; replace this line)
