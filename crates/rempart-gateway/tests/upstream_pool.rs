//! The upstream client keeps connections alive and opens more only when busy.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::{client, gateway, get};
use tokio::net::TcpListener;

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let accepted = Arc::new(AtomicU32::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let gw = gateway(&format!(
        "[[services]]\nname = \"up\"\nupstreams = [ \"http://{up}\" ]\n[[routes]]\npath_prefix = \"/\"\nservice = \"up\"\n"
    ))
    .await;
    let c = client();
    for _ in 0..20 {
        assert_eq!(get(&c, format!("http://{}/x", gw.addr)).await.body, "ok");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one keep-alive connection for 20 requests in a row"
    );
    gw.shutdown().await;
}
