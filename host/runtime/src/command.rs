//! Running a `wasi:cli/command` component: a policy's unit tests compiled
//! to Wasm (`cargo test --target wasm32-wasip2`). Each run is a fresh
//! instance with its output captured, so one test's abort cannot take the
//! others with it.

use std::path::Path;

use anyhow::{Context, Result};
use wasmtime::component::Component;
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx};

use crate::sandbox::{self, EvalError, GuestState, Limits, NoCluster};
use crate::{Runtime, pd_access};

/// Output kept per run; libtest's framing plus a test's own prints.
const CAPTURED_OUTPUT: usize = 4 << 20;

/// A compiled test binary, ready to instantiate any number of times.
pub struct CommandComponent {
    runtime: Runtime,
    pre: CommandPre<GuestState>,
}

/// How one run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandExit {
    /// `main` returned or called `exit` with this code.
    Code(i32),
    /// The instance trapped (a panic aborts on wasm32-wasip2), ran past its
    /// deadline or hit its memory cap.
    Trapped(EvalError),
}

/// One run: how it ended and everything it wrote to stdout and stderr,
/// interleaved as written.
#[derive(Debug, Clone)]
pub struct CommandRun {
    pub exit: CommandExit,
    pub output: String,
}

impl CommandComponent {
    /// Compiles `wasm` (not cached: test binaries change with every build)
    /// and links it with WASI and Steward's imports; PD reads fail with an
    /// error (unit tests use a fake PD).
    pub fn load(runtime: &Runtime, wasm: &[u8]) -> Result<CommandComponent> {
        let component = Component::from_binary(runtime.engine(), wasm)
            .map_err(anyhow::Error::from)
            .context("not a Wasm component: build the tests with --target wasm32-wasip2")?;
        let mut linker = sandbox::linker(runtime.engine()).map_err(anyhow::Error::from)?;
        pd_access::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .context("the test binary's imports cannot be satisfied")?;
        let pre = CommandPre::new(pre)
            .map_err(anyhow::Error::from)
            .context("the component is not a wasi:cli command (a test binary has a main)")?;
        Ok(CommandComponent {
            runtime: runtime.clone(),
            pre,
        })
    }

    /// Runs the command once in a fresh instance with `args` (the first is
    /// the program name), the host's environment plus `env`, and read-write
    /// access to `dir` as `.`. Cluster queries see an empty cluster.
    pub fn run(
        &self,
        args: &[String],
        env: &[(&str, &str)],
        dir: &Path,
        limits: Limits,
    ) -> Result<CommandRun> {
        let output = MemoryOutputPipe::new(CAPTURED_OUTPUT);
        let mut wasi = WasiCtx::builder();
        wasi.stdout(output.clone())
            .stderr(output.clone())
            .inherit_env()
            .envs(env)
            .args(args);
        wasi.preopened_dir(dir, ".", FsPerms::ReadWrite)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("cannot give the tests access to {}", dir.display()))?;
        let mut store = sandbox::test_store(self.runtime.engine(), NoCluster, limits, wasi.build());
        let result = self
            .pre
            .instantiate(&mut store)
            .and_then(|command| command.wasi_cli_run().call_run(&mut store));
        let exit = match result {
            Ok(Ok(())) => CommandExit::Code(0),
            Ok(Err(())) => CommandExit::Code(1),
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(I32Exit(code)) => CommandExit::Code(*code),
                None => CommandExit::Trapped(sandbox::classify(e, &store, limits)),
            },
        };
        Ok(CommandRun {
            exit,
            output: String::from_utf8_lossy(&output.contents()).into_owned(),
        })
    }
}
