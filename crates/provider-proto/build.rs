//! Generates the v1alpha1 provider API with protox (pure Rust, no protoc binary needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/service.proto");
    let fds = protox::compile(["service.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Messages that carry tokens, nodePublishSecretRef values or file contents get a
        // hand-written redacting `Debug` (src/redact.rs).
        .skip_debug([".v1alpha1.MountRequest", ".v1alpha1.File"])
        .compile_fds(fds)?;
    Ok(())
}
