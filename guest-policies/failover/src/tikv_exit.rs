//! A TiKV replica's way out, shared by failover's scale-back and by
//! scale-in (tidb-operator's `tikv_scaler.go`): its store goes offline in
//! PD first, and the replica and its claims go only once PD reports the
//! store Tombstone or lists it no more, however long moving its regions
//! takes.

use steward_sdk::reconcile::Plan;
use steward_sdk::{EventType, Store, tidb};

/// Where the store of a leaving TiKV pod stands.
pub enum StoreExit<'a> {
    /// PD still counts on the store: `offline` once it moves the regions
    /// away (after `pd-store-delete`).
    Leaving { store: &'a Store, offline: bool },
    /// Tombstone, or no longer listed: the replica and its claims may go.
    Gone,
}

impl StoreExit<'_> {
    /// The exit of TiKV pod `pod`'s store among PD's `stores`.
    pub fn of<'a>(
        stores: &'a [Store],
        pod: &str,
        instance: &str,
        namespace: &str,
    ) -> StoreExit<'a> {
        match store_of(stores, pod, instance, namespace) {
            Some(store) if store.state != "Tombstone" => StoreExit::Leaving {
                store,
                offline: store.state == "Offline",
            },
            _ => StoreExit::Gone,
        }
    }
}

/// The store of TiKV pod `pod` of cluster `instance`, as PD lists it.
pub fn store_of<'a>(
    stores: &'a [Store],
    pod: &str,
    instance: &str,
    namespace: &str,
) -> Option<&'a Store> {
    stores
        .iter()
        .find(|s| tidb::is_store_of(&s.address, pod, instance, namespace))
}

/// The Event of `store` taken offline (with `pd-store-delete`).
pub fn taking_offline(plan: Plan, store: &Store, pod: &str) -> Plan {
    plan.event(
        EventType::Normal,
        "TiKVScaleIn",
        format!(
            "taking store {} of pod {pod} offline in PD; the replica and its claims go once its \
             regions have moved and the store is Tombstone",
            store.id
        ),
    )
}

/// The Event of a store PD is done with: its replica and claims go.
pub fn gone(plan: Plan, pod: &str) -> Plan {
    plan.event(
        EventType::Normal,
        "TiKVScaleIn",
        format!(
            "PD no longer lists a store of pod {pod} (it is Tombstone); removing the replica and \
             its claims"
        ),
    )
}
