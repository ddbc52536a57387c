//! Running `#[should_panic]` tests inside Wasm.
//!
//! libtest refuses to run them on wasm (it cannot catch a panic there), so
//! the runner calls their bodies itself: it copies the test binary with the
//! body of the C entry point that wasi-libc's start code calls after
//! initialising the instance (`__main_void`, or `main(argc, argv)`)
//! replaced by a call to the test's function, found by name in the
//! module's name section, followed by `return 0`. A panic prints its
//! message and aborts the instance; the test passes when it panicked.
//!
//! libtest does not tell which message a test expects (`expected = "..."`),
//! so the message is not compared; it is shown with the verdict.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use wasm_encoder::{CodeSection, Function, Instruction, RawSection};
use wasmparser::{CompositeInnerType, KnownCustom, Name, Parser, Payload, TypeRef, ValType};

use super::libtest::{Outcome, TestResult};
use crate::runtime::{CommandComponent, CommandExit, Limits, Runtime};

/// Names of the C entry point wasi-libc's start code calls.
const ENTRY: [&str; 3] = ["__main_void", "__main_argc_argv", "main"];

/// Runs should-panic test `name` of the test binary `wasm` in a fresh
/// instance of a copy that calls only that test.
pub fn run(
    runtime: &Runtime,
    wasm: &[u8],
    name: &str,
    dir: &Path,
    limits: Limits,
) -> Result<TestResult> {
    let rewritten = rewrite_component(wasm, name)?;
    let binary = CommandComponent::load(runtime, &rewritten)
        .context("the rewritten test binary does not load")?;
    let run = binary.run(&[name.to_string()], dir, limits)?;
    let panicked = run.output.contains("panicked at");
    let outcome = match &run.exit {
        CommandExit::Trapped(_) if panicked => Outcome::Passed,
        CommandExit::Code(0) => Outcome::Failed("test did not panic as expected".into()),
        CommandExit::Code(code) => {
            Outcome::Failed(format!("test exited with code {code} instead of panicking"))
        }
        CommandExit::Trapped(e) => {
            Outcome::Failed(format!("the instance {e} without a panic message"))
        }
    };
    Ok(TestResult {
        name: name.to_string(),
        should_panic: true,
        outcome,
        output: run.output.trim_matches('\n').to_string(),
    })
}

/// The component with its main module's entry point calling test `name`;
/// every other section is copied byte for byte.
fn rewrite_component(wasm: &[u8], name: &str) -> Result<Vec<u8>> {
    let mut out = wasm_encoder::Component::new();
    let mut nested_until = 0;
    let mut rewrote = false;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.context("the test binary is not valid Wasm")?;
        let Some((id, range)) = payload.as_section() else {
            continue;
        };
        if range.start < nested_until {
            continue;
        }
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => {
                nested_until = range.end;
                let bytes = &wasm[range.clone()];
                let module = matches!(payload, Payload::ModuleSection { .. });
                match module.then(|| MainModule::find(bytes)).transpose()? {
                    Some(Some(main)) if !rewrote => {
                        let rewritten = main.rewrite(bytes, name)?;
                        out.section(&RawSection {
                            id,
                            data: &rewritten,
                        });
                        rewrote = true;
                    }
                    _ => {
                        out.section(&RawSection { id, data: bytes });
                    }
                }
            }
            _ => {
                out.section(&RawSection {
                    id,
                    data: &wasm[range],
                });
            }
        }
    }
    if !rewrote {
        bail!(
            "the test binary has no core module with a C entry point ({}) in its name section; \
             run the tests from a build that keeps symbol names (the default test profile does)",
            ENTRY.join(", ")
        );
    }
    Ok(out.finish())
}

/// What the rewrite needs to know about the module holding the entry point.
struct MainModule {
    /// Function index → name (mangled, from the name section).
    names: HashMap<u32, String>,
    /// Function index → (params, results).
    signatures: Vec<(Vec<ValType>, Vec<ValType>)>,
    imported_functions: u32,
}

impl MainModule {
    /// Reads `module`; `None` unless it defines the C entry point.
    fn find(module: &[u8]) -> Result<Option<MainModule>> {
        let mut types = Vec::new();
        let mut signatures = Vec::new();
        let mut imported_functions = 0;
        let mut names = HashMap::new();
        for payload in Parser::new(0).parse_all(module) {
            match payload? {
                Payload::TypeSection(reader) => {
                    for group in reader {
                        for sub in group?.into_types() {
                            types.push(match sub.composite_type.inner {
                                CompositeInnerType::Func(f) => {
                                    Some((f.params().to_vec(), f.results().to_vec()))
                                }
                                _ => None,
                            });
                        }
                    }
                }
                Payload::ImportSection(reader) => {
                    for import in reader.into_imports() {
                        if let TypeRef::Func(t) | TypeRef::FuncExact(t) = import?.ty {
                            signatures.push(signature(&types, t)?);
                            imported_functions += 1;
                        }
                    }
                }
                Payload::FunctionSection(reader) => {
                    for t in reader {
                        signatures.push(signature(&types, t?)?);
                    }
                }
                Payload::CustomSection(c) => {
                    if let KnownCustom::Name(reader) = c.as_known() {
                        for name in reader {
                            if let Name::Function(map) = name? {
                                for naming in map {
                                    let naming = naming?;
                                    names.insert(naming.index, naming.name.to_string());
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        let module = MainModule {
            names,
            signatures,
            imported_functions,
        };
        Ok(module.entry().is_ok().then_some(module))
    }

    /// The C entry point: one of [`ENTRY`], returning the exit code.
    fn entry(&self) -> Result<u32> {
        self.function(
            |index, name| {
                ENTRY.contains(&name)
                    && self
                        .signatures
                        .get(index as usize)
                        .is_some_and(|(_, results)| results == &[ValType::I32])
            },
            "the C entry point",
        )
    }

    fn function(&self, wanted: impl Fn(u32, &str) -> bool, what: &str) -> Result<u32> {
        let mut found = self
            .names
            .iter()
            .filter(|(i, n)| wanted(**i, n))
            .map(|(i, _)| *i);
        match (found.next(), found.next()) {
            (Some(i), None) => Ok(i),
            (None, _) => bail!(
                "the test binary's name section has no function for {what}; run the tests \
                 from a build that keeps symbol names (the default test profile does)"
            ),
            (Some(_), Some(_)) => bail!("the test binary has several functions for {what}"),
        }
    }

    /// The function of test `name`: its demangled path, without the hash,
    /// is `<crate>::<name>`.
    fn test_function(&self, name: &str) -> Result<u32> {
        let suffix = format!("::{name}");
        let index = self.function(
            |_, mangled| {
                let path = format!("{:#}", rustc_demangle::demangle(mangled));
                path.strip_suffix(&suffix)
                    .is_some_and(|krate| !krate.is_empty() && !krate.contains("::"))
            },
            &format!("test {name}"),
        )?;
        let (params, results) = &self.signatures[index as usize];
        if !params.is_empty() || !results.is_empty() {
            bail!(
                "the function of test {name} is not a plain `fn()` (a should_panic test returns ())"
            );
        }
        Ok(index)
    }

    /// The module with the entry point's body replaced by a call to test
    /// `name`.
    fn rewrite(&self, module: &[u8], name: &str) -> Result<Vec<u8>> {
        let entry = self.entry()?;
        let test = self.test_function(name)?;
        let mut call_test = Function::new([]);
        call_test
            .instruction(&Instruction::Call(test))
            .instruction(&Instruction::I32Const(0))
            .instruction(&Instruction::End);

        let mut out = wasm_encoder::Module::new();
        let mut code: Option<(CodeSection, u32)> = None;
        for payload in Parser::new(0).parse_all(module) {
            let payload = payload?;
            match &payload {
                Payload::CodeSectionStart { .. } => {
                    code = Some((CodeSection::new(), self.imported_functions));
                    continue;
                }
                Payload::CodeSectionEntry(body) => {
                    let (section, index) = code.as_mut().expect("code entries follow the start");
                    if *index == entry {
                        section.function(&call_test);
                    } else {
                        section.raw(&module[body.range()]);
                    }
                    *index += 1;
                    if *index as usize == self.signatures.len() {
                        out.section(section);
                    }
                    continue;
                }
                // Debug info points into the code section by offset; the
                // rewritten body moves what follows it.
                Payload::CustomSection(c) if c.name().starts_with(".debug") => continue,
                _ => {}
            }
            if let Some((id, range)) = payload.as_section() {
                out.section(&RawSection {
                    id,
                    data: &module[range],
                });
            }
        }
        Ok(out.finish())
    }
}

fn signature(
    types: &[Option<(Vec<ValType>, Vec<ValType>)>],
    index: u32,
) -> Result<(Vec<ValType>, Vec<ValType>)> {
    types
        .get(index as usize)
        .cloned()
        .flatten()
        .ok_or_else(|| anyhow!("function type {index} is missing or not a function type"))
}
