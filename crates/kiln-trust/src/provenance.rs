//! SLSA v1 provenance as in-toto statements.
