//! Unit tests with known outcomes for `steward test-runner`'s own tests.
//! With the `deliberate-failures` feature some fail on purpose; never a
//! policy.

/// Rounds a replica count up to a majority.
pub fn majority(replicas: u32) -> u32 {
    replicas / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::majority;
    use steward_sdk::build::node;
    use steward_sdk::cluster::{ClusterView, FakeCluster};

    #[test]
    fn majority_of_three_is_two() {
        assert_eq!(majority(3), 2);
    }

    #[test]
    fn fake_cluster_finds_its_node() {
        let c = FakeCluster::default().with_node(node("a"));
        assert_eq!(c.get_node("a").map(|n| n.name), Some("a".to_string()));
    }

    /// Inside Wasm the runner links Steward's imports to an empty cluster
    /// (natively there is no host to import from).
    #[cfg(target_family = "wasm")]
    #[test]
    fn host_cluster_imports_are_linked_to_an_empty_cluster() {
        use steward_sdk::cluster::HostCluster;
        assert!(HostCluster.list_nodes(&[]).is_empty());
        assert_eq!(HostCluster.get_pod("default", "web-0"), None);
    }

    #[test]
    #[should_panic(expected = "no majority of zero")]
    fn zero_replicas_panic() {
        if majority(0) == 1 {
            panic!("no majority of zero replicas");
        }
    }

    #[test]
    #[ignore = "shows that ignored tests stay ignored"]
    fn ignored_on_purpose() {
        assert_eq!(majority(1), 1);
    }

    #[cfg(feature = "deliberate-failures")]
    mod deliberate {
        use super::majority;

        #[test]
        fn majority_of_four_is_wrong() {
            println!("checking four replicas");
            assert_eq!(majority(4), 2, "deliberate failure");
        }

        #[test]
        #[should_panic]
        fn should_panic_but_does_not() {
            assert_eq!(majority(5), 3);
        }

        #[test]
        #[should_panic(expected = "a different message")]
        fn should_panic_with_another_message() {
            panic!("the actual message");
        }

        #[test]
        fn after_the_failures_still_runs() {
            assert_eq!(majority(7), 4);
        }
    }
}
