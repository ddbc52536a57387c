//! Building the guests from inside `cargo test` (a nested cargo in the same
//! target directory) works and yields Wasm components.

const COMPONENT_MAGIC: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

#[test]
fn build_guests_yields_components() {
    let dir = xtask::build_guests().expect("guests build");
    for (package, stem) in xtask::GUESTS {
        let path = dir.join(format!("{stem}.wasm"));
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{package}: cannot read {}: {e}", path.display()));
        assert!(
            bytes.starts_with(&COMPONENT_MAGIC),
            "{package}: {} is not a Wasm component",
            path.display()
        );
        assert_eq!(xtask::guest_wasm(stem).unwrap(), path);
    }
}

#[test]
fn concurrent_callers_share_one_build() {
    let dirs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(xtask::build_guests)).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    assert!(dirs.windows(2).all(|w| w[0] == w[1]));
    assert!(xtask::guest_wasm("no-such-guest").is_err());
}
