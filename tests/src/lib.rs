//! Cross-crate tests and test support for elect (not published).
