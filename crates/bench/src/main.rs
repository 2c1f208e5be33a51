//! `cargo xtask bench`: see the `bench` library and BENCHMARKS.md.

fn main() -> anyhow::Result<()> {
    bench::main_with("cargo xtask bench", &[], std::env::args_os())
}
