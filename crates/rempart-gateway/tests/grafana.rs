//! The shipped Grafana dashboard queries metrics the gateway really exposes.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::rabbit::{AMQP, Cleanup, unique_names};
use support::{client, closed_port, gateway, get, send, text, upstream};

#[tokio::test]
async fn every_metric_the_grafana_dashboard_queries_is_exposed_by_the_gateway() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/grafana-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(exprs.len(), 12);

    // A service that fails, and one that defers to a queue (its upstream is
    // down), so that the breaker's and the jobs' series all exist.
    let up = upstream(|_| async { text(500, "boom") }).await;
    let names = unique_names("grafana");
    let _cleanup = Cleanup {
        names: names.clone(),
        max_attempts: 3,
    };
    let gw = gateway(&format!(
        "[[services]]\nname = \"reporting\"\nupstreams = [ \"http://{up}\" ]\n\
         [[services]]\nname = \"optimizer\"\nupstreams = [ \"http://{}\" ]\n\
         queue = {{ amqp_url = \"{AMQP}\", name = \"{}\", max_attempts = 3, worker = false }}\n\
         [[routes]]\npath_prefix = \"/optimize\"\nservice = \"optimizer\"\nqueue_methods = [\"POST\"]\n\
         [[routes]]\npath_prefix = \"/\"\nservice = \"reporting\"\n",
        closed_port(),
        names.work,
    ))
    .await;
    let c = client();
    get(&c, format!("http://{}/r", gw.addr)).await;
    let upload = Request::post(format!("http://{}/optimize", gw.addr))
        .body(Full::new(Bytes::from_static(b"image")))
        .unwrap();
    assert_eq!(send(&c, upload).await.status, 202);
    let exposed = get(&c, format!("http://{}/metrics", gw.admin_addr))
        .await
        .body;
    // Metric names in the expressions: identifiers followed by `{` or `[`.
    let mut checked = 0;
    for expr in &exprs {
        for (i, _) in expr.match_indices(['{', '[']) {
            let name: String = expr[..i]
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if name.is_empty() || name.chars().next().unwrap().is_ascii_digit() {
                continue;
            }
            checked += 1;
            assert!(
                exposed
                    .lines()
                    .any(|l| l.starts_with(&format!("{name}{{"))
                        || l.starts_with(&format!("{name} "))),
                "the dashboard queries {name}, which /metrics does not expose:\n{exposed}"
            );
        }
    }
    assert!(checked >= 12, "found only {checked} metric names");
    gw.shutdown().await;
}
