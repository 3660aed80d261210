//! Build script: compiles the ISA-L gzip shim (src/codec/gunzip_isal.c) and sets `cfg(have_isal)` when
//! the ISA-L header is installed; otherwise src/codec/gunzip.rs has only its flate2 path.
//!
//! The shim loads libisal.so.2 with dlopen at run time, so the binary never needs the library
//! to start. Installing the header later needs `touch build.rs` (or a clean build) to be seen:
//! watching a missing file would rerun this script on every build.
use std::env;
use std::path::Path;

const HEADER: &str = "/usr/include/isa-l/igzip_lib.h";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(have_isal)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src/codec/gunzip_isal.c");
    println!("cargo::rerun-if-env-changed=OCIBUNDLE_NO_ISAL");
    if env::var_os("OCIBUNDLE_NO_ISAL").is_some_and(|v| v == "1") {
        return;
    }
    // The header is looked for on the build host: only use it for a native Linux build.
    let native = env::var("TARGET").ok() == env::var("HOST").ok();
    let linux = env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if !(native && linux && Path::new(HEADER).is_file()) {
        return;
    }
    println!("cargo::rerun-if-changed={HEADER}");
    cc::Build::new().file("src/codec/gunzip_isal.c").opt_level(2).warnings(true).extra_warnings(true).compile("gunzip_isal");
    // dlopen lives in libc since glibc 2.34; older glibc needs libdl (dropped if unused).
    println!("cargo::rustc-link-lib=dl");
    println!("cargo::rustc-cfg=have_isal");
}
