use steward_sdk::admission::Verdict;
use steward_sdk::build::{claim, create_pod, delete_pod, pod, storage_class, volume};
use steward_sdk::cluster::FakeCluster;

use super::*;

fn cluster() -> FakeCluster {
    FakeCluster::default()
        .with_storage_class(storage_class("lvm-hdd", "lvm.hwameistor.io"))
        .with_storage_class(storage_class("disk-ssd", "disk.hwameistor.io"))
        .with_storage_class(storage_class("ceph", "rbd.csi.ceph.com"))
        .with_volume(volume("pv-local").csi("lvm.hwameistor.io", "pv-local"))
        .with_volume(volume("pv-ceph").csi("rbd.csi.ceph.com", "pv-ceph"))
        .with_volume(volume("pv-static"))
        .with_claim(claim("new-local").class("lvm-hdd"))
        .with_claim(claim("new-disk").class("disk-ssd"))
        .with_claim(claim("new-ceph").class("ceph"))
        // Bound: the volume's driver decides, not the (ceph) class.
        .with_claim(claim("bound-local").class("ceph").bound_to("pv-local"))
        .with_claim(claim("bound-ceph").class("lvm-hdd").bound_to("pv-ceph"))
        .with_claim(claim("bound-static").bound_to("pv-static"))
        .with_claim(claim("classless"))
}

fn mutate(pod: steward_sdk::Pod) -> Verdict {
    review(&cluster(), &Settings::default(), &create_pod(pod))
}

fn set_to(op: &str) -> Vec<(String, String, Option<String>)> {
    vec![(
        op.to_string(),
        "/spec/schedulerName".to_string(),
        Some("\"steward-scheduler\"".to_string()),
    )]
}

fn ops(v: &Verdict) -> Vec<(String, String, Option<String>)> {
    v.patch
        .iter()
        .map(|p| (p.op.clone(), p.path.clone(), p.value.clone()))
        .collect()
}

#[test]
fn a_local_claim_replaces_the_scheduler() {
    for c in ["new-local", "new-disk", "bound-local"] {
        let v = mutate(pod("db-0").claim("new-ceph").claim(c));
        assert!(v.allowed);
        assert_eq!(ops(&v), set_to("replace"), "{c}");
    }
}

#[test]
fn an_empty_scheduler_name_is_added() {
    let v = mutate(pod("db-0").scheduler("").claim("new-local"));
    assert_eq!(ops(&v), set_to("add"));
}

#[test]
fn pods_already_on_the_profile_or_without_local_claims_are_unchanged() {
    for p in [
        pod("db-0")
            .scheduler("steward-scheduler")
            .claim("new-local"),
        pod("db-0").claim("new-ceph").claim("bound-ceph"),
        pod("db-0").claim("bound-static").claim("classless"),
        pod("db-0"),
    ] {
        let v = mutate(p);
        assert!(
            v.allowed && v.patch.is_empty() && v.warnings.is_empty(),
            "{v:?}"
        );
    }
}

#[test]
fn unknown_claims_are_skipped_with_a_warning() {
    let v = mutate(pod("db-0").claim("missing"));
    assert!(v.allowed && v.patch.is_empty());
    assert_eq!(
        v.warnings,
        ["claim default/missing is not known to Steward yet; schedulerName was not changed for it"]
    );
}

#[test]
fn only_pod_creation_is_mutated() {
    let v = review(
        &cluster(),
        &Settings::default(),
        &delete_pod(pod("db-0").claim("new-local")),
    );
    assert!(v.allowed && v.patch.is_empty());
}

#[test]
fn settings_name_the_profile_and_the_local_provisioners() {
    let s = settings::parse::<Settings>(
        r#"{"schedulerName": "local", "localProvisionerSuffixes": [], "localProvisioners": ["rbd.csi.ceph.com"]}"#,
    )
    .unwrap();
    let v = review(&cluster(), &s, &create_pod(pod("db-0").claim("new-ceph")));
    assert_eq!(ops(&v)[0].2.as_deref(), Some("\"local\""));
    let v = review(&cluster(), &s, &create_pod(pod("db-0").claim("new-local")));
    assert!(v.patch.is_empty());
    assert!(settings::parse::<Settings>(r#"{"schedulerName": ""}"#).is_err());
    assert!(settings::parse::<Settings>(r#"{"localProvisionerSuffixes": [""]}"#).is_err());
    let e = settings::parse::<Settings>(r#"{"scheduler": "x"}"#).unwrap_err();
    assert!(e.contains("unknown field `scheduler`"), "{e}");
}
