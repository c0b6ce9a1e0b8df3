//! The `hoist` binary: everything lives in the library; this only dispatches.

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: a webhook delivery allocates and frees a 25 KB-sized
/// buffer or two, which glibc serves with costly consolidation; mimalloc's size-class pages
/// take a fifth of the daemon's allocation time off each delivery (see benches/webhooks.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // `hoist probe` runs every second inside every managed container: answer it before any
    // argument parsing, logging or runtime setup.
    if args.get(1).map(String::as_str) == Some("probe") {
        let code = hoist::drain::probe_main(&args[2..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    hoist::cli::main(args)
}
