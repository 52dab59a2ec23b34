//! Generates kubelet's plugin-registration API and the CSI v1 Identity and Node services with protox (pure Rust, no protoc binary).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/csi.proto");
    println!("cargo:rerun-if-changed=proto/pluginregistration.proto");
    let fds = protox::compile(["csi.proto", "pluginregistration.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Requests that carry `secrets` or service-account tokens (in `volume_context`) get a
        // hand-written redacting `Debug` (src/redact.rs).
        .skip_debug([
            ".csi.v1.NodePublishVolumeRequest",
            ".csi.v1.NodeStageVolumeRequest",
            ".csi.v1.NodeExpandVolumeRequest",
        ])
        .compile_fds(fds)?;
    Ok(())
}
