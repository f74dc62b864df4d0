//! `ridondato check-mongo`: a pair of our MongoDB wire-protocol peers (the peer's binary, on
//! 127.0.0.1, standing in for two `mongod`: none can be installed here) checked against the
//! layout ridondato drives, then broken the ways an operator could break it. Authenticated with
//! the node's `mongo.username` / `mongo.password_file`.

use mongodb::bson::{doc, Document};
use mongodb::options::{ClientOptions, Credential};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ridondato");
const USER: &str = "ridondato";
const PASSWORD: &str = "check-pw-1";

fn peer_bin() -> PathBuf {
    Path::new(BIN).with_file_name("ridondato-mongo-peer")
}

/// A peer process, ended by its PID when dropped (a failed assertion included).
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn start_peer(dir: &Path, host: &str, pw: &Path) -> Peer {
    std::fs::create_dir_all(dir).expect("dbpath");
    let args =
        ["--bind", host, "--replSet", "rs0", "--dbpath", dir.to_str().unwrap_or_default(), "--user", USER, "--password-file", pw.to_str().unwrap_or_default()];
    Peer(Command::new(peer_bin()).args(args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().expect("start the peer"))
}

async fn admin(host: &str, cmd: Document) -> mongodb::error::Result<Document> {
    let mut o = ClientOptions::parse(format!("mongodb://{host}/?directConnection=true&serverSelectionTimeoutMS=1000")).await?;
    o.credential = Some(Credential::builder().username(USER.to_string()).password(PASSWORD.to_string()).source("admin".to_string()).build());
    mongodb::Client::with_options(o)?.database("admin").run_command(cmd).await
}

/// Retries `cmd` on `host` until it succeeds and `done` holds of the answer.
async fn until(what: &str, host: &str, cmd: Document, done: impl Fn(&Document) -> bool) {
    let t = Instant::now();
    loop {
        if admin(host, cmd.clone()).await.is_ok_and(|d| done(&d)) {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "{what}: not within 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn node_config(d: &Path, member: &str, peer: &str, pw: &Path) -> PathBuf {
    let secret = d.join("secret");
    std::fs::write(&secret, "a cluster secret of enough bytes\n").expect("secret");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let text = format!(
        "[node]\nid = 1\npeer_id = 2\npeer_ip = \"198.18.0.2\"\nmanagement_ip = \"127.0.0.1\"\nreplication_bandwidth_kib_s = 1000\nsecret_file = \"{}\"\nstate_dir = \"{}\"\ncontrol_socket = \"{}\"\n\n[[shared_ip]]\ninterface = \"lo\"\naddress = \"127.0.0.100\"\nprefix = 8\nprimary = true\n\n[mongo]\nuri = \"mongodb://{member}/\"\nreplica_set = \"rs0\"\nmember = \"{member}\"\npeer_member = \"{peer}\"\nusername = \"{USER}\"\npassword_file = \"{}\"\n",
        secret.display(),
        d.join("state").display(),
        d.join("control.sock").display(),
        pw.display()
    );
    let p = d.join("node.toml");
    std::fs::write(&p, text).expect("config");
    p
}

fn check(cfg: &Path) -> (i32, String) {
    let o = Command::new(BIN).args(["check-mongo", "--config", cfg.to_str().unwrap_or_default()]).output().expect("run");
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr))
}

#[test]
fn check_mongo_passes_the_layout_and_names_each_way_it_is_broken() {
    assert!(peer_bin().exists(), "{} is missing (cargo test --workspace builds it)", peer_bin().display());
    let d = std::env::temp_dir().join(format!("ridondato-check-mongo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    let pw = d.join("mongo.pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).expect("password");
    let (a, b) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let pa = start_peer(&d.join("a"), &a, &pw);
    let mut pb = Some(start_peer(&d.join("b"), &b, &pw));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let cfg = node_config(&d, &a, &b, &pw);
    rt.block_on(async {
        until("a answers", &a, doc! {"hello": 1}, |_| true).await;
        until("b answers", &b, doc! {"hello": 1}, |_| true).await;
    });

    let (code, out) = check(&cfg);
    assert_eq!(code, 1, "not initiated yet: {out}");
    assert!(out.contains("FAIL") && out.contains("not initiated"), "{out}");

    // The layout ridondato drives: a's member the only voter.
    rt.block_on(async {
        let config = doc! { "_id": "rs0", "version": 1, "members": [
        { "_id": 0, "host": &a, "votes": 1, "priority": 1 }, { "_id": 1, "host": &b, "votes": 0, "priority": 0 } ] };
        until("initiate", &a, doc! {"replSetInitiate": config}, |_| true).await;
        until("a primary", &a, doc! {"hello": 1}, |h| h.get_bool("isWritablePrimary").unwrap_or(false)).await;
        until("b secondary", &b, doc! {"replSetGetStatus": 1}, |s| s.get_str("set") == Ok("rs0") && s.get_i32("myState") == Ok(2)).await;
    });
    let (code, out) = check(&cfg);
    assert_eq!(code, 0, "{out}");
    eprintln!("{out}");
    assert!(!out.contains("FAIL") && out.contains("exactly one voting member: 1") && out.contains("is SECONDARY"), "{out}");

    // Both members given a vote (the usual two-member set, which loses its primary with either).
    rt.block_on(async {
        let config = doc! { "_id": "rs0", "version": 2, "members": [
        { "_id": 0, "host": &a, "votes": 1, "priority": 1 }, { "_id": 1, "host": &b, "votes": 1, "priority": 1 } ] };
        until("reconfig", &a, doc! {"replSetReconfig": config}, |_| true).await;
        until("b on version 2", &b, doc! {"replSetGetConfig": 1}, |c| c.get_document("config").is_ok_and(|c| c.get_i32("version") == Ok(2))).await;
    });
    let (code, out) = check(&cfg);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL exactly one voting member: 2"), "{out}");

    // The peer's member gone.
    drop(pb.take());
    let (code, out) = check(&cfg);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("FAIL the peer's member {b} does not answer")), "{out}");

    // A wrong password: named, nothing checked unauthenticated.
    std::fs::write(&pw, "wrong\n").expect("password");
    let (code, out) = check(&cfg);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("does not answer") && out.contains("uthentication"), "{out}");

    // This node's member gone: unreachable (exit 3).
    std::fs::write(&pw, format!("{PASSWORD}\n")).expect("password");
    drop(pa);
    let (code, out) = check(&cfg);
    assert_eq!(code, 3, "{out}");
    let _ = std::fs::remove_dir_all(&d);
}
