//! Shared test helpers: a kube-rs client for a fake server, through its kubeconfig.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use furynet_fake_apiserver::FakeApiServer;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub async fn client(server: &FakeApiServer) -> Client {
    let kc = Kubeconfig::from_yaml(&server.kubeconfig_yaml()).expect("kubeconfig parses");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(cfg).expect("client")
}

/// A client without kube's default retries of 429/503/504.
pub async fn client_no_retry(server: &FakeApiServer) -> Client {
    server.client().await.expect("client")
}

/// The API error a kube call failed with.
pub fn api_err<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> Box<kube::core::Status> {
    match r {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A raw request through the kube client (shapes as the server sends them).
pub async fn raw(client: &Client, method: &str, uri: &str, body: &str) -> serde_json::Value {
    raw_typed(client, method, uri, "application/json", body).await
}

/// A raw request with an explicit content type.
pub async fn raw_typed(
    client: &Client,
    method: &str,
    uri: &str,
    ctype: &str,
    body: &str,
) -> serde_json::Value {
    let req = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", ctype)
        .body(body.as_bytes().to_vec())
        .unwrap();
    let text = client.request_text(req).await.unwrap();
    serde_json::from_str(&text).unwrap()
}
