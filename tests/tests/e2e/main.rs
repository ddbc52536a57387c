//! End-to-end tests on a real Kubernetes control plane (etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler; no kubelet),
//! built once per release and cached (`tests/control-plane/`). Every test
//! runs its scenario on each release of `STEWARD_E2E_KUBERNETES` (unset:
//! 1.20.2 and 1.37.2), one scenario at a time, and says on stderr which
//! release each run is on and how long it took (`-- --nocapture` to see it
//! for passing tests). `STEWARD_LOG=warn` adds the log of Steward (running
//! in this process); `STEWARD_E2E_KEEP=1` keeps every control plane's
//! directory with its servers' logs.

mod admission;
mod helm;
mod pd_tls;
mod placement;
mod reconcile;
mod safety;
mod sources;
mod tidb;
mod tidb_operator;
