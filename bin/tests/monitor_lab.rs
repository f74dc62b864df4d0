//! The System Monitor page in a real browser: Debian's chromium, driven through chromedriver
//! with fantoccini, both in the client's namespace, against two daemons of the lab with `[api]`
//! and `[fs]`. Needs root, the lab's tools, chromium and chromium-driver (scripts/deps-web.sh);
//! under CI=true a missing piece fails the test. Saves a screenshot and prints its path.

mod support;

use fantoccini::{Client, ClientBuilder, Locator};
use std::time::Duration;
use support::cloud::NsRuntime;
use support::*;

const TOKEN: &str = "lab-page-token-0123456789abcdef";

/// Evaluates `script` in the page until it returns `want`.
async fn until(c: &Client, what: &str, script: &str, want: &str, secs: u64) -> Result<(), String> {
    let t = std::time::Instant::now();
    let mut last = String::new();
    while t.elapsed() < Duration::from_secs(secs) {
        let v = c.execute(script, vec![]).await.map_err(|e| format!("{what}: {e}"))?;
        last = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
        if last == want {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{what}: still `{last}`, wanted `{want}` after {secs} s"))
}

async fn click_and_confirm(c: &Client, id: &str) -> Result<(), String> {
    c.find(Locator::Id(id)).await.map_err(|e| format!("#{id}: {e}"))?.click().await.map_err(|e| format!("#{id}: {e}"))?;
    c.accept_alert().await.map_err(|e| format!("confirming #{id}: {e}"))
}

/// The page's run, as a person would: a wrong token refused, the right one; both nodes shown;
/// Resync FS on the Slave with its progress bar to 100 %; a switch-over from the page.
async fn session(url: String, shot: std::path::PathBuf) -> Result<(), String> {
    // Two TLS providers are compiled into the workspace: fantoccini needs the process default.
    let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut caps = serde_json::Map::new();
    let args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,800"];
    caps.insert("goog:chromeOptions".into(), serde_json::json!({ "args": args, "binary": "/usr/bin/chromium" }));
    let c = ClientBuilder::rustls()
        .map_err(|e| e.to_string())?
        .capabilities(caps)
        .connect("http://127.0.0.1:9515")
        .await
        .map_err(|e| format!("chromedriver: {e}"))?;
    let result = async {
        c.goto(&url).await.map_err(|e| format!("opening {url}: {e}"))?;
        let login = "return getComputedStyle(document.getElementById('login')).display";
        until(&c, "the token asked for", login, "flex", 10).await?;
        c.find(Locator::Id("token")).await.map_err(|e| e.to_string())?.send_keys("not-the-token-0000000000").await.map_err(|e| e.to_string())?;
        c.find(Locator::Id("token-ok")).await.map_err(|e| e.to_string())?.click().await.map_err(|e| e.to_string())?;
        until(&c, "a wrong token refused", "return document.getElementById('login-msg').textContent", "wrong token", 10).await?;
        let field = c.find(Locator::Id("token")).await.map_err(|e| e.to_string())?;
        field.clear().await.map_err(|e| e.to_string())?;
        field.send_keys(TOKEN).await.map_err(|e| e.to_string())?;
        c.find(Locator::Id("token-ok")).await.map_err(|e| e.to_string())?.click().await.map_err(|e| e.to_string())?;
        let role = |who: &str| format!("return (document.querySelector('#{who} .state') || {{dataset: {{}}}}).dataset.role || ''");
        until(&c, "this node shown as Slave", &role("me"), "slave", 10).await?;
        until(&c, "the peer shown as Master", &role("peer"), "master", 10).await?;

        click_and_confirm(&c, "resync-fs").await?;
        until(&c, "the progress bar at 100 %", "return document.getElementById('job-bar').dataset.percent || ''", "100", 30).await?;
        until(&c, "the job done", "return document.getElementById('job-text').textContent.includes('Done') ? 'yes' : 'no'", "yes", 10).await?;
        let png = c.screenshot().await.map_err(|e| e.to_string())?;
        std::fs::write(&shot, png).map_err(|e| format!("{}: {e}", shot.display()))?;

        click_and_confirm(&c, "switchover").await?;
        until(&c, "this node Master after the switch-over", &role("me"), "master", 15).await?;
        until(&c, "the peer Slave after the switch-over", &role("peer"), "slave", 15).await?;
        Ok(())
    }
    .await;
    let _ = c.close().await;
    result
}

#[test]
fn the_system_monitor_shows_both_nodes_runs_a_resync_and_a_switchover() {
    if !lab_available() {
        return;
    }
    let tools = ["chromium", "chromedriver"].iter().all(|t| sh(&["which", t]).0);
    assert!(tools || std::env::var("CI").map_or(true, |v| v != "true"), "chromium and chromium-driver are missing (scripts/deps-web.sh installs them)");
    if !tools {
        return;
    }
    let mut lab = Lab::up("web");
    with_api(&lab, TOKEN);
    let work = lab.work.clone();
    for n in ["a", "b"] {
        let files = work.join(n).join("files");
        std::fs::create_dir_all(&files).expect("files dir");
        let path = lab.work.join(format!("{n}.toml"));
        let mut cfg = std::fs::read_to_string(&path).expect("config");
        cfg.push_str(&format!("\n[fs]\npaths = [\"{}\"]\n", files.display()));
        std::fs::write(&path, cfg).expect("config");
    }
    for i in 0..200 {
        std::fs::write(work.join("a/files").join(format!("recording-{i}.wav")), vec![i as u8; 20_000]).expect("file");
    }
    lab.start("a");
    assert!(lab.wait_role("a", "master", Duration::from_secs(5)));
    lab.start("b");
    assert!(lab.wait_role("b", "slave", Duration::from_secs(5)));
    let ns = lab.ns("c");
    let _driver = Spawned::in_ns(&lab, "c", &["chromedriver", "--port=9515"]);
    wait_for("chromedriver to listen", Duration::from_secs(10), || lab.exec("c", &["curl", "-s", "http://127.0.0.1:9515/status"]).1.contains("ready"));
    let url = format!("http://{}:8008/", lab.var("LAB_B"));
    let shot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("system-monitor.png");
    let rt = NsRuntime::new(&ns);
    let s = shot.clone();
    let result = rt.run(move || session(url, s));
    assert!(result.is_ok(), "{}", result.err().unwrap_or_default());
    println!("screenshot of the System Monitor: {}", shot.display());
    assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000), "a real screenshot");
    assert_eq!((lab.role("a"), lab.role("b")), ("slave".into(), "master".into()), "the switch-over from the page moved the role");
}
