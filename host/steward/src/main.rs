//! The `steward` command (see [`steward::cli`]).

fn main() -> std::process::ExitCode {
    steward::cli::main()
}
