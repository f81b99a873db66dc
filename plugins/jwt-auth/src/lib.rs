//! jwt-auth
