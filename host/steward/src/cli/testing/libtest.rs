//! `steward test-runner`: cargo's runner for `cargo test --target
//! wasm32-wasip2` (set in `.cargo/config.toml`).
//!
//! wasm32-wasip2 aborts on panic, so the test binary run as-is stops at the
//! first failing test, loses its message when output is captured, and
//! reports `#[should_panic]` tests as ignored. The runner therefore asks the
//! binary for its tests (`--list`), runs each in a fresh instance with
//! `--exact --nocapture`, reads the verdict from libtest's summary line or
//! the instance's trap, and reports every failure with the test's output
//! (the panic message included) before a libtest-like summary.
//!
//! libtest never runs a `#[should_panic]` test on wasm: it reports it as
//! `test <name> - should panic ... ignored`. The runner takes that marker
//! as the sign of a should-panic test and runs its body directly (see
//! [`super::should_panic`]): it passes when the instance panics with a
//! message containing the `expected` text, if the test gives one.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::should_panic;
use steward_runtime::{CommandComponent, CommandExit, CommandRun, Limits, MAX_MEMORY_MIB, Runtime};

/// How long one test may run before its instance is stopped.
pub const TEST_DEADLINE: Duration = Duration::from_secs(120);

/// libtest's exit code when tests failed.
const TESTS_FAILED: u8 = 101;

/// Flags that only shape libtest's output, with whether they take a value.
/// The runner prints its own report, so these are not passed to `--list`.
const OUTPUT_FLAGS: &[(&str, bool)] = &[
    ("--nocapture", false),
    ("--no-capture", false),
    ("--show-output", false),
    ("--quiet", false),
    ("-q", false),
    ("--format", true),
    ("--color", true),
    ("--test-threads", true),
    ("--logfile", true),
    ("--report-time", false),
];

/// The libtest arguments cargo passed, sorted by what the runner does with
/// them.
#[derive(Debug, Default, PartialEq)]
pub struct LibtestArgs {
    /// Filters, `--exact`, `--skip`, `--ignored`, ...: passed to `--list`
    /// so the binary selects the tests exactly as libtest would.
    pub selection: Vec<String>,
    /// Print every test's output, not only the failures'.
    pub nocapture: bool,
    pub quiet: bool,
    /// `--ignored` / `--include-ignored`: the listed tests include ignored
    /// ones, which must then really run.
    pub run_ignored: bool,
    /// `--list`, `--help`, `--bench`: not a test run; the binary answers
    /// directly.
    pub passthrough: bool,
}

impl LibtestArgs {
    pub fn parse(args: &[String]) -> LibtestArgs {
        let mut parsed = LibtestArgs::default();
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let flag = arg.split_once('=').map_or(arg.as_str(), |(f, _)| f);
            if let Some(&(_, takes_value)) = OUTPUT_FLAGS.iter().find(|(f, _)| *f == flag) {
                match flag {
                    "--nocapture" | "--no-capture" | "--show-output" => parsed.nocapture = true,
                    "--quiet" | "-q" => parsed.quiet = true,
                    _ => {}
                }
                if takes_value && !arg.contains('=') {
                    rest.next();
                }
                continue;
            }
            match flag {
                "--list" | "--help" | "-h" | "--bench" => parsed.passthrough = true,
                "--ignored" | "--include-ignored" => parsed.run_ignored = true,
                _ => {}
            }
            parsed.selection.push(arg.clone());
        }
        parsed
    }
}

/// What happened to one test.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Passed,
    Ignored,
    /// Why it failed; its output is kept alongside.
    Failed(String),
}

/// One test's result and output.
#[derive(Debug, Clone)]
pub struct TestResult {
    pub name: String,
    pub should_panic: bool,
    pub outcome: Outcome,
    pub output: String,
}

/// Runs the test binary at `wasm` the way libtest would, one instance per
/// test; prints the report to stdout and returns the process exit code.
pub fn run(runtime: &Runtime, wasm: &Path, args: &[String]) -> Result<u8> {
    let bytes = std::fs::read(wasm)
        .with_context(|| format!("cannot read test binary {}", wasm.display()))?;
    let binary = CommandComponent::load(runtime, &bytes)
        .with_context(|| format!("cannot load test binary {}", wasm.display()))?;
    let dir = std::env::current_dir().context("cannot read the working directory")?;
    let program = wasm.display().to_string();
    let limits = Limits {
        deadline: TEST_DEADLINE,
        memory_bytes: (MAX_MEMORY_MIB << 20) as usize,
    };
    let run_with = |args: Vec<String>, env: &[(&str, &str)]| -> Result<CommandRun> {
        let argv: Vec<String> = std::iter::once(program.clone()).chain(args).collect();
        binary.run(&argv, env, &dir, limits)
    };
    let run = |args: Vec<String>| run_with(args, &[]);

    let parsed = LibtestArgs::parse(args);
    if parsed.passthrough {
        let listed = run(args.to_vec())?;
        print!("{}", listed.output);
        return Ok(match listed.exit {
            CommandExit::Code(code) => u8::try_from(code).unwrap_or(1),
            CommandExit::Trapped(e) => {
                eprintln!("error: the test binary {e}");
                TESTS_FAILED
            }
        });
    }

    let started = Instant::now();
    let mut list_args = parsed.selection.clone();
    list_args.extend(["--list", "--format", "terse"].map(String::from));
    let listed = run(list_args)?;
    if listed.exit != CommandExit::Code(0) {
        bail!(
            "listing the tests of {} failed ({:?}):\n{}",
            wasm.display(),
            listed.exit,
            listed.output
        );
    }
    let names = listed_tests(&listed.output);

    println!();
    println!(
        "running {} test{} (each in its own Wasm instance)",
        names.len(),
        if names.len() == 1 { "" } else { "s" }
    );
    let mut results = Vec::with_capacity(names.len());
    let mut should_panic = Vec::new();
    for name in &names {
        let mut test_args = vec![name.clone(), "--exact".into(), "--nocapture".into()];
        if parsed.run_ignored {
            test_args.push("--include-ignored".into());
        }
        let result = judge(name, run(test_args)?);
        if result.should_panic {
            should_panic.push(results.len());
        } else {
            report_line(&result, &parsed);
        }
        results.push(result);
    }
    let sources = if should_panic.is_empty() {
        Ok(Default::default())
    } else {
        run_with(
            should_panic::DISCOVERY_ARGS.map(String::from).to_vec(),
            &should_panic::DISCOVERY_ENV,
        )
        .map(|listed| should_panic::test_sources(&listed.output, &dir))
    };
    for i in should_panic {
        let name = results[i].name.clone();
        let expected = match &sources {
            Ok(sources) => match sources.get(&name) {
                Some(source) => should_panic::expected_message(source),
                None => {
                    eprintln!(
                        "warning: libtest did not say where {name} is defined (or the file is \
                         not under {}); its expected panic message is not checked",
                        dir.display()
                    );
                    Ok(None)
                }
            },
            Err(e) => Err(anyhow::anyhow!("libtest's test discovery failed: {e:#}")),
        };
        let result = expected.and_then(|expected| {
            should_panic::run(runtime, &bytes, &name, expected.as_deref(), &dir, limits)
        });
        results[i] = result.unwrap_or_else(|e| TestResult {
            name,
            should_panic: true,
            outcome: Outcome::Failed(format!(
                "the runner could not run this #[should_panic] test inside Wasm: {e:#}"
            )),
            output: String::new(),
        });
        report_line(&results[i], &parsed);
    }
    print!("{}", summary(&results, started.elapsed(), parsed.nocapture));
    let failed = results
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Failed(_)));
    Ok(if failed { TESTS_FAILED } else { 0 })
}

/// Names from `--list --format terse` output (`<name>: test` lines;
/// benchmarks are left out).
pub fn listed_tests(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect()
}

/// The verdict of one `<name> --exact --nocapture` run.
pub fn judge(name: &str, run: CommandRun) -> TestResult {
    let marker = format!("test {name} - should panic");
    let should_panic = run
        .output
        .lines()
        .any(|l| l.starts_with(&marker) && l.trim_end().ends_with("ignored"));
    let counts = run.output.lines().find_map(result_counts);
    let outcome = match (&run.exit, counts) {
        (CommandExit::Code(0), Some((1, 0, 0))) => Outcome::Passed,
        (CommandExit::Code(0), Some((0, 0, 1))) => Outcome::Ignored,
        (CommandExit::Code(0), _) => Outcome::Failed(format!(
            "the test binary ran no test named {name} (it may have been renamed since the listing)"
        )),
        (CommandExit::Code(code), _) => Outcome::Failed(format!("exit code {code}")),
        (CommandExit::Trapped(e), _) => Outcome::Failed(format!("the instance {e}")),
    };
    TestResult {
        name: name.to_string(),
        should_panic,
        outcome,
        output: test_output(name, &run.output),
    }
}

/// (passed, failed, ignored) from libtest's `test result:` line.
fn result_counts(line: &str) -> Option<(u32, u32, u32)> {
    let rest = line.strip_prefix("test result: ")?;
    let count = |what: &str| -> Option<u32> {
        rest.split(';')
            .find_map(|part| part.trim().strip_suffix(what))
            .and_then(|n| n.trim().rsplit(' ').next())
            .and_then(|n| n.parse().ok())
    };
    Some((count(" passed")?, count(" failed")?, count(" ignored")?))
}

/// The test's own output: the run's output without libtest's framing.
fn test_output(name: &str, output: &str) -> String {
    let status = format!("test {name} ");
    let mut kept = Vec::new();
    for line in output.lines() {
        if line.starts_with("running ") && line.ends_with(" test")
            || line.starts_with("test result: ")
        {
            continue;
        }
        // libtest writes `test <name> ... ` before the test runs and the
        // verdict after; the test's own output can follow on that line.
        match line.strip_prefix(&status) {
            Some(tail) => {
                let tail = tail
                    .split_once("... ")
                    .map_or("", |(_, t)| t)
                    .trim_start_matches("ok")
                    .trim_start_matches("ignored")
                    .trim_start_matches("FAILED");
                if !tail.trim().is_empty() {
                    kept.push(tail);
                }
            }
            None => kept.push(line),
        }
    }
    let text = kept.join("\n");
    text.trim_matches('\n').to_string()
}

fn report_line(result: &TestResult, args: &LibtestArgs) {
    let verdict = match result.outcome {
        Outcome::Passed => "ok",
        Outcome::Ignored => "ignored",
        Outcome::Failed(_) => "FAILED",
    };
    if args.quiet {
        let mark = match result.outcome {
            Outcome::Passed => '.',
            Outcome::Ignored => 'i',
            Outcome::Failed(_) => 'F',
        };
        print!("{mark}");
        return;
    }
    let mode = if result.should_panic {
        " - should panic"
    } else {
        ""
    };
    println!("test {}{mode} ... {verdict}", result.name);
    if args.nocapture && !result.output.is_empty() {
        println!("{}", result.output);
    }
}

/// libtest's closing block: every failure with its output, then counts.
pub fn summary(results: &[TestResult], elapsed: Duration, nocapture: bool) -> String {
    let mut out = String::new();
    let failures: Vec<&TestResult> = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(out, "\nfailures:\n");
        for r in &failures {
            let Outcome::Failed(why) = &r.outcome else {
                continue;
            };
            let _ = writeln!(out, "---- {} ----", r.name);
            if !nocapture && !r.output.is_empty() {
                let _ = writeln!(out, "{}", r.output);
            }
            let _ = writeln!(out, "({why})\n");
        }
        let _ = writeln!(out, "failures:");
        for r in &failures {
            let _ = writeln!(out, "    {}", r.name);
        }
    }
    let count = |o: fn(&Outcome) -> bool| results.iter().filter(|r| o(&r.outcome)).count();
    let passed = count(|o| *o == Outcome::Passed);
    let ignored = count(|o| *o == Outcome::Ignored);
    let _ = writeln!(
        out,
        "\ntest result: {}. {passed} passed; {} failed; {ignored} ignored; finished in {:.2}s\n",
        if failures.is_empty() { "ok" } else { "FAILED" },
        failures.len(),
        elapsed.as_secs_f64()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_runtime::EvalError;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn selection_goes_to_the_listing_and_output_flags_do_not() {
        let parsed = LibtestArgs::parse(&args(&[
            "quorum",
            "--exact",
            "--nocapture",
            "--skip",
            "slow",
            "--format",
            "json",
            "--test-threads=1",
            "--include-ignored",
        ]));
        assert_eq!(
            parsed.selection,
            args(&["quorum", "--exact", "--skip", "slow", "--include-ignored"])
        );
        assert!(parsed.nocapture && parsed.run_ignored && !parsed.passthrough);
        assert!(LibtestArgs::parse(&args(&["--list"])).passthrough);
    }

    #[test]
    fn the_listing_yields_tests_but_not_benchmarks() {
        let out = "a::one: test\nb::two: test\nc::bench: benchmark\n\n2 tests, 1 benchmarks\n";
        assert_eq!(listed_tests(out), ["a::one", "b::two"]);
    }

    fn run(exit: CommandExit, output: &str) -> CommandRun {
        CommandRun {
            exit,
            output: output.into(),
        }
    }

    #[test]
    fn verdicts_come_from_the_summary_line_and_the_trap() {
        let ok = "\nrunning 1 test\ntest t::a ... ok\n\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 5 filtered out; finished in 0.00s\n";
        assert_eq!(
            judge("t::a", run(CommandExit::Code(0), ok)).outcome,
            Outcome::Passed
        );

        let panic_marker = "\nrunning 1 test\ntest t::p - should panic ... ignored\n\ntest result: ok. 0 passed; 0 failed; 1 ignored; 0 measured; 5 filtered out; finished in 0.00s\n";
        let judged = judge("t::p", run(CommandExit::Code(0), panic_marker));
        assert!(judged.should_panic);
        assert_eq!(judged.outcome, Outcome::Ignored);

        let aborted = "\nrunning 1 test\ntest t::f ... \nhello\nthread 'main' panicked at src/lib.rs:3:5:\nboom\n";
        let judged = judge(
            "t::f",
            run(
                CommandExit::Trapped(EvalError::Trap("unreachable".into())),
                aborted,
            ),
        );
        assert_eq!(
            judged.outcome,
            Outcome::Failed("the instance trapped: unreachable".into())
        );
        assert_eq!(
            judged.output,
            "hello\nthread 'main' panicked at src/lib.rs:3:5:\nboom"
        );

        let renamed = "\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 6 filtered out; finished in 0.00s\n";
        assert!(matches!(
            judge("t::gone", run(CommandExit::Code(0), renamed)).outcome,
            Outcome::Failed(_)
        ));
    }
}
