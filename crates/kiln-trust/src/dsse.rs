//! DSSE envelopes (in-toto's Dead Simple Signing Envelope): sign and verify a payload.
