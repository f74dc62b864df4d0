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

/// A lab whose two nodes serve the API on port 8008 with the token `TOKEN`.
fn api_lab(tag: &str) -> Lab {
    let lab = Lab::up(tag);
    with_api(&lab, TOKEN);
    lab
}

/// Whether the tool is here; under CI its absence is a failure.
fn tool(name: &str) -> bool {
    let ok = sh(&["which", name]).0;
    assert!(ok || std::env::var("CI").map_or(true, |v| v != "true"), "{name} is missing (scripts/deps-lan.sh installs it)");
    ok
}

/// Health checks follow the roles (GET, HEAD, OPTIONS alike); everything else needs the token;
/// bad input and refused commands are JSON naming what is wrong; a switch-over from the API
/// moves the role, the event stream tells of it, the metrics count it.
#[test]
fn health_checks_follow_the_roles_and_commands_need_the_token() {
    if !lab_available() {
        return;
    }
    if !tool("curl") {
        return;
    }
    let mut lab = api_lab("api");
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
    let (code, _) = curl(&lab, &["-X", "POST", "-d", "{\"state\":\"primary\"}", &url(&lab, "a", "/state")]);
    assert_eq!(code, 401, "without the token, the body is not even looked at");
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
    for line in [
        "ridondato_role{role=\"master\"} 1",
        "ridondato_promotions_total{kind=\"switchover\"} 1",
        "ridondato_promotions_total{kind=\"failover\"} 0",
        "ridondato_peer_alive 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing `{line}`:\n{metrics}");
    }
    // Heartbeats flow both ways: b has sent and received some since it started.
    for name in ["ridondato_messages_sent_total ", "ridondato_messages_received_total "] {
        let n: u64 = metrics.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.parse().ok()).unwrap_or(0);
        assert!(n > 5, "{name}{n}:\n{metrics}");
    }
}

/// HAProxy's view of one backend's servers: (server, status) from its CSV stats.
fn servers(lab: &Lab, backend: &str) -> Vec<(String, String)> {
    let (_, csv) = lab.exec("c", &["curl", "-s", "--max-time", "2", "http://127.0.0.1:8404/stats;csv"]);
    csv.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.len() > 17 && f[0] == backend && f[1] != "FRONTEND" && f[1] != "BACKEND").then(|| (f[1].to_string(), f[17].to_string()))
        })
        .collect()
}

fn up(lab: &Lab, backend: &str, server: &str) -> bool {
    servers(lab, backend).iter().any(|(s, st)| s == server && st == "UP")
}

/// `etc/haproxy.cfg.example`, pointed at the lab, run by Debian's haproxy in the client's
/// namespace: its write pool follows a failover within one check interval (500 ms) of the new
/// Master answering `/master`, and its report pool takes the returning node once it is Slave.
#[test]
fn haproxy_with_the_example_config_follows_a_failover_within_one_check_interval() {
    if !lab_available() || !tool("curl") || !tool("haproxy") {
        return;
    }
    let mut lab = api_lab("hap");
    let example = std::fs::read_to_string(repo().join("etc/haproxy.cfg.example")).expect("the example");
    let cfg = example.replace("198.18.0.1", lab.var("LAB_A")).replace("198.18.0.2", lab.var("LAB_B")).replace("198.18.0.100", lab.var("LAB_VIP"));
    let path = lab.work.join("haproxy.cfg");
    std::fs::write(&path, cfg).expect("haproxy.cfg");
    let (ok, out) = sh(&["haproxy", "-c", "-f", path.to_str().unwrap_or_default()]);
    assert!(ok, "the example is a valid HAProxy configuration: {out}");
    lab.start("a");
    assert!(lab.wait_role("a", "master", Duration::from_secs(5)));
    lab.start("b");
    assert!(lab.wait_role("b", "slave", Duration::from_secs(5)));
    let _haproxy = Spawned::in_ns(&lab, "c", &["haproxy", "-db", "-f", path.to_str().unwrap_or_default()]);
    wait_for("HAProxy to send writes to a only", Duration::from_secs(10), || up(&lab, "pbx_write", "node1") && !up(&lab, "pbx_write", "node2"));
    wait_for("HAProxy to send reports to b", Duration::from_secs(10), || up(&lab, "pbx_reports", "node2") && !up(&lab, "pbx_reports", "node1"));

    lab.lab(&["link-down", "a"]);
    assert!(lab.wait_role("b", "master", Duration::from_secs(5)), "b takes over");
    wait_for("b's /master to answer 200", Duration::from_secs(5), || curl(&lab, &[&url(&lab, "b", "/master")]).0 == 200);
    let t = std::time::Instant::now();
    wait_for("HAProxy to send writes to b", Duration::from_secs(5), || up(&lab, "pbx_write", "node2"));
    let followed = t.elapsed();
    eprintln!("HAProxy's write pool followed {} ms after b's /master answered 200", followed.as_millis());
    assert!(followed <= Duration::from_millis(500 + 300), "within one check interval (500 ms, and the stats poll): {followed:?}");
    assert!(!up(&lab, "pbx_write", "node1"), "never both in the write pool: {:?}", servers(&lab, "pbx_write"));

    lab.lab(&["link-up", "a"]);
    assert!(lab.wait_role("a", "slave", Duration::from_secs(5)), "a returns as Slave");
    wait_for("HAProxy to send reports to a", Duration::from_secs(5), || up(&lab, "pbx_reports", "node1") && !up(&lab, "pbx_reports", "node2"));
    assert!(up(&lab, "pbx_write", "node2") && !up(&lab, "pbx_write", "node1"));
}

/// The CLI run from the client's namespace against a node's API (`--url`, `--token-file`): the
/// same verbs as on the node, exit codes as documented (1 refused, 2 bad usage, 3 unreachable).
#[test]
fn the_cli_drives_a_remote_node_through_the_api() {
    if !lab_available() {
        return;
    }
    let mut lab = api_lab("cli");
    lab.start("a");
    assert!(lab.wait_role("a", "master", Duration::from_secs(5)));
    lab.start("b");
    assert!(lab.wait_role("b", "slave", Duration::from_secs(5)));
    let token = lab.work.join("api.token").display().to_string();
    let a = url(&lab, "a", "");
    let ns = lab.ns("c");
    // (exit code, stdout + stderr) of `ridondato ARGS` in the client's namespace.
    let cli = |args: &[&str]| {
        let o = std::process::Command::new("ip").args(["netns", "exec", &ns, BIN]).args(args).output().expect("ridondato");
        (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr))
    };
    wait_for("a's API", Duration::from_secs(5), || cli(&["status", "--url", &a, "--token-file", &token]).0 == 0);
    let (code, out) = cli(&["status", "--url", &a, "--token-file", &token]);
    assert!(code == 0 && out.contains("node 1 (this)") && out.contains("node 2 (peer)"), "{code} {out}");
    let role = out.lines().find(|l| l.starts_with("role")).unwrap_or_default().to_string();
    assert!(role.contains("master") && role.contains("slave"), "{out}");
    let (code, out) = cli(&["status", "--json", "--url", &a, "--token-file", &token]);
    assert!(code == 0 && out.contains("\"role\": \"Master\""), "{code} {out}");

    assert_eq!(cli(&["maintenance", "on", "--url", &a, "--token-file", &token]).0, 0);
    let (_, out) = cli(&["status", "--url", &a, "--token-file", &token]);
    assert!(out.contains("maintenance ON"), "{out}");
    assert_eq!(cli(&["maintenance", "off", "--url", &a, "--token-file", &token]).0, 0);

    // Refused by the node (1), and why; promoting past the policy stays on the node itself.
    let (code, out) = cli(&["set-state", "master", "--url", &url(&lab, "b", ""), "--token-file", &token]);
    assert!(code == 1 && out.contains("switchover"), "{code} {out}");
    let (code, out) = cli(&["set-state", "master", "--accept-data-loss", "--url", &a, "--token-file", &token]);
    assert!(code == 1 && out.contains("on the node itself"), "{code} {out}");
    // A wrong token (1), a token file others can read (2), bad usage (2), no API there (3).
    let wrong = lab.work.join("wrong.token");
    std::fs::write(&wrong, "not-the-token-0123456789\n").expect("token");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (code, out) = cli(&["status", "--url", &a, "--token-file", wrong.to_str().unwrap_or_default()]);
    assert!(code == 1 && out.contains("token"), "{code} {out}");
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, out) = cli(&["status", "--url", &a, "--token-file", wrong.to_str().unwrap_or_default()]);
    assert!(code == 2 && out.contains("chmod 600"), "{code} {out}");
    let (code, out) = cli(&["resync", "everything", "--url", &a, "--token-file", &token]);
    assert!(code == 2 && out.contains("everything") && out.contains("db, fs, mongo, all"), "{code} {out}");
    let (code, out) = cli(&["status", "--url", &format!("http://{}:1", lab.var("LAB_A")), "--token-file", &token]);
    assert!(code == 3 && out.contains("cannot reach"), "{code} {out}");

    // The switch-over from the client, then a completion script for the operator's shell.
    let (code, out) = cli(&["switchover", "--url", &a, "--token-file", &token]);
    assert!(code == 0 && out.contains("switch-over done in") && out.contains("node 2 is Master"), "{code} {out}");
    assert!(lab.wait_role("b", "master", Duration::from_secs(10)) && lab.wait_role("a", "slave", Duration::from_secs(10)));
    let (code, out) = cli(&["completions", "bash"]);
    assert!(code == 0 && out.contains("cloud-switchover") && out.contains("--token-file"), "{code}");
}
