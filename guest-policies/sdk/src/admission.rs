//! The `admission` world: `validate-settings`, `review`. Implement
//! [`AdmissionPolicy`] and export it with
//! [`export_admission_policy!`](crate::export_admission_policy).

pub use crate::bindings::steward::policy::reviewing::{
    AdmissionRequest, PatchOperation, UserInfo, Verdict,
};

use crate::cluster::ClusterView;
use crate::pd::PdView;
use crate::settings::{self, Settings};

/// A validating or mutating admission policy. Each review gets the
/// settings parsed, the cluster and PD to query (the host's inside Wasm,
/// fakes in tests); side effects go into the verdict as actions.
pub trait AdmissionPolicy {
    type Settings: Settings;

    /// The verdict on one request; an `Err` leaves the decision to the
    /// policy's failure mode.
    fn review(
        cluster: &impl ClusterView,
        pd: &impl PdView,
        settings: &Self::Settings,
        request: &AdmissionRequest,
    ) -> Result<Verdict, String>;
}

/// Exports an [`AdmissionPolicy`] as the component's `admission` world:
/// `steward_sdk::export_admission_policy!(MyPolicy);` once, in the policy
/// crate (which must call this SDK `steward_sdk`). Outside Wasm it only
/// checks the trait is implemented.
#[macro_export]
macro_rules! export_admission_policy {
    ($policy:ty) => {
        const _: () = $crate::admission::implemented::<$policy>();

        #[cfg(target_arch = "wasm32")]
        type __StewardPolicy = $policy;

        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        mod __steward_export {
            $crate::__generate!(
                world: "admission",
                with: {
                    "steward:policy/types@0.2.0": ::steward_sdk::bindings::steward::policy::types,
                    "steward:policy/cluster@0.2.0": ::steward_sdk::bindings::steward::policy::cluster,
                    "steward:policy/log@0.2.0": ::steward_sdk::bindings::steward::policy::log,
                    "steward:policy/pd@0.2.0": ::steward_sdk::bindings::steward::policy::pd,
                    "steward:policy/actions@0.2.0": ::steward_sdk::bindings::steward::policy::actions,
                    "steward:policy/reviewing@0.2.0": ::steward_sdk::bindings::steward::policy::reviewing,
                },
            );

            struct Export;

            impl Guest for Export {
                fn validate_settings(settings: String) -> Result<(), String> {
                    $crate::admission::validate_settings::<super::__StewardPolicy>(&settings)
                }

                fn review(settings: String, request: AdmissionRequest) -> Result<Verdict, String> {
                    $crate::admission::review::<super::__StewardPolicy>(&settings, &request)
                }
            }

            export!(Export);
        }
    };
}

/// Compiles only for an [`AdmissionPolicy`]: the export macro's check.
#[doc(hidden)]
pub const fn implemented<P: AdmissionPolicy>() {}

#[doc(hidden)]
pub fn validate_settings<P: AdmissionPolicy>(settings: &str) -> Result<(), String> {
    settings::parse::<P::Settings>(settings).map(drop)
}

#[doc(hidden)]
pub fn review<P: AdmissionPolicy>(
    settings: &str,
    request: &AdmissionRequest,
) -> Result<Verdict, String> {
    P::review(
        &crate::cluster::HostCluster,
        &crate::pd::HostPd,
        &settings::parse(settings)?,
        request,
    )
}

impl Verdict {
    /// Admits the request unchanged.
    pub fn allow() -> Verdict {
        Verdict {
            allowed: true,
            message: None,
            code: None,
            warnings: Vec::new(),
            patch: Vec::new(),
            actions: Vec::new(),
            audit_annotations: Vec::new(),
        }
    }

    /// Refuses the request with a message for the user (HTTP 403).
    pub fn deny(message: impl Into<String>) -> Verdict {
        Verdict {
            allowed: false,
            message: Some(message.into()),
            ..Verdict::allow()
        }
    }

    /// Refuses for now with HTTP 429, as a PodDisruptionBudget does: what
    /// the message says is awaited clears by itself, so `kubectl drain` and
    /// node-upgrade tooling retry instead of aborting.
    pub fn retry_later(message: impl Into<String>) -> Verdict {
        Verdict {
            code: Some(429),
            ..Verdict::deny(message)
        }
    }

    pub fn warning(mut self, warning: impl Into<String>) -> Verdict {
        self.warnings.push(warning.into());
        self
    }

    /// Adds an RFC 6902 operation; `value` is JSON text.
    pub fn patch(mut self, op: &str, path: &str, value: Option<String>) -> Verdict {
        self.patch.push(PatchOperation {
            op: op.into(),
            path: path.into(),
            value,
            from: None,
        });
        self
    }

    /// Adds a side effect for the host to perform (never on a dry run).
    pub fn action(mut self, action: crate::Action) -> Verdict {
        self.actions.push(action);
        self
    }
}

impl AdmissionRequest {
    /// `DELETE` of the object, or `CREATE` of its `eviction`
    /// subresource (a drain): both end with the pod gone.
    pub fn removes_pod(&self) -> bool {
        self.resource.2 == "pods"
            && match self.sub_resource.as_deref() {
                None => self.operation == "DELETE",
                Some("eviction") => self.operation == "CREATE",
                Some(_) => false,
            }
    }

    /// `CREATE` of a pod's `eviction` subresource (a drain), which retries
    /// a refusal answered with 429.
    pub fn evicts_pod(&self) -> bool {
        self.resource.2 == "pods"
            && self.operation == "CREATE"
            && self.sub_resource.as_deref() == Some("eviction")
    }

    /// The pod the request is about: the typed object, or for an
    /// eviction the pod of that name from the cluster cache.
    pub fn target_pod(&self, cluster: &impl crate::cluster::ClusterView) -> Option<crate::Pod> {
        match &self.pod {
            Some(p) => Some(p.clone()),
            None if self.resource.2 == "pods" => cluster.get_pod(&self.namespace, &self.name),
            None => None,
        }
    }
}
