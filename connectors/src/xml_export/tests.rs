//! Tests for the XML export reader.
