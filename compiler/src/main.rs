//! The `meshfence` binary: a thin shell over [`meshfence_compiler::cli`].

fn main() {
    std::process::exit(meshfence_compiler::cli::main());
}
