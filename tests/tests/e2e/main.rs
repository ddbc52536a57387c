//! End-to-end tests on a real Kubernetes control plane (etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler; no kubelet),
//! built once per release and cached (`tests/control-plane/`). Every test
//! runs its scenario on each release of `STEWARD_E2E_KUBERNETES` (unset:
//! 1.20.2 and 1.37.2), one scenario at a time.

mod admission;
mod placement;
mod reconcile;
