//! reads-files: a component whose settings validation reads a file, so it
//! imports `wasi:filesystem`, a capability Steward never grants. The host
//! must refuse it at load, naming the import. Never deploy it.

wit_bindgen::generate!({
    inline: r#"
        package test:reads-files;

        world policy {
            export validate-settings: func(settings: string) -> result<_, string>;
        }
    "#,
    world: "policy",
});

struct ReadsFiles;

impl Guest for ReadsFiles {
    fn validate_settings(path: String) -> Result<(), String> {
        std::fs::read_to_string(path)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

export!(ReadsFiles);
