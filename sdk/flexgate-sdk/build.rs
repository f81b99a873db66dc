//! On wasm32-wasi: link wasi-libc, which `core` expects for `memcpy`/`memcmp`/`memset` and which
//! provides `malloc` and `cabi_realloc` to `no_std` plugins (`no_std_runtime!`): without `std`
//! nothing else pulls libc in. Only those self-contained routines are linked (no WASI imports).
//! Harmless for `std` plugins, which link it anyway.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("wasi") {
        println!("cargo:rustc-link-lib=c");
    }
}
