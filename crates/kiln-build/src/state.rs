//! The state of a stage while it is built, and the chain key that names everything a step's
//! result depends on.

use crate::image::ImageConfig;
use kiln_oci::Digest;
use kiln_oci::spec::Descriptor;
use sha2::{Digest as _, Sha256};

/// The state of a stage while it is built.
#[derive(Debug, Clone)]
pub(crate) struct State {
    /// The stage's index in the plan.
    pub(crate) stage: usize,
    /// The layers so far (diff id, blob), bottom first.
    pub(crate) layers: Vec<(Digest, Descriptor)>,
    /// The image config so far.
    pub(crate) config: ImageConfig,
    /// The chain key: every step so far and its inputs.
    pub(crate) key: String,
    /// ARGs in scope, with their values.
    pub(crate) args: Vec<(String, String)>,
    /// Whether CMD was set in this stage (ENTRYPOINT resets an inherited CMD).
    pub(crate) cmd_set: bool,
}

impl State {
    /// An empty stage on top of `layers` and `config`, keyed by `key`.
    pub(crate) fn new(
        stage: usize,
        layers: Vec<(Digest, Descriptor)>,
        config: ImageConfig,
        key: String,
    ) -> State {
        State {
            stage,
            layers,
            config,
            key,
            args: Vec::new(),
            cmd_set: false,
        }
    }

    /// Variables for expansion: ARGs, overridden by ENV.
    pub(crate) fn vars(&self) -> Vec<(String, String)> {
        let mut v = self.args.clone();
        v.extend(self.config.env());
        v
    }

    /// The shell that runs shell-form commands (`SHELL`, else `/bin/sh -c`).
    pub(crate) fn shell(&self) -> Vec<String> {
        let shell = crate::image::strings(self.config.get("Shell"));
        if shell.is_empty() {
            vec!["/bin/sh".into(), "-c".into()]
        } else {
            shell
        }
    }
}

/// What the step cache's keys are computed under: kiln's version and the revision of what a
/// step produces from its inputs. Bump the revision when a step's result changes for the same
/// inputs (a fix in COPY, RUN or expansion), so that a store keeps no result of the old rules.
const STEP_RULES: &str = concat!("kiln ", env!("CARGO_PKG_VERSION"), " steps r2");

/// The chain key after a step with `material` (its inputs) on top of `key`.
pub(crate) fn chain(key: &str, material: &str) -> String {
    let mut h = Sha256::new();
    h.update(STEP_RULES.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    h.update([0]);
    h.update(material.as_bytes());
    hex::encode(h.finalize())
}
