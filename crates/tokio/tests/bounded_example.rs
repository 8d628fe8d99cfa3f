//! The bounded example, served on localhost and exercised over real HTTP: a finished answer
//! lingers for a late request, and the byte budget of lingering answers evicts the oldest.

#[path = "../examples/bounded.rs"]
#[allow(dead_code)]
mod bounded;

/// reqwest, in a workspace build, has the gateway's rustls without a default crypto provider.
fn tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

/// `GET /ask?{prompt}`: the request's role and the whole answer.
async fn ask(base: &str, prompt: &str) -> (String, String) {
    let response = reqwest::get(format!("{base}/ask?{prompt}")).await.unwrap().error_for_status().unwrap();
    let role = response.headers()["x-streamflight-role"].to_str().unwrap().to_owned();
    (role, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_answers_linger_within_the_byte_budget_the_oldest_evicted_first() {
    tls_provider();
    // An answer to a 9-letter prompt weighs 4 * 10 = 40 bytes: two fit in 100, not three.
    let base = serve(bounded::app(100)).await;
    let answer = |prompt: &str| format!("{prompt}\n").repeat(4);
    let (a, b, c) = ("aaaaaaaaa", "bbbbbbbbb", "ccccccccc");
    assert_eq!(ask(&base, a).await, ("leader".into(), answer(a)));
    assert_eq!(ask(&base, a).await, ("joiner".into(), answer(a)), "the answer lingers, whole");
    assert_eq!(ask(&base, b).await, ("leader".into(), answer(b)));
    assert_eq!(ask(&base, c).await, ("leader".into(), answer(c)));
    let stats = reqwest::get(format!("{base}/stats")).await.unwrap().text().await.unwrap();
    assert_eq!(stats, "flights 3 lingered 1 evicted 1\n", "the third answer evicted the first");
    assert_eq!(ask(&base, b).await.0, "joiner", "the newer answers still linger");
    assert_eq!(ask(&base, c).await.0, "joiner");
    assert_eq!(ask(&base, a).await, ("leader".into(), answer(a)), "the evicted one is asked again");
}
