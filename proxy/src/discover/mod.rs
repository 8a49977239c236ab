//! Discovery of personal data (`maschera discover`): samples every table of a live database and proposes
//! a policy skeleton with a category for every column that looks personal by name or content.
//! Not for: enforcing anything; its output is a proposal for a DBA to review.

pub mod detect;
pub mod names;
pub mod national_id;
pub mod propose;
