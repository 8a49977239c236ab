//! Unit tests of the rewriter over the reference CRM fixture.
