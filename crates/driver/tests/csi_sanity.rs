//! csi-sanity v5 (kubernetes-csi/csi-test) against the `secrets-store-csi-driver` binary on a
//! unix socket.
//!
//! Skipped, as upstream skips (its Makefile: `-ginkgo.skip=Controller|should.work|NodeStageVolume`,
//! plus "should remove target path", which its library config skips):
//! - `Controller`: the controller suites create volumes; this is a node-only plugin.
//! - `should remove target path`: creates a volume through the controller first.
//!
//! "should work" / "should be idempotent" and the NodeStage/NodeGetVolumeStats/NodeExpand tests
//! skip themselves: the driver advertises neither CONTROLLER_SERVICE nor those node
//! capabilities.

use std::process::Command;
use std::time::{Duration, Instant};

use test_support::{ChildGuard, Peer};

const SKIP: &str = "Controller|should remove target path";

#[test]
fn csi_sanity_node_suite_passes() -> anyhow::Result<()> {
    let Some(sanity) = test_support::peer(Peer::CsiSanity) else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("csi.sock");
    let classes = dir.path().join("classes.yaml");
    std::fs::write(
        &classes,
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata: {name: x}\nspec: {provider: fake, parameters: {a: b}}\n",
    )?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_secrets-store-csi-driver"));
    cmd.arg(format!("--endpoint=unix://{}", sock.display()))
        .arg("--nodeid=sanity-node")
        .arg(format!("--class-file={}", classes.display()))
        .arg(format!(
            "--provider-volume={}",
            dir.path().join("providers").display()
        ))
        .arg("--additional-provider-volume-paths=")
        .arg("--metrics-addr=127.0.0.1:0");
    let mut driver = ChildGuard::spawn(
        "secrets-store-csi-driver",
        cmd,
        &dir.path().join("driver.log"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !test_support::socket_accepts(&sock) {
        anyhow::ensure!(
            driver.is_running(),
            "driver exited:\n{}",
            driver.log_tail(4000)
        );
        anyhow::ensure!(
            Instant::now() < deadline,
            "driver socket did not appear:\n{}",
            driver.log_tail(4000)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let report = dir.path().join("sanity.xml");
    let mut cmd = Command::new(&sanity);
    cmd.arg(format!("--csi.endpoint=unix://{}", sock.display()))
        .arg(format!(
            "--csi.mountdir={}",
            dir.path().join("mount").display()
        ))
        .arg(format!(
            "--csi.stagingdir={}",
            dir.path().join("staging").display()
        ))
        .arg(format!("--ginkgo.skip={SKIP}"))
        .arg("--ginkgo.no-color")
        .arg("--ginkgo.timeout=2m")
        .arg(format!("--ginkgo.junit-report={}", report.display()));
    let out = cmd.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "csi-sanity failed:\n{stdout}\n{}\ndriver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        driver.log_tail(4000)
    );
    // The run must have exercised the node suite, not skipped everything.
    let passed = stdout
        .lines()
        .find_map(|l| {
            l.split("Passed")
                .next()
                .filter(|_| l.contains("Passed"))
                .map(str::to_string)
        })
        .and_then(|s| {
            s.split_whitespace()
                .last()
                .and_then(|n| n.parse::<u32>().ok())
        })
        .unwrap_or(0);
    assert!(
        passed >= 10,
        "expected at least 10 passing specs, got {passed}:\n{stdout}"
    );
    Ok(())
}
