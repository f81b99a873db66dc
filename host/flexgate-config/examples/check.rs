//! Check config files by hand: `cargo run -p flexgate-config --example check -- flexgate.yaml`.

fn main() {
    for path in std::env::args().skip(1) {
        match flexgate_config::load(std::path::Path::new(&path)) {
            Ok(_) => println!("{path}: ok"),
            Err(e) => println!("{e}"),
        }
    }
}
