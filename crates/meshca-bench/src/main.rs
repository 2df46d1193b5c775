//! Placeholder until the harness main lands.
fn main() {}
