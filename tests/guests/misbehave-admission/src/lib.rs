//! misbehave-admission: an admission-world policy that misbehaves on
//! purpose, for the host's webhook tests. Never deploy it.
//!
//! Settings: `{"behaviour": "<b>"}`, where `<b>` is one of
//!
//! - `trap`: `review` panics;
//! - `spin`: `review` loops forever (the deadline must stop it);
//! - `patch`: allows with a patch adding label `misbehave: "yes"`;
//! - `deny`: denies with `misbehave denies <name>` and asks for an
//!   annotation of the pod it reviews (`misbehave.steward.io/seen`);
//! - `bad-patch`: allows with a patch whose op is `frobnicate`.

use std::hint::black_box;

use serde::Deserialize;
use steward_sdk::admission::{AdmissionPolicy, AdmissionRequest, Verdict};
use steward_sdk::cluster::ClusterView;
use steward_sdk::pd::PdView;
use steward_sdk::{Action, Annotation, Target};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Behaviour {
    Trap,
    Spin,
    Patch,
    Deny,
    BadPatch,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    behaviour: Behaviour,
}

impl steward_sdk::Settings for Settings {}

struct Misbehave;

impl AdmissionPolicy for Misbehave {
    type Settings = Settings;

    fn review(
        _: &impl ClusterView,
        _: &impl PdView,
        s: &Settings,
        request: &AdmissionRequest,
    ) -> Result<Verdict, String> {
        match s.behaviour {
            Behaviour::Trap => panic!("misbehave: deliberate trap"),
            Behaviour::Spin => {
                let mut n = 0u64;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            Behaviour::Patch => Ok(Verdict::allow().patch(
                "add",
                "/metadata/labels/misbehave",
                Some("\"yes\"".into()),
            )),
            Behaviour::BadPatch => Ok(Verdict::allow().patch("frobnicate", "/spec", None)),
            Behaviour::Deny => Ok(Verdict::deny(format!("misbehave denies {}", request.name))
                .action(Action::Annotate((
                    Target::Pod(request.name.clone()),
                    vec![Annotation {
                        key: "misbehave.steward.io/seen".into(),
                        value: Some("true".into()),
                    }],
                )))),
        }
    }
}

steward_sdk::export_admission_policy!(Misbehave);
