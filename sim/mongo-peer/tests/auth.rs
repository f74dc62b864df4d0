//! SCRAM-SHA-256 authentication, with the real `mongodb` 3.x driver against in-process peers
//! (and the binary) on 127.0.0.1.

// Shared with driver.rs, which uses the rest of it.
#[allow(dead_code)]
mod support;

use std::net::SocketAddr;
use std::path::Path;

use mongodb::bson::{doc, spec::BinarySubtype, Binary, Bson, Document};
use mongodb::error::ErrorKind;
use mongodb::options::{AuthMechanism, ClientOptions, Credential, WriteConcern};
use mongodb::Client;
use ridondato_mongo_peer::{serve, PeerHandle, PeerOptions};
use support::*;

const USER: &str = "root";
const PASSWORD: &str = "pencil-1";

fn users(password: &str) -> Vec<(String, String)> {
    vec![(USER.to_string(), password.to_string()), ("reader".to_string(), "other-pw".to_string())]
}

async fn start_with(dir: &Path, users: Vec<(String, String)>) -> R<PeerHandle> {
    let mut opts = PeerOptions::new(any_port(), "rs0", dir);
    opts.initial_sync_bytes_per_sec = 0;
    opts.users = users;
    Ok(serve(opts).await?)
}

/// A direct connection that authenticates with an explicit `Credential`.
async fn login(addr: SocketAddr, user: &str, password: &str) -> R<Client> {
    let mut opts = ClientOptions::parse(format!("mongodb://{addr}/?directConnection=true&serverSelectionTimeoutMS=5000&heartbeatFrequencyMS=500")).await?;
    opts.credential = Some(
        Credential::builder()
            .username(user.to_string())
            .password(password.to_string())
            .mechanism(AuthMechanism::ScramSha256)
            .source("admin".to_string())
            .build(),
    );
    Ok(Client::with_options(opts)?)
}

/// The server's error code anywhere in the chain: an authentication failure reaches us as the
/// driver's `Authentication` error with the server's reply as its source.
fn server_code(e: &mongodb::error::Error) -> Option<i32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        // The driver keeps its source boxed, and `Box<Error>` is what `source()` hands out.
        let driver = err.downcast_ref::<mongodb::error::Error>().or_else(|| err.downcast_ref::<Box<mongodb::error::Error>>().map(|b| &**b));
        if let Some(c) = driver.and_then(code) {
            return Some(c);
        }
        cur = err.source();
    }
    None
}

fn is_primary(hello: Option<Document>) -> Option<()> {
    hello?.get_bool("isWritablePrimary").ok()?.then_some(())
}

fn authenticated_users(status: &Document) -> R<Vec<String>> {
    let users = status.get_document("authInfo")?.get_array("authenticatedUsers")?;
    Ok(users.iter().filter_map(Bson::as_document).filter_map(|u| u.get_str("user").ok().map(str::to_string)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_password_runs_commands_and_connection_status_names_the_user() -> R {
    let dir = fresh_dir("auth-ok");
    let peer = start_with(&dir, users(PASSWORD)).await?;
    let c = login(peer.addr(), USER, PASSWORD).await?;
    admin(&c, doc! {"replSetInitiate": {}}).await?;
    wait_for("single-node primary", 10, || async { is_primary(admin(&c, doc! {"hello": 1}).await.ok()) }).await?;
    let s = admin(&c, doc! {"replSetGetStatus": 1}).await?;
    assert_eq!(s.get_i32("myState")?, 1, "{s}");
    let coll = c.database("test").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1, "x": "y"}).await?;
    assert_eq!(coll.find_one(doc! {"_id": 1}).await?, Some(doc! {"_id": 1, "x": "y"}));
    assert_eq!(authenticated_users(&admin(&c, doc! {"connectionStatus": 1}).await?)?, vec![USER]);

    // A second user; authentication state is per connection (and so per client here).
    let reader = login(peer.addr(), "reader", "other-pw").await?;
    assert_eq!(reader.database("test").collection::<Document>("c").count_documents(doc! {}).await?, 1);
    assert_eq!(authenticated_users(&admin(&reader, doc! {"connectionStatus": 1}).await?)?, vec!["reader"]);
    drop(peer);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_or_unknown_user_fails_with_authentication_failed() -> R {
    let dir = fresh_dir("auth-wrong");
    let peer = start_with(&dir, users(PASSWORD)).await?;
    for (user, password) in [(USER, "not-the-password"), ("nobody", PASSWORD), ("reader", PASSWORD)] {
        let c = login(peer.addr(), user, password).await?;
        let err = admin(&c, doc! {"ping": 1}).await.err().ok_or_else(|| format!("{user}/{password} accepted"))?;
        assert!(matches!(*err.kind, ErrorKind::Authentication { .. }), "{err}");
        assert_eq!(server_code(&err), Some(18), "{err}");
        assert!(err.to_string().contains("Authentication failed."), "{err}");
    }
    drop(peer);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_only_the_handshake_commands_run() -> R {
    let dir = fresh_dir("auth-none");
    let peer = start_with(&dir, users(PASSWORD)).await?;
    let c = direct(peer.addr()).await?;
    admin(&c, doc! {"ping": 1}).await?;
    assert_eq!(admin(&c, doc! {"buildInfo": 1}).await?.get_str("version")?, ridondato_mongo_peer::VERSION);
    assert!(authenticated_users(&admin(&c, doc! {"connectionStatus": 1}).await?)?.is_empty());
    let hello = admin(&c, doc! {"hello": 1, "saslSupportedMechs": "admin.root"}).await?;
    assert_eq!(hello.get_array("saslSupportedMechs")?, &vec![Bson::from("SCRAM-SHA-256")], "{hello}");
    let hello = admin(&c, doc! {"hello": 1, "saslSupportedMechs": "admin.nobody"}).await?;
    assert!(hello.get("saslSupportedMechs").is_none(), "{hello}");

    for cmd in [doc! {"replSetGetStatus": 1}, doc! {"replSetInitiate": {}}] {
        let err = admin(&c, cmd.clone()).await.err().ok_or_else(|| format!("{cmd} ran unauthenticated"))?;
        let ErrorKind::Command(ce) = &*err.kind else { return Err(format!("not a command error: {err}").into()) };
        assert_eq!((ce.code, ce.code_name.as_str()), (13, "Unauthorized"), "{err}");
        let name = cmd.keys().next().ok_or("name")?;
        assert_eq!(ce.message, format!("command {name} requires authentication"));
    }
    let err = c.database("test").collection::<Document>("c").find_one(doc! {}).await.err().ok_or("find ran unauthenticated")?;
    assert_eq!(code(&err), Some(13), "{err}");
    let err = c.database("test").collection::<Document>("c").insert_one(doc! {"x": 1}).await.err().ok_or("insert ran unauthenticated")?;
    assert_eq!(code(&err), Some(13), "{err}");

    // The SASL commands' own errors, on the raw wire.
    let no_conversation = raw(peer.addr(), doc! {"saslContinue": 1, "conversationId": 1, "payload": "", "$db": "admin"}, 0, None).await?;
    assert_eq!(no_conversation.get_i32("code")?, 17, "{no_conversation}");
    let sha1 = raw(peer.addr(), doc! {"saslStart": 1, "mechanism": "SCRAM-SHA-1", "payload": "biwsbj1yb290LHI9YWJj", "$db": "admin"}, 0, None).await?;
    assert_eq!(sha1.get_i32("code")?, 334, "{sha1}");
    // A string payload is base64 and gets a base64 string back; the server nonce extends ours.
    let first = raw(peer.addr(), doc! {"saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": "biwsbj1yb290LHI9YWJj", "$db": "admin"}, 0, None).await?;
    assert_eq!((first.get_i32("conversationId")?, first.get_bool("done")?), (1, false), "{first}");
    assert!(first.get_str("payload")?.starts_with("cj1hYm"), "{first}");
    // What the driver sends first: a saslStart folded into hello, answered in kind.
    let client_first = Binary { subtype: BinarySubtype::Generic, bytes: b"n,,n=root,r=abc".to_vec() };
    let spec = doc! {"saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": client_first, "db": "admin", "options": {"skipEmptyExchange": true}};
    let hello = raw(peer.addr(), doc! {"hello": 1, "speculativeAuthenticate": spec.clone(), "$db": "admin"}, 0, None).await?;
    let speculative = hello.get_document("speculativeAuthenticate")?;
    assert_eq!((speculative.get_i32("conversationId")?, speculative.get_bool("done")?), (1, false), "{hello}");
    assert!(speculative.get_binary_generic("payload")?.starts_with(b"r=abc"), "{hello}");
    let mut unknown = spec;
    unknown.insert("payload", Binary { subtype: BinarySubtype::Generic, bytes: b"n,,n=nobody,r=abc".to_vec() });
    let hello = raw(peer.addr(), doc! {"hello": 1, "speculativeAuthenticate": unknown, "$db": "admin"}, 0, None).await?;
    assert!(hello.get("speculativeAuthenticate").is_none() && hello.get_bool("isWritablePrimary").is_ok(), "{hello}");
    drop(peer);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_with_auth_replicate_through_their_authenticated_link() -> R {
    let (a_dir, b_dir) = (fresh_dir("auth-pair-a"), fresh_dir("auth-pair-b"));
    let a = start_with(&a_dir, users(PASSWORD)).await?;
    let b = start_with(&b_dir, users(PASSWORD)).await?;
    let (a_host, b_host) = (a.host().to_string(), b.host().to_string());
    let (ca, cb) = (login(a.addr(), USER, PASSWORD).await?, login(b.addr(), USER, PASSWORD).await?);
    // The quorum check and heartbeats already need the link to log in.
    admin(&ca, doc! {"replSetInitiate": config(&a_host, &b_host, 1, 1)}).await?;
    primary_and_secondary(&ca, &a_host, &b_host).await?;

    // A set client with the credentials in the URI, writing with w: majority (B must fetch it).
    let uri = format!(
        "mongodb://{USER}:{PASSWORD}@{},{}/?replicaSet=rs0&authSource=admin&heartbeatFrequencyMS=500&serverSelectionTimeoutMS=15000",
        a.addr(),
        b.addr()
    );
    let set = Client::with_uri_str(uri).await?;
    let coll = set.database("test").collection::<Document>("c");
    coll.insert_many(vec![doc! {"_id": 1}, doc! {"_id": 2}]).write_concern(WriteConcern::majority()).await?;
    let on_b = cb.database("test").collection::<Document>("c");
    wait_for("B to serve both documents", 10, || async { (on_b.count_documents(doc! {}).await.ok()? == 2).then_some(()) }).await?;
    caught_up(&ca, &cb).await?;
    let sb = status(&cb).await.ok_or("B status")?;
    assert_eq!(sb.get_str("syncSourceHost")?, a_host);
    assert_eq!(member(&sb, &a_host).ok_or("A in B's status")?.get_str("stateStr")?, "PRIMARY");
    drop((a, b));
    let _ = std::fs::remove_dir_all(&a_dir);
    let _ = std::fs::remove_dir_all(&b_dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_with_different_passwords_cannot_heartbeat() -> R {
    let (a_dir, b_dir) = (fresh_dir("auth-mismatch-a"), fresh_dir("auth-mismatch-b"));
    let a = start_with(&a_dir, users(PASSWORD)).await?;
    let b = start_with(&b_dir, users("another-password")).await?;
    let (a_host, b_host) = (a.host().to_string(), b.host().to_string());
    let ca = login(a.addr(), USER, PASSWORD).await?;
    // B does not vote, so the quorum check passes without it.
    admin(&ca, doc! {"replSetInitiate": config(&a_host, &b_host, 1, 1)}).await?;
    let msg = wait_for("A to report B's failed login", 10, || async {
        let s = status(&ca).await?;
        let m = member(&s, &b_host)?;
        let msg = m.get_str("lastHeartbeatMessage").ok()?;
        (msg.contains("Authentication failed.") && m.get_f64("health") == Ok(0.0)).then(|| msg.to_string())
    })
    .await?;
    assert!(msg.contains(USER), "{msg}");
    assert_eq!(b.state(), 0, "B never received the config");
    drop((a, b));
    let _ = std::fs::remove_dir_all(&a_dir);
    let _ = std::fs::remove_dir_all(&b_dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_with_user_and_password_file_takes_uri_credentials() -> R {
    let bin = env!("CARGO_BIN_EXE_ridondato-mongo-peer");
    let dir = fresh_dir("auth-bin");
    std::fs::create_dir_all(&dir)?;
    let pw_file = dir.join("password");
    std::fs::write(&pw_file, format!("{PASSWORD}\n"))?;
    let out = std::process::Command::new(bin).args(["--bind", "127.0.0.1:1", "--replSet", "rs0", "--dbpath", "/nonexistent", "--user", USER]).output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--password-file"), "{out:?}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let _child = Child(
        std::process::Command::new(bin)
            .args(["--bind", &addr.to_string(), "--replSet", "rs0", "--user", USER, "--password-file"])
            .arg(&pw_file)
            .arg("--dbpath")
            .arg(dir.join("db"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?,
    );
    let c = Client::with_uri_str(format!("mongodb://{USER}:{PASSWORD}@{addr}/?directConnection=true&authSource=admin&serverSelectionTimeoutMS=5000")).await?;
    wait_for("the binary to answer", 10, || async { admin(&c, doc! {"ping": 1}).await.ok() }).await?;
    admin(&c, doc! {"replSetInitiate": {}}).await?;
    wait_for("single-node primary", 10, || async { is_primary(admin(&c, doc! {"hello": 1}).await.ok()) }).await?;
    c.database("test").collection::<Document>("c").insert_one(doc! {"_id": 1}).await?;
    assert_eq!(c.database("test").collection::<Document>("c").count_documents(doc! {}).await?, 1);

    let anonymous = direct(addr).await?;
    let err = anonymous.database("test").collection::<Document>("c").count_documents(doc! {}).await.err().ok_or("count ran unauthenticated")?;
    assert_eq!(code(&err), Some(13), "{err}");
    let wrong = Client::with_uri_str(format!("mongodb://{USER}:nope@{addr}/?directConnection=true&authSource=admin&serverSelectionTimeoutMS=5000")).await?;
    let err = admin(&wrong, doc! {"ping": 1}).await.err().ok_or("wrong password accepted")?;
    assert_eq!(server_code(&err), Some(18), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
