//! The dashboard, loaded in a real headless Chromium.

mod support;

use support::{gateway, text, upstream};

/// Debian's Chromium; `.ci/run` installs it.
const CHROMIUM: &str = "chromium";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_tripped_circuit_as_open() {
    let up = upstream(|_| async { text(200, "ok") }).await;
    let gw = gateway(&format!(
        "[[services]]\nname = \"reporting\"\nupstreams = [ \"http://{up}\" ]\n\
         [[services]]\nname = \"users\"\nupstreams = [ \"http://{up}\" ]\n\
         [[routes]]\npath_prefix = \"/\"\nservice = \"users\"\n"
    ))
    .await;
    gw.gateway().services()[0].breaker.trip();

    let url = format!("http://{}/dashboard", gw.admin_addr);
    let profile = std::env::temp_dir().join(format!("rempart-chromium-{}", std::process::id()));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                &format!("--user-data-dir={}", profile.display()),
                // Lets the page's fetch of /status and its rendering finish before the dump.
                "--virtual-time-budget=5000",
                "--dump-dom",
                &url,
            ])
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| {
        panic!("cannot run {CHROMIUM} ({e}); install Debian's chromium package (.ci/run does)")
    });
    let dom = String::from_utf8_lossy(&out.stdout);
    let row = |service: &str| -> String {
        let start = dom
            .find(&format!("data-service=\"{service}\""))
            .unwrap_or_else(|| {
                panic!(
                    "no row for {service} in\n{dom}\nstderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        let end = dom[start..].find("</tr>").map_or(dom.len(), |e| start + e);
        dom[start..end].to_owned()
    };
    assert!(
        row("reporting").contains("data-state=\"Open\""),
        "{}",
        row("reporting")
    );
    assert!(
        row("users").contains("data-state=\"Closed\""),
        "{}",
        row("users")
    );
    gw.shutdown().await;
}
