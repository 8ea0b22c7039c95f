//! The shipped Grafana dashboard queries metrics the gateway really exposes.

mod support;

use support::{client, gateway, get, text, upstream};

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
    assert_eq!(exprs.len(), 6);

    let up = upstream(|_| async { text(500, "boom") }).await;
    let gw = gateway(&format!(
        "[[services]]\nname = \"reporting\"\nupstreams = [ \"http://{up}\" ]\n\
         [[routes]]\npath_prefix = \"/\"\nservice = \"reporting\"\n"
    ))
    .await;
    let c = client();
    get(&c, format!("http://{}/r", gw.addr)).await;
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
    assert!(checked >= 6, "found only {checked} metric names");
    gw.shutdown().await;
}
