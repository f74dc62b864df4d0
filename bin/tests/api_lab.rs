//! The HTTP API for real: two daemons with `[api]` in the network-namespace lab, asked with
//! curl from the client's namespace as a load balancer or a script would. Root and the lab's
//! tools (and curl) are needed; under CI=true their absence fails the test.

mod support;

use std::time::Duration;
use support::*;

const TOKEN: &str = "lab-api-token-0123456789abcdef";

/// `curl` from the client: (HTTP code, body).
fn curl(lab: &Lab, args: &[&str]) -> (u16, String) {
    let mut v = vec!["curl", "-s", "--max-time", "5", "-w", "\n%{http_code}"];
    v.extend_from_slice(args);
    let (_, out) = lab.exec("c", &v);
    let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn url(lab: &Lab, node: &str, path: &str) -> String {
    let ip = lab.var(if node == "a" { "LAB_A" } else { "LAB_B" });
    format!("http://{ip}:8008{path}")
}

/// Health checks follow the roles (GET, HEAD, OPTIONS alike); everything else needs the token;
/// bad input and refused commands are JSON naming what is wrong; a switch-over from the API
/// moves the role, the event stream tells of it, the metrics count it.
#[test]
fn health_checks_follow_the_roles_and_commands_need_the_token() {
    if !lab_available() {
        return;
    }
    let curl_ok = sh(&["which", "curl"]).0;
    assert!(curl_ok || std::env::var("CI").map_or(true, |v| v != "true"), "curl is missing (scripts/deps-lan.sh installs it)");
    if !curl_ok {
        return;
    }
    let mut lab = Lab::up("api");
    let token = lab.work.join("api.token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    for n in ["a", "b"] {
        let path = lab.work.join(format!("{n}.toml"));
        let mut cfg = std::fs::read_to_string(&path).expect("config");
        cfg.push_str(&format!("\n[api]\nport = 8008\ntoken_file = \"{}\"\n", token.display()));
        std::fs::write(&path, cfg).expect("config");
    }
    lab.start("a");
    assert!(lab.wait_role("a", "master", Duration::from_secs(5)));
    lab.start("b");
    assert!(lab.wait_role("b", "slave", Duration::from_secs(5)));
    wait_for("a's /master to answer 200", Duration::from_secs(5), || curl(&lab, &[&url(&lab, "a", "/master")]).0 == 200);

    let (code, body) = curl(&lab, &[&url(&lab, "a", "/master")]);
    assert!(code == 200 && body.contains("\"role\":\"master\""), "{code} {body}");
    assert_eq!(curl(&lab, &[&url(&lab, "b", "/master")]).0, 503);
    assert_eq!(curl(&lab, &[&url(&lab, "b", "/slave")]).0, 200);
    assert_eq!(curl(&lab, &[&url(&lab, "a", "/slave")]).0, 503);
    assert_eq!(curl(&lab, &[&url(&lab, "b", "/health")]).0, 200);
    let (code, body) = curl(&lab, &["-I", &url(&lab, "a", "/master")]);
    assert!(code == 200 && !body.contains("role"), "HEAD: the code, no body: {code} {body}");
    let (code, body) = curl(&lab, &["-X", "OPTIONS", &url(&lab, "b", "/master")]);
    assert!(code == 503 && body.is_empty(), "OPTIONS: the code, no body: {code} {body:?}");
    let (code, body) = curl(&lab, &[&url(&lab, "b", "/slave?lag=soon")]);
    assert!(code == 400 && body.contains("\"error\"") && body.contains("lag"), "{code} {body}");

    let auth = format!("Authorization: Bearer {TOKEN}");
    let (code, body) = curl(&lab, &["-X", "POST", &url(&lab, "a", "/switchover")]);
    assert!(code == 401 && body.contains("token"), "no token: {code} {body}");
    let (code, _) = curl(&lab, &["-X", "POST", "-H", "Authorization: Bearer wrong-token-0123456789", &url(&lab, "a", "/switchover")]);
    assert_eq!(code, 401, "a wrong token");
    assert_eq!(curl(&lab, &[&url(&lab, "a", "/status")]).0, 401, "the status needs the token too");
    let (code, body) = curl(&lab, &["-H", &auth, &url(&lab, "a", "/status")]);
    assert!(code == 200 && body.contains("\"role\":\"Master\""), "{code} {body}");
    let (code, body) = curl(&lab, &["-X", "POST", "-H", &auth, "-d", "{\"state\":\"primary\"}", &url(&lab, "a", "/state")]);
    assert!(code == 400 && body.contains("`primary` is not one of master, slave, off"), "{code} {body}");
    assert_eq!(lab.role("a"), "master", "nothing done on bad input");

    // The event stream, listened to from the client while the switch-over runs.
    let events = lab.work.join("events.txt");
    let ns = lab.ns("c");
    let mut sse = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "curl", "-s", "-N", "--max-time", "20", "-H", &auth, &url(&lab, "a", "/events")])
        .stdout(std::fs::File::create(&events).expect("events file"))
        .spawn()
        .expect("curl");
    wait_for("the event stream to start with the node's state", Duration::from_secs(5), || {
        std::fs::read_to_string(&events).is_ok_and(|t| t.contains("event: status") && t.contains("\"role\":\"master\""))
    });
    let (code, body) = curl(&lab, &["-X", "POST", "-H", &auth, &url(&lab, "a", "/switchover")]);
    assert!(code == 200 && body.contains("result"), "{code} {body}");
    assert!(lab.wait_role("b", "master", Duration::from_secs(10)) && lab.wait_role("a", "slave", Duration::from_secs(10)));
    wait_for("b's /master to answer 200", Duration::from_secs(5), || curl(&lab, &[&url(&lab, "b", "/master")]).0 == 200);
    assert_eq!(curl(&lab, &[&url(&lab, "a", "/master")]).0, 503);
    wait_for("a's /slave to answer 200", Duration::from_secs(5), || curl(&lab, &[&url(&lab, "a", "/slave")]).0 == 200);
    wait_for("the role change on the event stream", Duration::from_secs(5), || {
        std::fs::read_to_string(&events).is_ok_and(|t| t.contains("event: role") && t.contains("\"to\":\"slave\""))
    });
    let _ = sse.kill();
    let _ = sse.wait();

    let (code, body) = curl(&lab, &["-X", "POST", "-H", &auth, "-d", "{\"state\":\"master\"}", &url(&lab, "a", "/state")]);
    assert!(code == 409 && body.contains("switchover"), "refused, and why: {code} {body}");
    let (code, metrics) = curl(&lab, &[&url(&lab, "b", "/metrics")]);
    assert_eq!(code, 200);
    for line in ["ridondato_role{role=\"master\"} 1", "ridondato_promotions_total 1", "ridondato_peer_alive 1"] {
        assert!(metrics.lines().any(|l| l == line), "missing `{line}`:\n{metrics}");
    }
}
