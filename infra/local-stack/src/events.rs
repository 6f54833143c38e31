//! Builds Lambda events exactly as the services deliver them (the JSON payloads), then reads
//! them into `aws_lambda_events` types, so handlers see what they would see in AWS.

use aws_lambda_events::apigw::{
    ApiGatewayV2CustomAuthorizerV2Request, ApiGatewayV2httpRequest, ApiGatewayV2httpResponse,
};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::event::dynamodb::Event as DynamoDbEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use base64::Engine;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "000000000000";

/// An HTTP request as it reaches API Gateway.
#[derive(Clone, Debug, Default)]
pub struct HttpRequest {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub query: String,
    /// Header names in any case; repeated headers are joined with commas, as API Gateway does.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

fn headers_json(req: &HttpRequest) -> Map<String, Value> {
    let mut h: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &req.headers {
        h.entry(k.to_ascii_lowercase())
            .and_modify(|e| {
                e.push(',');
                e.push_str(v);
            })
            .or_insert_with(|| v.clone());
    }
    h.into_iter().map(|(k, v)| (k, Value::String(v))).collect()
}

fn query_json(query: &str) -> Map<String, Value> {
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        m.entry(k.to_owned())
            .and_modify(|e| {
                e.push(',');
                e.push_str(v);
            })
            .or_insert_with(|| v.to_owned());
    }
    m.into_iter().map(|(k, v)| (k, Value::String(v))).collect()
}

fn request_context(
    req: &HttpRequest,
    route_key: &str,
    request_id: &str,
    authorizer: Option<&Value>,
) -> Value {
    let now = chrono::Utc::now();
    let user_agent = req
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("user-agent"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let mut ctx = json!({
        "accountId": ACCOUNT, "apiId": "local", "domainName": "127.0.0.1", "domainPrefix": "127",
        "http": {"method": req.method, "path": req.path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": user_agent},
        "requestId": request_id, "routeKey": route_key, "stage": "$default",
        "time": now.format("%d/%b/%Y:%H:%M:%S +0000").to_string(), "timeEpoch": now.timestamp_millis()
    });
    if let Some(a) = authorizer {
        ctx["authorizer"] = json!({ "lambda": a });
    }
    ctx
}

fn is_text(req: &HttpRequest) -> bool {
    let ct = req
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.to_ascii_lowercase())
        .unwrap_or_default();
    (ct.is_empty() || ct.starts_with("text/") || ct.contains("json") || ct.contains("xml"))
        && std::str::from_utf8(&req.body).is_ok()
}

/// Payload format 2.0 for a matched route.
pub fn http_api_request(
    req: &HttpRequest,
    route_key: &str,
    path_parameters: &BTreeMap<String, String>,
    request_id: &str,
    authorizer: Option<&Value>,
) -> ApiGatewayV2httpRequest {
    let mut v = json!({
        "version": "2.0", "routeKey": route_key, "rawPath": req.path, "rawQueryString": req.query,
        "headers": headers_json(req),
        "requestContext": request_context(req, route_key, request_id, authorizer),
        "isBase64Encoded": false
    });
    let q = query_json(&req.query);
    if !q.is_empty() {
        v["queryStringParameters"] = Value::Object(q);
    }
    if !path_parameters.is_empty() {
        v["pathParameters"] = json!(path_parameters);
    }
    if !req.body.is_empty() {
        if is_text(req) {
            v["body"] = Value::String(String::from_utf8_lossy(&req.body).into_owned());
        } else {
            v["body"] = Value::String(base64::engine::general_purpose::STANDARD.encode(&req.body));
            v["isBase64Encoded"] = Value::Bool(true);
        }
    }
    serde_json::from_value(v).expect("payload 2.0 shape")
}

/// The Lambda authorizer's request (payload 2.0) for a route guarded by `Authorization`.
pub fn authorizer_request(
    req: &HttpRequest,
    route_key: &str,
    path_parameters: &BTreeMap<String, String>,
    request_id: &str,
    identity: &str,
) -> ApiGatewayV2CustomAuthorizerV2Request {
    let v = json!({
        "version": "2.0", "type": "REQUEST",
        "routeArn": format!("arn:aws:execute-api:{REGION}:{ACCOUNT}:local/$default/{}{}", req.method, req.path),
        "identitySource": [identity], "routeKey": route_key, "rawPath": req.path, "rawQueryString": req.query,
        "headers": headers_json(req), "queryStringParameters": query_json(&req.query),
        "pathParameters": path_parameters,
        "requestContext": request_context(req, route_key, request_id, None)
    });
    serde_json::from_value(v).expect("authorizer 2.0 shape")
}

/// What API Gateway sends back for a function's response.
pub fn http_response(resp: ApiGatewayV2httpResponse) -> HttpResponse {
    let mut headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let body = match resp.body {
        Some(Body::Text(t)) if resp.is_base64_encoded => base64::engine::general_purpose::STANDARD
            .decode(t)
            .unwrap_or_default(),
        Some(Body::Text(t)) => t.into_bytes(),
        Some(Body::Binary(b)) => b,
        _ => Vec::new(),
    };
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        && !body.is_empty()
    {
        headers.push(("content-type".into(), "application/json".into()));
    }
    HttpResponse {
        status: u16::try_from(resp.status_code).unwrap_or(502),
        headers,
        body,
    }
}

/// An SQS event from received messages, as the event source mapping delivers it.
pub fn sqs_event(queue_arn: &str, messages: &[aws_sdk_sqs::types::Message]) -> SqsEvent {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attrs: Map<String, Value> = m
                .attributes()
                .map(|a| a.iter().map(|(k, v)| (k.as_str().to_owned(), Value::String(v.clone()))).collect())
                .unwrap_or_default();
            let message_attributes: Map<String, Value> = m
                .message_attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| {
                            (k.clone(), json!({"stringValue": v.string_value(), "dataType": v.data_type(), "stringListValues": [], "binaryListValues": []}))
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
                "attributes": attrs, "messageAttributes": message_attributes, "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": REGION
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).expect("SQS event shape")
}

/// DynamoDB JSON of a stream attribute value.
pub fn attribute_json(v: &aws_sdk_dynamodbstreams::types::AttributeValue) -> Value {
    use aws_sdk_dynamodbstreams::types::AttributeValue as A;
    let b64 = |b: &aws_sdk_dynamodbstreams::primitives::Blob| {
        base64::engine::general_purpose::STANDARD.encode(b.as_ref())
    };
    match v {
        A::S(s) => json!({"S": s}),
        A::N(n) => json!({"N": n}),
        A::B(b) => json!({"B": b64(b)}),
        A::Bool(b) => json!({"BOOL": b}),
        A::Null(b) => json!({"NULL": b}),
        A::Ss(s) => json!({"SS": s}),
        A::Ns(s) => json!({"NS": s}),
        A::Bs(s) => json!({"BS": s.iter().map(b64).collect::<Vec<_>>()}),
        A::L(l) => json!({"L": l.iter().map(attribute_json).collect::<Vec<_>>()}),
        A::M(m) => {
            json!({"M": m.iter().map(|(k, v)| (k.clone(), attribute_json(v))).collect::<Map<_, _>>()})
        }
        _ => Value::Null,
    }
}

fn image(
    m: Option<&std::collections::HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>>,
) -> Option<Value> {
    m.map(|m| {
        Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), attribute_json(v)))
                .collect(),
        )
    })
}

/// A stream record in the shape Lambda delivers (and matches filters against).
pub fn stream_record_json(stream_arn: &str, r: &aws_sdk_dynamodbstreams::types::Record) -> Value {
    let d = r.dynamodb();
    let mut change = json!({
        "Keys": image(d.and_then(|d| d.keys.as_ref())).unwrap_or(json!({})),
        "SequenceNumber": d.and_then(|d| d.sequence_number()),
        "SizeBytes": d.and_then(|d| d.size_bytes()).unwrap_or(0),
        "StreamViewType": d.and_then(|d| d.stream_view_type()).map(|v| v.as_str().to_owned()),
        "ApproximateCreationDateTime": d.and_then(|d| d.approximate_creation_date_time()).map(|t| t.secs()).unwrap_or(0),
    });
    if let Some(img) = image(d.and_then(|d| d.new_image.as_ref())) {
        change["NewImage"] = img;
    }
    if let Some(img) = image(d.and_then(|d| d.old_image.as_ref())) {
        change["OldImage"] = img;
    }
    json!({
        "eventID": r.event_id(), "eventName": r.event_name().map(|e| e.as_str().to_owned()),
        "eventVersion": r.event_version().unwrap_or("1.1"), "eventSource": "aws:dynamodb",
        "awsRegion": REGION, "eventSourceARN": stream_arn, "dynamodb": change
    })
}

pub fn stream_event(records: Vec<Value>) -> DynamoDbEvent {
    serde_json::from_value(json!({ "Records": records })).expect("DynamoDB stream event shape")
}
