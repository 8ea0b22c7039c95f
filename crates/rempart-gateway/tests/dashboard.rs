//! The dashboard, loaded in a real headless Chromium.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use rempart_gateway::server::RunningGateway;
use support::rabbit::{AMQP, Cleanup, unique_names};
use support::{client, closed_port, gateway, send, text, upstream};

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

    let dom = dashboard_dom(&gw).await;
    let row = |service: &str| row_of(&dom, service);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_services_deferred_jobs_beside_its_breaker() {
    let names = unique_names("dashboard");
    let _cleanup = Cleanup {
        names: names.clone(),
        max_attempts: 3,
    };
    // The upstream is down, so the upload is deferred; no embedded worker,
    // so the job stays in the work queue for the page to show.
    let gw = gateway(&format!(
        "[[services]]\nname = \"optimizer\"\nupstreams = [ \"http://{}\" ]\n\
         queue = {{ amqp_url = \"{AMQP}\", name = \"{}\", max_attempts = 3, worker = false }}\n\
         [[services]]\nname = \"users\"\nupstreams = [ \"http://{}\" ]\n\
         [[routes]]\npath_prefix = \"/optimize\"\nservice = \"optimizer\"\nqueue_methods = [\"POST\"]\n",
        closed_port(),
        names.work,
        closed_port(),
    ))
    .await;
    let upload = Request::post(format!("http://{}/optimize", gw.addr))
        .body(Full::new(Bytes::from_static(b"image")))
        .unwrap();
    let answer = send(&client(), upload).await;
    assert_eq!(answer.status, 202, "{}", answer.body);

    let dom = dashboard_dom(&gw).await;
    let optimizer = row_of(&dom, "optimizer");
    assert!(optimizer.contains("data-jobs-queued=\"1\""), "{optimizer}");
    assert!(optimizer.contains("data-jobs-waiting=\"1\""), "{optimizer}");
    assert!(optimizer.contains("data-jobs-in-dlq=\"0\""), "{optimizer}");
    // A service without a queue shows none.
    let users = row_of(&dom, "users");
    assert!(!users.contains("data-jobs-queued"), "{users}");
    gw.shutdown().await;
}

/// The dashboard page of `gw` as headless Chromium renders it, after its
/// first fetch of `/status`.
async fn dashboard_dom(gw: &RunningGateway) -> String {
    let url = format!("http://{}/dashboard", gw.admin_addr);
    let profile = std::env::temp_dir().join(format!(
        "rempart-chromium-{}-{}",
        std::process::id(),
        gw.admin_addr.port()
    ));
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
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("data-service="),
        "no service rows in\n{dom}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

/// The table row of `service` in a dumped page.
fn row_of(dom: &str, service: &str) -> String {
    let start = dom
        .find(&format!("data-service=\"{service}\""))
        .unwrap_or_else(|| panic!("no row for {service} in\n{dom}"));
    let end = dom[start..].find("</tr>").map_or(dom.len(), |e| start + e);
    dom[start..end].to_owned()
}
