//! The fake Runtime API speaks the protocol `lambda_runtime` expects, and the probe's events are
//! the shapes the functions deserialize. Fast: no process is started, nothing is timed.

use aws_lambda_events::apigw::{ApiGatewayV2CustomAuthorizerV2Request, ApiGatewayV2httpRequest};
use aws_lambda_events::event::dynamodb::Event as DynamoDbEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use klarna_bench::fixtures;
use klarna_bench::runtime::{FakeRuntime, NEXT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.1 request on a fresh connection; returns the raw response.
async fn http(addr: std::net::SocketAddr, request: String) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn serves_events_and_collects_answers() {
    let rt = FakeRuntime::start(br#"{"hello":"world"}"#.to_vec(), 2, "f")
        .await
        .unwrap();
    let addr = rt.addr();
    for n in 0..2 {
        let next = http(
            addr,
            format!("GET {NEXT} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(next.starts_with("HTTP/1.1 200"), "{next}");
        assert!(next.contains(&format!("lambda-runtime-aws-request-id: bench-{n}")));
        assert!(next.contains("lambda-runtime-deadline-ms: "));
        assert!(next.ends_with(r#"{"hello":"world"}"#));
        let body = if n == 0 { "{\"ok\":1}" } else { "{\"ok\":2}" };
        let answer = http(
            addr,
            format!(
                "POST /2018-06-01/runtime/invocation/bench-{n}/response HTTP/1.1\r\nHost: x\r\n\
                 Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    }
    rt.finished().await;
    let o = rt.outcome();
    assert_eq!((o.responses, o.errors), (2, 0));
    assert_eq!(o.first_answer.as_deref(), Some("{\"ok\":1}"));
    assert!(rt.first_next().unwrap() <= rt.last_answer().unwrap());
}

#[test]
fn probe_events_are_the_shapes_the_functions_read() {
    for f in fixtures::fixtures() {
        let v = f.event.clone();
        let ok = match f.name {
            "partner-auth" => {
                serde_json::from_value::<ApiGatewayV2CustomAuthorizerV2Request>(v).is_ok()
            }
            "partner-api" | "klarna-webhook" | "token-lifecycle" => {
                serde_json::from_value::<ApiGatewayV2httpRequest>(v).is_ok()
            }
            "step-up-completion" => serde_json::from_value::<SqsEvent>(v).is_ok(),
            "partner-fanout" => serde_json::from_value::<DynamoDbEvent>(v).is_ok(),
            other => panic!("no shape for {other}"),
        };
        assert!(ok, "{} event does not deserialize", f.name);
    }
}
