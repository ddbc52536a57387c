//! The admission hook: decode kube-apiserver's AdmissionReview, evaluate the
//! policy the path names, apply its mode and failure mode, perform its
//! actions (never on a dry run), and encode the response.

pub mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1 as core;

use crate::actions::{self, ActionContext, Executor, Subject, WorkloadRef};
use crate::config::{AdmissionMode, FailureMode};
use crate::metrics::Metrics;
use crate::policy::{AdmittingPolicy, PolicyStore};
use steward_cluster::{Backend, ClusterCache, ClusterQuery, convert, tidb};
use steward_runtime::EvalError;
use steward_wit::{Action, AdmissionRequest, Pod, UserInfo, Verdict};
use wire::{Response, ReviewIn, ReviewOut, Status};

/// Which webhook endpoint a review came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Validate,
    Mutate,
}

impl Endpoint {
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Validate => "admission/validate",
            Endpoint::Mutate => "admission/mutate",
        }
    }
}

/// A review the webhook cannot answer: an HTTP status and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub status: u16,
    pub message: String,
}

fn bad_request(message: String) -> Rejected {
    Rejected {
        status: 400,
        message,
    }
}

/// A decided review: its response, and the side effects to perform before
/// answering.
pub struct Reviewed {
    pub response: Response,
    pending: Vec<Action>,
    policy: Option<Arc<AdmittingPolicy>>,
    namespace: String,
    /// The StatefulSet the review is about: workload kind and name.
    workload: Option<(&'static str, String)>,
    subject: Subject,
}

impl Reviewed {
    /// Side effects still to perform.
    pub fn pending(&self) -> &[Action] {
        &self.pending
    }
}

/// How long a review waits for the API server to answer for a claim the
/// cache lacks, well within kube-apiserver's webhook timeout.
const CLAIM_LOOKUP: Duration = Duration::from_secs(1);

pub struct AdmissionHook {
    pub policies: Arc<PolicyStore>,
    pub cluster: Arc<ClusterCache>,
    pub backend: Backend,
    pub metrics: Arc<Metrics>,
    pub executor: Executor,
}

impl AdmissionHook {
    /// Decodes and evaluates one review. Blocking: PD reads of the guest
    /// block the calling thread (call it off the async reactor).
    pub fn review(
        &self,
        endpoint: Endpoint,
        policy_id: &str,
        body: &[u8],
    ) -> Result<Reviewed, Rejected> {
        let review: ReviewIn = serde_json::from_slice(body)
            .map_err(|e| bad_request(format!("the body is not an AdmissionReview: {e}")))?;
        if review.kind.is_empty() {
            return Err(bad_request(
                "the body has no kind; kube-apiserver sends kind: AdmissionReview".into(),
            ));
        }
        if review.kind != wire::KIND {
            return Err(bad_request(format!(
                "the body is a `{}`, not an AdmissionReview",
                review.kind
            )));
        }
        if review.api_version != wire::API_VERSION {
            return Err(bad_request(format!(
                "AdmissionReview apiVersion `{}` is not served; Steward reads {}: list v1 in the \
                 webhook's admissionReviewVersions",
                review.api_version,
                wire::API_VERSION
            )));
        }
        let request = review
            .request
            .ok_or_else(|| bad_request("the AdmissionReview has no request".into()))?;
        if request.uid.is_empty() {
            return Err(bad_request(
                "request.uid is missing; kube-apiserver always sends one to echo".into(),
            ));
        }
        let set = self.policies.current();
        let Some(policy) = set.admission(policy_id).cloned() else {
            let known: Vec<&str> = set.admission.iter().map(|p| p.id.as_str()).collect();
            return Err(Rejected {
                status: 404,
                message: format!(
                    "no admission policy `{policy_id}` is configured (configured: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            });
        };
        let (typed, subject) = lower(request)?;
        if let Some(pod) = &typed.pod {
            self.read_missing_claims(pod);
        }
        let verdict = self.evaluate(&policy, &typed, endpoint);
        Ok(self.apply(policy, typed, subject, verdict))
    }

    /// Brings the claims of `pod` the cache lacks in from the API server,
    /// each within [`CLAIM_LOOKUP`], so a pod created right after its claim
    /// is judged with it. A claim still unknown is left to the policy.
    fn read_missing_claims(&self, pod: &Pod) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let query = ClusterQuery::new(self.cluster.clone());
        for claim in &pod.claims {
            if query.get_claim(&pod.namespace, claim).is_some() {
                continue;
            }
            let read = self
                .backend
                .read_claim(&self.cluster, &pod.namespace, claim);
            match runtime.block_on(tokio::time::timeout(CLAIM_LOOKUP, read)) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!("{e}"),
                Err(_) => tracing::warn!(
                    "the API server did not answer for claim {}/{claim} within {}ms; the \
                     policy judges pod {} without it",
                    pod.namespace,
                    CLAIM_LOOKUP.as_millis(),
                    pod.name
                ),
            }
        }
    }

    fn evaluate(
        &self,
        policy: &AdmittingPolicy,
        request: &AdmissionRequest,
        endpoint: Endpoint,
    ) -> Result<Verdict, EvalError> {
        let started = Instant::now();
        let result = policy
            .policy
            .review(ClusterQuery::new(self.cluster.clone()), request)
            .and_then(|v| {
                if v.patch.is_empty() {
                    Ok(v)
                } else if endpoint == Endpoint::Validate {
                    Err(EvalError::Invalid(
                        "returned a patch on the validating endpoint; serve it at \
                         /admission/mutate/<policy>"
                            .into(),
                    ))
                } else if !policy.mutate {
                    Err(EvalError::Invalid(
                        "returned a patch but is not granted mutation (set `mutate: true` in its \
                         configuration)"
                            .into(),
                    ))
                } else {
                    Ok(v)
                }
            });
        let outcome = result.as_ref().map(|_| "ok").unwrap_or_else(|e| e.kind());
        self.metrics
            .evaluation(&policy.id, "admission", outcome, started.elapsed());
        result
    }

    /// The response a verdict (or a failure) gives in the policy's mode.
    fn apply(
        &self,
        policy: Arc<AdmittingPolicy>,
        request: AdmissionRequest,
        subject: Subject,
        result: Result<Verdict, EvalError>,
    ) -> Reviewed {
        let id = policy.id.as_str();
        let mut response = Response {
            uid: request.uid.clone(),
            allowed: true,
            ..Default::default()
        };
        let mut pending = Vec::new();
        let who = format!(
            "{} {} {}/{}",
            request.operation, request.resource.2, request.namespace, request.name
        );
        let verdict = match result {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(policy = id, request = %who, "review {e}");
                let label = match (policy.mode, policy.failure_mode) {
                    (AdmissionMode::Monitor, _) | (_, FailureMode::FailOpen) => {
                        response
                            .warnings
                            .push(warning(&format!("{id}: policy {e}; allowed (fail-open)")));
                        "error-allowed"
                    }
                    (_, FailureMode::FailClosed) => {
                        response.allowed = false;
                        response.status = Some(Status::new(
                            500,
                            format!("{id}: policy {e}; failing closed"),
                        ));
                        "error-denied"
                    }
                };
                if policy.mode == AdmissionMode::Monitor {
                    response.warnings.clear();
                }
                self.metrics
                    .admission_verdict(id, policy.mode.name(), label);
                return self.reviewed(policy, request, subject, response, pending);
            }
        };
        let would = if !verdict.allowed {
            "denied"
        } else if !verdict.patch.is_empty() {
            "patched"
        } else {
            "allowed"
        };
        self.metrics
            .admission_verdict(id, policy.mode.name(), would);
        let message = verdict.message.clone().unwrap_or_default();
        match policy.mode {
            AdmissionMode::Enforce => {
                response.allowed = verdict.allowed;
                if !verdict.allowed {
                    response.status = Some(Status::new(
                        verdict.code.unwrap_or(403),
                        format!("{id}: {message}"),
                    ));
                }
                response.warnings = verdict.warnings.iter().map(|w| warning(w)).collect();
                if verdict.allowed && !verdict.patch.is_empty() {
                    set_patch(&mut response, &verdict);
                }
                if request.dry_run {
                    if !verdict.actions.is_empty() {
                        tracing::info!(policy = id, request = %who, "dry run: skipped {}", describe_all(&verdict.actions));
                    }
                } else {
                    pending = verdict.actions;
                }
            }
            AdmissionMode::Warn => {
                response.warnings = verdict.warnings.iter().map(|w| warning(w)).collect();
                if !verdict.allowed {
                    response
                        .warnings
                        .push(warning(&format!("{id} would deny: {message}")));
                }
                if !verdict.patch.is_empty() {
                    set_patch(&mut response, &verdict);
                }
                if !verdict.actions.is_empty() {
                    tracing::info!(policy = id, request = %who, "warn mode: skipped {}", describe_all(&verdict.actions));
                }
            }
            AdmissionMode::Monitor => {
                tracing::info!(
                    policy = id,
                    request = %who,
                    would,
                    message = %message,
                    patch = verdict.patch.len(),
                    "monitor mode: would have {would}{}",
                    if verdict.actions.is_empty() {
                        String::new()
                    } else {
                        format!(" and would {}", describe_all(&verdict.actions))
                    }
                );
            }
        }
        if policy.mode != AdmissionMode::Monitor {
            response.audit_annotations = verdict
                .audit_annotations
                .into_iter()
                .collect::<BTreeMap<_, _>>();
        }
        self.reviewed(policy, request, subject, response, pending)
    }

    fn reviewed(
        &self,
        policy: Arc<AdmittingPolicy>,
        request: AdmissionRequest,
        subject: Subject,
        response: Response,
        pending: Vec<Action>,
    ) -> Reviewed {
        let workload = (request.resource.2 == "statefulsets").then(|| {
            (
                steward_wit::ordinals::statefulset_kind(&request.resource.0),
                request.name.clone(),
            )
        });
        Reviewed {
            response,
            pending,
            policy: Some(policy),
            namespace: request.namespace,
            workload,
            subject,
        }
    }

    /// Performs the review's actions in order, stopping at the first that
    /// fails (its error is added to the response), and returns the
    /// AdmissionReview to send.
    pub async fn finish(&self, mut reviewed: Reviewed) -> ReviewOut {
        if let Some(policy) = reviewed.policy.take() {
            let ctx = ActionContext {
                namespace: &reviewed.namespace,
                workload: reviewed
                    .workload
                    .as_ref()
                    .map(|(kind, name)| WorkloadRef { kind, name }),
                subject: &reviewed.subject,
                pd: &policy.pd,
            };
            for action in std::mem::take(&mut reviewed.pending) {
                let name = actions::name(&action);
                let result = self.executor.perform(&ctx, &action).await;
                self.metrics.admission_action(
                    &policy.id,
                    name,
                    if result.is_ok() { "ok" } else { "error" },
                );
                if let Err(e) = result {
                    let note = format!(
                        "{}: Steward could not {}: {e}",
                        policy.id,
                        actions::describe(&action)
                    );
                    tracing::warn!("{note}");
                    let r = &mut reviewed.response;
                    match &mut r.status {
                        Some(status) if !r.allowed => {
                            status.message = format!("{} ({note})", status.message)
                        }
                        _ => r.warnings.push(warning(&note)),
                    }
                    break;
                }
            }
        }
        ReviewOut::new(reviewed.response)
    }
}

fn set_patch(response: &mut Response, verdict: &Verdict) {
    let ops: Vec<serde_json::Value> = verdict
        .patch
        .iter()
        .map(|op| {
            let mut o = serde_json::Map::new();
            o.insert("op".into(), op.op.clone().into());
            o.insert("path".into(), op.path.clone().into());
            if let Some(from) = &op.from {
                o.insert("from".into(), from.clone().into());
            }
            if let Some(value) = &op.value {
                // Checked to be JSON when the verdict came back.
                let value = serde_json::from_str(value).unwrap_or(serde_json::Value::Null);
                o.insert("value".into(), value);
            }
            serde_json::Value::Object(o)
        })
        .collect();
    let json = serde_json::to_vec(&ops).expect("a patch serializes");
    response.patch_type = Some("JSONPatch");
    response.patch = Some(base64::engine::general_purpose::STANDARD.encode(json));
}

/// kube-apiserver shows warnings as one line each.
fn warning(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

fn describe_all(actions: &[Action]) -> String {
    actions
        .iter()
        .map(actions::describe)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The WIT request (typed views of Pods and StatefulSets) and the object
/// Events are recorded on.
fn lower(r: wire::Request) -> Result<(AdmissionRequest, Subject), Rejected> {
    let is = |group: &str, kind: &str| r.kind.group == group && r.kind.kind == kind;
    let json = |raw: &Option<Box<serde_json::value::RawValue>>| {
        raw.as_ref()
            .map(|v| v.get())
            .filter(|v| *v != "null")
            .map(str::to_string)
    };
    let object = json(&r.object);
    let old_object = json(&r.old_object);
    if object.is_none() && ["CREATE", "UPDATE"].contains(&r.operation.as_str()) {
        return Err(bad_request(format!(
            "request.object is missing; kube-apiserver sends the object of every {}",
            r.operation
        )));
    }
    let mut pod = None;
    let (mut workload, mut old_workload) = (None, None);
    if is("", "Pod") && r.sub_resource.is_none() {
        let source = if r.operation == "DELETE" {
            (&old_object, "oldObject")
        } else {
            (&object, "object")
        };
        if let (Some(text), field) = source {
            let p: core::Pod = serde_json::from_str(text)
                .map_err(|e| bad_request(format!("request.{field} is not a Pod: {e}")))?;
            pod = Some(convert::pod(&p));
        }
    }
    let advanced = is(tidb::ADVANCED_STATEFULSET_GROUP, "StatefulSet");
    if (is("apps", "StatefulSet") || advanced) && r.sub_resource.is_none() {
        let parse = |text: &Option<String>, field: &str| {
            text.as_deref()
                .map(|t| {
                    let workload = if advanced {
                        serde_json::from_str(t).map(|v| tidb::advanced_statefulset(&v))
                    } else {
                        serde_json::from_str::<StatefulSet>(t).map(|s| convert::workload(&s))
                    };
                    workload.map_err(|e| {
                        bad_request(format!("request.{field} is not a StatefulSet: {e}"))
                    })
                })
                .transpose()
        };
        workload = parse(&object, "object")?;
        old_workload = parse(&old_object, "oldObject")?;
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let api_version = if r.kind.group.is_empty() {
        r.kind.version.clone()
    } else {
        format!("{}/{}", r.kind.group, r.kind.version)
    };
    let (subject_kind, subject_version) = if r.sub_resource.as_deref() == Some("eviction") {
        ("Pod".to_string(), "v1".to_string())
    } else {
        (r.kind.kind.clone(), api_version)
    };
    let subject = Subject {
        api_version: subject_version,
        kind: subject_kind,
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        uid: pod
            .as_ref()
            .map(|p| p.uid.clone())
            .or_else(|| {
                workload
                    .as_ref()
                    .or(old_workload.as_ref())
                    .map(|w| w.uid.clone())
            })
            .unwrap_or_default(),
    };
    let request = AdmissionRequest {
        uid: r.uid,
        kind: (r.kind.group, r.kind.version, r.kind.kind),
        resource: (r.resource.group, r.resource.version, r.resource.resource),
        sub_resource: r.sub_resource.filter(|s| !s.is_empty()),
        name: r.name,
        namespace: r.namespace,
        operation: r.operation,
        user_info: UserInfo {
            username: r.user_info.username,
            uid: r.user_info.uid,
            groups: r.user_info.groups,
        },
        dry_run: r.dry_run.unwrap_or(false),
        object,
        old_object,
        pod,
        workload,
        old_workload,
        now_ms,
    };
    Ok((request, subject))
}
