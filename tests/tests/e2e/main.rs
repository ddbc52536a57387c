//! End-to-end tests on a real Kubernetes control plane (etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler; no kubelet),
//! built once and cached (`tests/control-plane/`). One scenario runs at a
//! time.

mod admission;
mod placement;
mod reconcile;
