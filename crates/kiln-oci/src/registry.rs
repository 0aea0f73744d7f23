//! The registry client: pull and push over the OCI distribution API.
