//! `check-config` and `run` apply one validation, host checks included: every problem named,
//! a non-zero exit, and `run` touching nothing it refuses.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ridondato");

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ridondato-cc-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d
}

fn secret(d: &Path, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = d.join("secret");
    std::fs::write(&p, "a cluster secret of enough bytes\n").expect("secret");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    p
}

/// A node on the loopback interface: valid on any host.
fn config(d: &Path, secret: &Path, extra_node: &str, shared: &str, tail: &str) -> PathBuf {
    let text = format!(
        "[node]\nid = 1\npeer_id = 2\npeer_ip = \"198.18.0.2\"\nmanagement_ip = \"127.0.0.1\"\nreplication_bandwidth_kib_s = 1000\nsecret_file = \"{}\"\nstate_dir = \"{}\"\ncontrol_socket = \"{}\"\n{extra_node}\n[[shared_ip]]\n{shared}\nprimary = true\n{tail}",
        secret.display(),
        d.join("state").display(),
        d.join("control.sock").display(),
    );
    let p = d.join("node.toml");
    std::fs::write(&p, text).expect("config");
    p
}

fn run(args: &[&str]) -> (bool, String) {
    let o = Command::new(BIN).args(args).output().expect("run");
    (o.status.success(), String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr))
}

const LO: &str = "interface = \"lo\"\naddress = \"127.0.0.100\"\nprefix = 8";

#[test]
fn a_good_file_is_valid() {
    let d = dir("good");
    let s = secret(&d, 0o600);
    let c = config(&d, &s, "", LO, "");
    let (ok, out) = run(&["check-config", c.to_str().unwrap_or_default()]);
    assert!(ok && out.contains("valid"), "{out}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn host_problems_are_all_named_by_check_config_and_run_touches_nothing() {
    let d = dir("bad");
    let s = secret(&d, 0o644);
    // The control socket path names the configuration file itself (a typo).
    let c = d.join("node.toml");
    let extra = "";
    let text = format!(
        "[node]\nid = 1\npeer_id = 2\npeer_ip = \"127.0.0.1\"\nreplication_bandwidth_kib_s = 1000\nsecret_file = \"{}\"\nstate_dir = \"{}\"\ncontrol_socket = \"{}\"\n\n[[shared_ip]]\ninterface = \"nosuch0\"\naddress = \"198.18.77.100\"\nprefix = 24\nprimary = true\n\n[[shared_ip]]\ninterface = \"lo\"\naddress = \"198.18.77.101\"\nprefix = 24\n\n{extra}",
        s.display(),
        d.join("state").display(),
        c.display(),
    );
    std::fs::write(&c, &text).expect("config");
    for verb in ["check-config", "run"] {
        let args: Vec<&str> = if verb == "run" { vec!["run", "--config", c.to_str().unwrap_or_default()] } else { vec![verb, c.to_str().unwrap_or_default()] };
        let (ok, out) = run(&args);
        assert!(!ok, "{verb} refuses: {out}");
        for field in ["node.secret_file", "node.control_socket", "node.peer_ip", "shared_ip[0].interface", "shared_ip[1].address"] {
            assert!(out.contains(field), "{verb} names {field}:\n{out}");
        }
        assert!(out.contains("chmod 600") && out.contains("no interface nosuch0") && out.contains("outside every IPv4 subnet of lo"), "{out}");
    }
    assert_eq!(std::fs::read_to_string(&c).expect("still there"), text, "run did not delete or change the file");
    let _ = std::fs::remove_dir_all(&d);
}
