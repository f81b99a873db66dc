//! json-redact
