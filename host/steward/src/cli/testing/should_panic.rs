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
//! The message a test expects (`#[should_panic(expected = "...")]`) is not
//! in libtest's ordinary output; its JSON test discovery (an unstable
//! format, enabled for the listing with `RUSTC_BOOTSTRAP=1` in the guest's
//! environment) says where each test is, and the attribute is read from
//! the source there. Like libtest, the panic message must contain it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use wasm_encoder::{CodeSection, Function, Instruction, RawSection};
use wasmparser::{CompositeInnerType, KnownCustom, Name, Parser, Payload, TypeRef, ValType};

use super::libtest::{Outcome, TestResult};
use steward_runtime::{CommandComponent, CommandExit, Limits, Runtime};

/// Names of the C entry point wasi-libc's start code calls.
const ENTRY: [&str; 3] = ["__main_void", "__main_argc_argv", "main"];

/// libtest arguments of the JSON test discovery.
pub const DISCOVERY_ARGS: [&str; 5] = ["--list", "--format", "json", "-Z", "unstable-options"];

/// libtest accepts `-Z unstable-options` only with this in its environment.
pub const DISCOVERY_ENV: [(&str, &str); 1] = [("RUSTC_BOOTSTRAP", "1")];

/// Where a test is defined: the source file and the line of its name.
#[derive(Debug, Clone, PartialEq)]
pub struct TestSource {
    pub file: PathBuf,
    pub line: usize,
}

#[derive(Deserialize)]
struct Discovered {
    event: String,
    name: Option<String>,
    source_path: Option<String>,
    start_line: Option<usize>,
}

/// Test name → source, from the JSON discovery output. `source_path` is
/// relative to the workspace the test was built in: the first ancestor of
/// `dir` (the package cargo runs the tests in) that has the file.
pub fn test_sources(discovery: &str, dir: &Path) -> HashMap<String, TestSource> {
    discovery
        .lines()
        .filter_map(|line| serde_json::from_str::<Discovered>(line).ok())
        .filter(|d| d.event == "discovered")
        .filter_map(|d| {
            let path = d.source_path?;
            let file = dir
                .ancestors()
                .map(|a| a.join(&path))
                .find(|f| f.is_file())?;
            Some((
                d.name?,
                TestSource {
                    file,
                    line: d.start_line?,
                },
            ))
        })
        .collect()
}

/// The `expected` text of the `#[should_panic]` on the test at `source`,
/// if it has one.
pub fn expected_message(source: &TestSource) -> Result<Option<String>> {
    let text = std::fs::read_to_string(&source.file)
        .with_context(|| format!("cannot read {}", source.file.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    let end = source.line.min(lines.len());
    // The test's attributes: the lines above its `fn` up to the previous
    // item's end.
    let start = lines[..end.saturating_sub(1)]
        .iter()
        .rposition(|l| {
            let l = l.trim_end();
            l.ends_with('}') || l.ends_with(';') || l.ends_with('{')
        })
        .map_or(0, |i| i + 1);
    let attributes = lines[start..end.saturating_sub(1)].join("\n");
    let Some((_, attribute)) = attributes.rsplit_once("#[should_panic") else {
        bail!(
            "{}:{}: no #[should_panic] found above the test",
            source.file.display(),
            source.line
        );
    };
    // `#[should_panic = "..."]` or `#[should_panic(expected = "...")]`.
    let attribute = attribute.trim_start();
    Ok(match attribute.strip_prefix('(') {
        Some(arguments) => arguments
            .split_once("expected")
            .and_then(|(_, value)| string_value(value)),
        None => string_value(attribute),
    })
}

/// The string literal after `=` at the start of `text`, unescaped.
fn string_value(text: &str) -> Option<String> {
    let rest = text.trim_start().strip_prefix('=')?;
    let mut chars = rest.trim_start().strip_prefix('"')?.chars();
    let mut out = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// The panic message in a run's output: the lines after `panicked at
/// <location>:` up to Rust's backtrace note.
fn panic_message(output: &str) -> Option<String> {
    let (_, after) = output.split_once("panicked at ")?;
    let (_, message) = after.split_once('\n')?;
    let message: Vec<&str> = message
        .lines()
        .take_while(|l| !l.starts_with("note: ") && !l.starts_with("stack backtrace:"))
        .collect();
    Some(message.join("\n"))
}

/// Runs should-panic test `name` of the test binary `wasm` in a fresh
/// instance of a copy that calls only that test; with `expected`, the
/// panic message must contain it.
pub fn run(
    runtime: &Runtime,
    wasm: &[u8],
    name: &str,
    expected: Option<&str>,
    dir: &Path,
    limits: Limits,
) -> Result<TestResult> {
    let rewritten = rewrite_component(wasm, name)?;
    let binary = CommandComponent::load(runtime, &rewritten)
        .context("the rewritten test binary does not load")?;
    let run = binary.run(&[name.to_string()], &[], dir, limits)?;
    let message = panic_message(&run.output);
    let outcome = match (&run.exit, &message) {
        (CommandExit::Trapped(_), Some(message)) => match expected {
            Some(want) if !message.contains(want) => Outcome::Failed(format!(
                "panic did not contain expected string\n      panic message: {message:?}\n \
                 expected substring: {want:?}"
            )),
            _ => Outcome::Passed,
        },
        (CommandExit::Code(0), _) => Outcome::Failed("test did not panic as expected".into()),
        (CommandExit::Code(code), _) => {
            Outcome::Failed(format!("test exited with code {code} instead of panicking"))
        }
        (CommandExit::Trapped(e), None) => {
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

    /// The C entry point: the first of [`ENTRY`] the module defines,
    /// returning the exit code.
    fn entry(&self) -> Result<u32> {
        ENTRY
            .iter()
            .find_map(|entry| {
                self.function(
                    |index, name| {
                        name == *entry
                            && index >= self.imported_functions
                            && self
                                .signatures
                                .get(index as usize)
                                .is_some_and(|(_, results)| results == &[ValType::I32])
                    },
                    entry,
                )
                .ok()
            })
            .ok_or_else(|| anyhow!("the module defines none of {}", ENTRY.join(", ")))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn expected_in(source: &str, line: usize) -> Option<String> {
        let file = std::env::temp_dir().join(format!(
            "steward-should-panic-{}-{line}.rs",
            std::process::id()
        ));
        std::fs::write(&file, source).unwrap();
        expected_message(&TestSource { file, line }).unwrap()
    }

    #[test]
    fn the_expected_message_is_read_from_the_attribute_above_the_test() {
        let source = r#"
    #[test]
    #[should_panic(expected = "no \"majority\"")]
    fn should_panic_first() {}

    #[test]
    #[should_panic]
    fn should_panic_second() {}

    #[test]
    #[should_panic = "legacy form"]
    fn third() {}

    #[test]
    #[should_panic(
        expected = "spread over lines"
    )]
    fn fourth() {}
"#;
        assert_eq!(expected_in(source, 4).as_deref(), Some("no \"majority\""));
        assert_eq!(expected_in(source, 8), None);
        assert_eq!(expected_in(source, 12).as_deref(), Some("legacy form"));
        assert_eq!(
            expected_in(source, 18).as_deref(),
            Some("spread over lines")
        );
    }

    #[test]
    fn the_panic_message_is_cut_out_of_the_output() {
        let output = "checking\nthread 'main' (1) panicked at src/lib.rs:9:5:\nassertion failed\n  left: 1\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            panic_message(output).as_deref(),
            Some("assertion failed\n  left: 1")
        );
        assert_eq!(panic_message("no panic here"), None);
    }

    #[test]
    fn discovery_lines_map_tests_to_their_sources() {
        let dir = std::env::temp_dir().join(format!("steward-discovery-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(dir.join("src/lib.rs"), "").unwrap();
        let discovery = r#"{ "type": "suite", "event": "discovery" }
{ "type": "test", "event": "discovered", "name": "t::a", "ignore": false, "ignore_message": "", "source_path": "src/lib.rs", "start_line": 7, "start_col": 8, "end_line": 7, "end_col": 9 }
{ "type": "test", "event": "discovered", "name": "t::gone", "ignore": false, "ignore_message": "", "source_path": "src/missing.rs", "start_line": 3, "start_col": 8, "end_line": 3, "end_col": 9 }
"#;
        let sources = test_sources(discovery, &dir.join("nested"));
        assert_eq!(
            sources.get("t::a"),
            Some(&TestSource {
                file: dir.join("src/lib.rs"),
                line: 7
            })
        );
        assert!(!sources.contains_key("t::gone"));
    }
}
