//! `rempart demo` tells seed 001 case 4's story, end to end on real sockets.

use std::time::Duration;

use rempart_gateway::demo::{DemoOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_reporting_open_and_close_while_the_others_stay_healthy() {
    let options = DemoOptions {
        duration: Duration::from_secs(4),
        refresh: Duration::from_millis(100),
        redraw: false,
    };
    let mut out = Vec::new();
    let report = run(options, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let states = report.reporting_states.join(" ");
    assert!(states.starts_with("Closed"), "{states}");
    assert!(
        states.contains("Open"),
        "reporting's circuit never opened: {states}\n{text}"
    );
    assert!(
        states.ends_with("Closed"),
        "reporting's circuit did not close again: {states}\n{text}"
    );
    let by_name = |n: &str| report.answers.iter().find(|a| a.0 == n).unwrap().clone();
    let (_, ok, degraded, _) = by_name("reporting");
    assert!(ok > 0 && degraded > 0, "{:?}", report.answers);
    for healthy in ["catalogue", "orders"] {
        let (_, ok, degraded, failed) = by_name(healthy);
        assert!(ok > 0, "{healthy}: {:?}", report.answers);
        assert_eq!(
            (degraded, failed),
            (0, 0),
            "{healthy} suffered from reporting: {:?}",
            report.answers
        );
    }
    println!("{text}"); // shown with --nocapture
    assert!(text.contains("dashboard on http://"), "{text}");
    assert!(
        text.contains("reporting's circuit went Closed → Open"),
        "{text}"
    );
}
