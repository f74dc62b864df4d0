//! Every scenario file runs in the simulator; its expectations and the invariants must hold and
//! its timeline must match the one recorded under `----`. `REWRITE=1` records it anew.

use ridondato_sim::Scenario;

#[test]
fn scenario_files_pass_and_match_their_timelines() {
    let dir = ridondato_tests::scenarios_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("scenarios dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "scn"))
        .collect();
    files.sort();
    assert!(files.len() >= 11, "expected the scenario set, found {}", files.len());
    let rewrite = std::env::var("REWRITE").is_ok_and(|v| v == "1");
    let mut problems = Vec::new();
    for f in &files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_string();
        let text = std::fs::read_to_string(f).expect("read scenario");
        let sc = Scenario::parse(&name, &text).unwrap_or_else(|e| panic!("{e}"));
        let out = sc.run();
        for e in &out.failures {
            problems.push(format!("{name}: {e}"));
        }
        if rewrite {
            std::fs::write(f, sc.rewritten(&out.timeline)).expect("rewrite scenario");
        } else if sc.expected.as_deref() != Some(out.timeline.as_str()) {
            problems.push(format!("{name}: timeline differs from the recorded one (REWRITE=1 to record on purpose):\n{}", out.timeline));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn same_seed_same_timeline() {
    let text = std::fs::read_to_string(ridondato_tests::scenarios_dir().join("dual_master_heal.scn")).expect("read");
    let sc = Scenario::parse("dual_master_heal.scn", &text).expect("parse");
    assert_eq!(sc.run().timeline, sc.run().timeline);
}

#[test]
fn a_bad_scenario_line_names_the_line() {
    let err = Scenario::parse("x.scn", "at 1s explode a\n").expect_err("must fail");
    assert!(err.contains("x.scn:1") && err.contains("explode"), "{err}");
    let err = Scenario::parse("x.scn", "seed 1\nat soon start a\n").expect_err("must fail");
    assert!(err.contains("x.scn:2") && err.contains("soon"), "{err}");
}
