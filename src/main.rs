//! The `hoist` binary: everything lives in the library; this only dispatches.

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: each webhook delivery allocates and frees buffers of
/// about 25 KB, on which glibc spent about 8 % of the daemon's CPU and mimalloc about 5 %
/// (benches/webhooks.rs). Built without transparent huge pages, which would double the idle
/// RSS.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // `hoist probe` runs every second inside every managed container: answer it before any
    // argument parsing, logging or runtime setup.
    if args.get(1).map(String::as_str) == Some("probe") {
        let code = hoist::docker::drain::probe_main(&args[2..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    hoist::cli::main(args)
}
