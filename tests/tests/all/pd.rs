//! Steward's PD client against the PD double: the JSON shapes read right,
//! writes change what PD reports, and faults become clear errors.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use steward::config::{PdConfig, PdTlsConfig};
use steward::pd::{PdBase, PdClient, PdEndpoint};
use steward::wit::PdCluster;
use steward_tests::TempDir;
use steward_tests::pd_double::{Fault, PdDouble};
use steward_tests::tls::TestCa;

const T: Duration = Duration::from_millis(500);

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Store 4 of the double as PD's JSON shows it.
async fn store_json(pd: &PdDouble) -> serde_json::Value {
    let (status, body) = steward_tests::get(pd.addr, "/pd/api/v1/stores").await;
    assert_eq!(status, 200, "{body}");
    let all: serde_json::Value = serde_json::from_str(&body).unwrap();
    all["stores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["store"]["id"] == 4)
        .cloned()
        .unwrap()
}

#[tokio::test]
async fn reads_follow_pd_and_writes_change_it() {
    let pd = PdDouble::start("tidb-cluster", "basic").await;
    pd.state().drain_per_second = 200.0;
    let client = PdClient::default();
    let base = PdBase::plain(pd.url());

    let asked_ms = unix_ms();
    let stores = client.stores(&base, T).await.unwrap();
    let ids: Vec<(u64, &str, u64, u64)> = stores
        .iter()
        .map(|s| (s.id, s.state.as_str(), s.leader_count, s.region_count))
        .collect();
    assert_eq!(
        ids,
        [(1, "Up", 10, 30), (4, "Up", 10, 30), (5, "Up", 10, 30)]
    );
    assert_eq!(
        stores[1].address,
        "basic-tikv-1.basic-tikv-peer.tidb-cluster.svc:20160"
    );
    assert!(
        (asked_ms..=unix_ms()).contains(&stores[1].last_heartbeat_ms),
        "a heartbeating store's last heartbeat is now"
    );

    pd.state().member("basic-pd-1").healthy = false;
    let members = client.members(&base, T).await.unwrap();
    let health: Vec<(&str, bool)> = members
        .iter()
        .map(|m| (m.name.as_str(), m.healthy))
        .collect();
    assert_eq!(
        health,
        [
            ("basic-pd-0", true),
            ("basic-pd-1", false),
            ("basic-pd-2", true)
        ]
    );
    assert_eq!(client.leader(&base, T).await.unwrap(), "basic-pd-0");

    // Eviction: leaders drain over time, and come back once it ends.
    client.evict_leader_begin(&base, 4, T).await.unwrap();
    client.evict_leader_begin(&base, 4, T).await.unwrap();
    assert!(
        client
            .schedulers(&base, T)
            .await
            .unwrap()
            .contains(&"evict-leader-scheduler-4".to_string())
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let draining = pd.state().leaders(4);
    assert!(draining < 10, "leaders drain: {draining}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pd.state().leaders(4), 0);
    client.evict_leader_end(&base, 4, T).await.unwrap();
    client.evict_leader_end(&base, 4, T).await.unwrap();
    assert!(
        !client
            .schedulers(&base, T)
            .await
            .unwrap()
            .iter()
            .any(|s| s.starts_with("evict-leader"))
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(pd.state().leaders(4) > 0, "leaders return");

    client
        .transfer_leader(&base, "basic-pd-2", T)
        .await
        .unwrap();
    assert_eq!(client.leader(&base, T).await.unwrap(), "basic-pd-2");
    let e = client
        .transfer_leader(&base, "basic-pd-1", T)
        .await
        .unwrap_err();
    assert!(
        e.contains("refused transferring the PD leader: HTTP 500"),
        "{e}"
    );

    client.delete_member(&base, 1001, T).await.unwrap();
    assert_eq!(client.members(&base, T).await.unwrap().len(), 2);
    assert_eq!(pd.state().count("DELETE /pd/api/v1/members/id/1001"), 1);
}

#[tokio::test]
async fn a_deleted_store_goes_offline_drains_and_ends_tombstone() {
    let pd = PdDouble::start("tidb-cluster", "basic").await;
    pd.state().drain_per_second = 0.0;
    let client = PdClient::default();
    let base = PdBase::plain(pd.url());
    let state_of = |stores: &[steward::wit::Store], id| {
        stores
            .iter()
            .find(|s| s.id == id)
            .map(|s| (s.state.clone(), s.region_count))
    };

    client.delete_store(&base, 5, T).await.unwrap();
    let stores = client.stores(&base, T).await.unwrap();
    assert_eq!(state_of(&stores, 5), Some(("Offline".into(), 30)));
    assert_eq!(state_of(&stores, 4), Some(("Up".into(), 30)));
    // Already Offline: nothing to ask PD.
    client.delete_store(&base, 5, T).await.unwrap();
    assert_eq!(pd.state().count("DELETE /pd/api/v1/store/5"), 1);

    // Its regions move away, then it is a Tombstone PD no longer lists.
    pd.state().drain_per_second = 30.0;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let moving = client.stores(&base, T).await.unwrap();
    let (state, regions) = state_of(&moving, 5).expect("still listed while regions move");
    assert_eq!(state, "Offline");
    assert!(regions < 30, "regions move away: {regions}");
    let mut gone = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if state_of(&client.stores(&base, T).await.unwrap(), 5).is_none() {
            gone = true;
            break;
        }
    }
    assert!(gone, "the store became a Tombstone");
    assert_eq!(pd.state().store(5).state, "Tombstone");
    // A Tombstone, or a store PD never had: done already.
    client.delete_store(&base, 5, T).await.unwrap();
    client.delete_store(&base, 99, T).await.unwrap();
    assert_eq!(pd.state().count("DELETE /pd/api/v1/store/5"), 1);
}

#[tokio::test]
async fn faults_are_errors_naming_pd_and_the_call() {
    let pd = PdDouble::start("tidb-cluster", "basic").await;
    let client = PdClient::default();
    let base = PdBase::plain(pd.url());
    assert!(client.stores(&base, T).await.is_ok());

    pd.set_fault(Fault::Slow(Duration::from_millis(300)));
    let e = client
        .stores(&base, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        format!("PD did not answer GET {base}/pd/api/v1/stores within 100ms")
    );

    pd.set_fault(Fault::Unreachable);
    let e = client.leader(&base, T).await.unwrap_err();
    assert!(
        e.starts_with(&format!(
            "PD is unreachable: GET {base}/pd/api/v1/leader failed"
        )),
        "{e}"
    );
    let e = client
        .stores(&PdBase::plain("http://127.0.0.1:9"), T)
        .await
        .unwrap_err();
    assert!(e.starts_with("PD is unreachable"), "{e}");

    pd.set_fault(Fault::None);
    assert_eq!(client.leader(&base, T).await.unwrap(), "basic-pd-0");
}

#[tokio::test]
async fn a_silent_store_turns_disconnected_then_down_and_up_again_on_a_heartbeat() {
    let pd = PdDouble::start("tidb-cluster", "basic").await;
    let client = PdClient::default();
    let base = PdBase::plain(pd.url());
    let state_of_4 = || async {
        let stores = client.stores(&base, T).await.unwrap();
        let s = stores.into_iter().find(|s| s.id == 4).unwrap();
        (s.state, s.last_heartbeat_ms)
    };

    let before_ms = unix_ms();
    pd.state().stop_heartbeat(4);
    let (state, silent_since) = state_of_4().await;
    assert_eq!(
        state, "Up",
        "PD waits 20s before calling a store Disconnected"
    );
    assert!((before_ms..=unix_ms()).contains(&silent_since));

    pd.state().disconnect_after = Duration::ZERO;
    assert_eq!(state_of_4().await, ("Disconnected".into(), silent_since));
    pd.state().down_after = Duration::ZERO;
    assert_eq!(state_of_4().await, ("Down".into(), silent_since));
    let json = store_json(&pd).await;
    assert_eq!(json["store"]["state_name"], "Down");
    assert_eq!(
        json["store"].get("state"),
        None,
        "a Down store is an Up store gone quiet: PD omits state 0"
    );
    let ts: k8s_openapi::jiff::Timestamp = json["status"]["last_heartbeat_ts"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ts.as_millisecond(), silent_since);
    assert_eq!(
        pd.state().stores[0].state,
        "Up",
        "the other stores heartbeat"
    );

    pd.state().resume_heartbeat(4);
    let (state, heartbeat) = state_of_4().await;
    assert_eq!(state, "Up");
    assert!(heartbeat >= silent_since);

    pd.state().store(4).state = "Offline".into();
    let json = store_json(&pd).await;
    assert_eq!(
        (&json["store"]["state_name"], &json["store"]["state"]),
        (&"Offline".into(), &1.into())
    );
}

/// PD over mutual TLS (tidb-operator's `tlsCluster`): with the cluster's
/// CA and a client certificate from files named per cluster, reads work;
/// a CA that did not issue PD's certificate fails closed with a sentence
/// naming the files to check, and so does a client without a certificate.
#[tokio::test]
async fn pd_over_tls_needs_the_clusters_ca_and_a_client_certificate() {
    let ca = TestCa::new();
    let pd = PdDouble::start_tls("tidb-cluster", "basic", &ca).await;
    let dir = TempDir::new("pd-tls");
    let files = dir.path().join("basic");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("ca.crt"), ca.pem()).unwrap();
    ca.issue("steward")
        .write(&files.join("tls.crt"), &files.join("tls.key"));
    std::fs::write(files.join("other-ca.crt"), TestCa::new().pem()).unwrap();
    let in_dir = |file: &str| Some(format!("{}/{{cluster}}/{file}", dir.path().display()));
    let base = |ca_file: &str, client_certificate: bool| {
        let tls = PdTlsConfig {
            ca_file: in_dir(ca_file),
            cert_file: client_certificate.then(|| in_dir("tls.crt")).flatten(),
            key_file: client_certificate.then(|| in_dir("tls.key")).flatten(),
            secret: None,
        };
        let config = PdConfig {
            url: pd.url(),
            timeout_ms: 1_000,
            tls: Some(tls),
        };
        let cluster = PdCluster {
            name: "basic".into(),
            namespace: "tidb-cluster".into(),
        };
        PdEndpoint::from_config(&config).base(&cluster)
    };
    assert!(pd.url().starts_with("https://"), "{}", pd.url());
    let client = PdClient::default();

    let stores = client.stores(&base("ca.crt", true), T).await.unwrap();
    assert_eq!(stores.len(), 3, "reads work over mutual TLS: {stores:?}");

    let wrong_ca = client
        .stores(&base("other-ca.crt", true), T)
        .await
        .unwrap_err();
    assert!(
        wrong_ca.contains("PD is unreachable over TLS")
            && wrong_ca.contains("basic/other-ca.crt")
            && wrong_ca.contains("the CA that issued PD's certificate"),
        "{wrong_ca}"
    );

    let anonymous = client.stores(&base("ca.crt", false), T).await.unwrap_err();
    assert!(anonymous.contains("PD"), "{anonymous}");

    let plain = client
        .stores(&PdBase::plain(pd.url()), T)
        .await
        .unwrap_err();
    assert!(plain.contains("PD is unreachable"), "{plain}");
}
