//! Precompiled components on disk, keyed by the Wasm digest and the engine's
//! compatibility hash, so a restart deserializes instead of compiling.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

fn cache_path(engine: &Engine, dir: &Path, wasm: &[u8]) -> PathBuf {
    let mut h = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let sha = hex::encode(Sha256::digest(wasm));
    dir.join(format!("{sha}-{:016x}.cwasm", h.finish()))
}

pub fn load(engine: &Engine, dir: Option<&Path>, wasm: &[u8]) -> Result<Component> {
    let Some(dir) = dir else {
        return compile(engine, wasm);
    };
    let path = cache_path(engine, dir, wasm);
    if path.exists() {
        // SAFETY: the file was written by `Component::serialize` of this
        // engine configuration (the name carries its compatibility hash) into
        // Steward's own cache directory; wasmtime still checks its header and
        // a failure falls back to compiling.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => return Ok(c),
            Err(e) => tracing::warn!(
                path = %path.display(),
                error = %e,
                "precompiled component unusable; compiling again"
            ),
        }
    }
    let component = compile(engine, wasm)?;
    if let Err(e) = store(&component, dir, &path) {
        tracing::warn!(path = %path.display(), error = %e, "could not cache the precompiled component");
    }
    Ok(component)
}

fn compile(engine: &Engine, wasm: &[u8]) -> Result<Component> {
    Component::new(engine, wasm)
        .map_err(anyhow::Error::from)
        .context("the component does not compile")
}

fn store(component: &Component, dir: &Path, path: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = component.serialize().map_err(anyhow::Error::from)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
