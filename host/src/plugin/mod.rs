//! Policies: the built-in schedulers now; WebAssembly components (wasmtime) next.

pub mod builtin;
