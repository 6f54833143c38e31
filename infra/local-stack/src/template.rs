//! Reads the resources the local stack needs from `template.yaml`, the one source of truth:
//! the table's keys, stream and TTL, the queues and their redrive policies, the event source
//! mappings, and the HTTP routes with their authorization.

use serde_yaml::Value;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read template: {0}")]
    Read(String),
    #[error("template: {0}")]
    Shape(String),
}

#[derive(Clone, Debug)]
pub struct TableDef {
    pub logical_id: String,
    pub attributes: Vec<(String, String)>,
    pub key_schema: Vec<(String, String)>,
    pub stream_view_type: Option<String>,
    pub ttl_attribute: Option<String>,
    pub indexes: Vec<IndexDef>,
}

/// A global secondary index of the table.
#[derive(Clone, Debug)]
pub struct IndexDef {
    pub name: String,
    pub key_schema: Vec<(String, String)>,
    pub projection_type: String,
    pub non_key_attributes: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct QueueDef {
    pub logical_id: String,
    pub fifo: bool,
    pub visibility_timeout: Option<i64>,
    pub retention: Option<i64>,
    /// (logical id of the dead-letter queue, maxReceiveCount)
    pub redrive: Option<(String, i64)>,
}

#[derive(Clone, Debug)]
pub struct SqsMapping {
    pub function: String,
    pub queue: String,
    pub batch_size: i32,
    pub report_batch_item_failures: bool,
}

#[derive(Clone, Debug)]
pub struct StreamMapping {
    pub function: String,
    pub batch_size: i32,
    pub maximum_retry_attempts: u32,
    pub bisect_on_error: bool,
    pub on_failure_queue: Option<String>,
    pub filter_patterns: Vec<serde_json::Value>,
    pub report_batch_item_failures: bool,
}

#[derive(Clone, Debug)]
pub struct RouteDef {
    pub function: String,
    pub method: String,
    pub path: String,
    pub authorized: bool,
}

/// A function the template runs on a schedule (an EventBridge rule).
#[derive(Clone, Debug)]
pub struct ScheduleDef {
    pub function: String,
    /// The rule's expression as written (`rate(...)`, possibly with `${...}` parameters).
    pub expression: String,
    pub input: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Template {
    pub table: TableDef,
    pub queues: Vec<QueueDef>,
    pub schedules: Vec<ScheduleDef>,
    pub sqs_mappings: Vec<SqsMapping>,
    pub stream_mappings: Vec<StreamMapping>,
    pub routes: Vec<RouteDef>,
    pub authorizer_function: Option<String>,
    /// Environment variables each function declares (names only matter locally).
    pub function_env: BTreeMap<String, Vec<String>>,
}

fn shape(msg: impl Into<String>) -> TemplateError {
    TemplateError::Shape(msg.into())
}

/// The logical id a `!Ref X` / `!GetAtt X.Attr` points at.
fn reference(v: &Value) -> Option<String> {
    match v {
        Value::Tagged(t) => match t.tag.to_string().as_str() {
            "!Ref" => t.value.as_str().map(str::to_owned),
            "!GetAtt" => match &t.value {
                Value::String(s) => s.split('.').next().map(str::to_owned),
                Value::Sequence(s) => s.first().and_then(Value::as_str).map(str::to_owned),
                _ => None,
            },
            _ => None,
        },
        Value::Mapping(m) => m
            .get("Ref")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| {
                m.get("Fn::GetAtt").and_then(|g| match g {
                    Value::String(s) => s.split('.').next().map(str::to_owned),
                    Value::Sequence(s) => s.first().and_then(Value::as_str).map(str::to_owned),
                    _ => None,
                })
            }),
        _ => None,
    }
}

fn int(v: Option<&Value>) -> Option<i64> {
    v.and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
}

impl Template {
    pub fn load(path: &std::path::Path) -> Result<Self, TemplateError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TemplateError::Read(format!("{}: {e}", path.display())))?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let doc: Value =
            serde_yaml::from_str(text).map_err(|e| TemplateError::Read(e.to_string()))?;
        let resources = doc
            .get("Resources")
            .and_then(Value::as_mapping)
            .ok_or_else(|| shape("no Resources"))?;
        let mut table = None;
        let mut queues = Vec::new();
        let mut schedules = Vec::new();
        let mut sqs_mappings = Vec::new();
        let mut stream_mappings = Vec::new();
        let mut routes = Vec::new();
        let mut function_env = BTreeMap::new();
        let mut authorizer_function = None;
        let default_authorizer = resources
            .values()
            .find(|r| r.get("Type").and_then(Value::as_str) == Some("AWS::Serverless::HttpApi"))
            .and_then(|api| {
                let auth = api.get("Properties")?.get("Auth")?;
                let name = auth.get("DefaultAuthorizer")?.as_str()?;
                let f = auth.get("Authorizers")?.get(name)?.get("FunctionArn")?;
                authorizer_function = reference(f);
                Some(name.to_owned())
            });
        for (id, r) in resources {
            let id = id
                .as_str()
                .ok_or_else(|| shape("non-string logical id"))?
                .to_owned();
            let props = r.get("Properties").cloned().unwrap_or(Value::Null);
            match r.get("Type").and_then(Value::as_str) {
                Some("AWS::DynamoDB::Table") => {
                    let pairs = |key: &str, a: &str, b: &str| -> Vec<(String, String)> {
                        props
                            .get(key)
                            .and_then(Value::as_sequence)
                            .map(|s| {
                                s.iter()
                                    .filter_map(|d| {
                                        Some((
                                            d.get(a)?.as_str()?.to_owned(),
                                            d.get(b)?.as_str()?.to_owned(),
                                        ))
                                    })
                                    .collect()
                            })
                            .unwrap_or_default()
                    };
                    let indexes = props
                        .get("GlobalSecondaryIndexes")
                        .and_then(Value::as_sequence)
                        .map(|s| s.iter().filter_map(index_def).collect())
                        .unwrap_or_default();
                    table = Some(TableDef {
                        indexes,
                        logical_id: id.clone(),
                        attributes: pairs("AttributeDefinitions", "AttributeName", "AttributeType"),
                        key_schema: pairs("KeySchema", "AttributeName", "KeyType"),
                        stream_view_type: props
                            .get("StreamSpecification")
                            .and_then(|s| s.get("StreamViewType"))
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        ttl_attribute: props
                            .get("TimeToLiveSpecification")
                            .and_then(|s| s.get("AttributeName"))
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                    });
                }
                Some("AWS::SQS::Queue") => {
                    let redrive = props.get("RedrivePolicy").and_then(|rp| {
                        Some((
                            reference(rp.get("deadLetterTargetArn")?)?,
                            int(rp.get("maxReceiveCount"))?,
                        ))
                    });
                    queues.push(QueueDef {
                        logical_id: id.clone(),
                        fifo: props
                            .get("FifoQueue")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                        visibility_timeout: int(props.get("VisibilityTimeout")),
                        retention: int(props.get("MessageRetentionPeriod")),
                        redrive,
                    });
                }
                Some("AWS::Serverless::Function") => {
                    let env: Vec<String> = props
                        .get("Environment")
                        .and_then(|e| e.get("Variables"))
                        .and_then(Value::as_mapping)
                        .map(|m| {
                            m.keys()
                                .filter_map(|k| k.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    function_env.insert(id.clone(), env);
                    let Some(events) = props.get("Events").and_then(Value::as_mapping) else {
                        continue;
                    };
                    for ev in events.values() {
                        let p = ev.get("Properties").cloned().unwrap_or(Value::Null);
                        let response_types = |p: &Value| {
                            p.get("FunctionResponseTypes")
                                .and_then(Value::as_sequence)
                                .is_some_and(|s| {
                                    s.iter()
                                        .any(|v| v.as_str() == Some("ReportBatchItemFailures"))
                                })
                        };
                        match ev.get("Type").and_then(Value::as_str) {
                            Some("HttpApi") => {
                                let authorized = default_authorizer.is_some()
                                    && p.get("Auth")
                                        .and_then(|a| a.get("Authorizer"))
                                        .and_then(Value::as_str)
                                        != Some("NONE");
                                routes.push(RouteDef {
                                    function: id.clone(),
                                    method: p
                                        .get("Method")
                                        .and_then(Value::as_str)
                                        .unwrap_or("ANY")
                                        .to_uppercase(),
                                    path: p
                                        .get("Path")
                                        .and_then(Value::as_str)
                                        .ok_or_else(|| shape("route without Path"))?
                                        .to_owned(),
                                    authorized,
                                });
                            }
                            Some("SQS") => sqs_mappings.push(SqsMapping {
                                function: id.clone(),
                                queue: p
                                    .get("Queue")
                                    .and_then(reference)
                                    .ok_or_else(|| shape("SQS event without Queue"))?,
                                batch_size: int(p.get("BatchSize")).unwrap_or(10) as i32,
                                report_batch_item_failures: response_types(&p),
                            }),
                            Some("DynamoDB") => {
                                let filter_patterns = p
                                    .get("FilterCriteria")
                                    .and_then(|f| f.get("Filters"))
                                    .and_then(Value::as_sequence)
                                    .map(|fs| {
                                        fs.iter()
                                            .filter_map(|f| {
                                                serde_json::from_str(f.get("Pattern")?.as_str()?)
                                                    .ok()
                                            })
                                            .collect()
                                    })
                                    .unwrap_or_default();
                                stream_mappings.push(StreamMapping {
                                    function: id.clone(),
                                    batch_size: int(p.get("BatchSize")).unwrap_or(100) as i32,
                                    maximum_retry_attempts: int(p.get("MaximumRetryAttempts"))
                                        .unwrap_or(-1)
                                        .max(0)
                                        as u32,
                                    bisect_on_error: p
                                        .get("BisectBatchOnFunctionError")
                                        .and_then(Value::as_bool)
                                        .unwrap_or(false),
                                    on_failure_queue: p
                                        .get("DestinationConfig")
                                        .and_then(|d| d.get("OnFailure"))
                                        .and_then(|o| o.get("Destination"))
                                        .and_then(reference),
                                    filter_patterns,
                                    report_batch_item_failures: response_types(&p),
                                });
                            }
                            Some("Schedule" | "ScheduleV2") => {
                                let expression = p
                                    .get("Schedule")
                                    .or_else(|| p.get("ScheduleExpression"))
                                    .and_then(|v| {
                                        v.as_str().map(str::to_owned).or_else(|| {
                                            // `!Sub "..."` parses as a tagged string.
                                            match v {
                                                Value::Tagged(t) => {
                                                    t.value.as_str().map(str::to_owned)
                                                }
                                                _ => None,
                                            }
                                        })
                                    })
                                    .ok_or_else(|| shape("Schedule event without Schedule"))?;
                                schedules.push(ScheduleDef {
                                    function: id.clone(),
                                    expression,
                                    input: p
                                        .get("Input")
                                        .and_then(Value::as_str)
                                        .map(str::to_owned),
                                });
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(Template {
            table: table.ok_or_else(|| shape("no AWS::DynamoDB::Table"))?,
            queues,
            schedules,
            sqs_mappings,
            stream_mappings,
            routes,
            authorizer_function,
            function_env,
        })
    }

    pub fn queue(&self, logical_id: &str) -> Option<&QueueDef> {
        self.queues.iter().find(|q| q.logical_id == logical_id)
    }
}

/// Lambda event filtering for the subset of patterns the template uses: exact values and
/// `{"prefix": ...}` inside arrays, nested objects.
pub fn matches_pattern(pattern: &serde_json::Value, event: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match pattern {
        J::Object(fields) => fields.iter().all(|(k, p)| match event.get(k) {
            Some(v) => matches_pattern(p, v),
            None => false,
        }),
        J::Array(alternatives) => alternatives.iter().any(|alt| match alt {
            J::Object(o) if o.contains_key("prefix") => {
                let prefix = o.get("prefix").and_then(J::as_str).unwrap_or("");
                event.as_str().is_some_and(|s| s.starts_with(prefix))
            }
            other => other == event,
        }),
        other => other == event,
    }
}

/// One entry of `GlobalSecondaryIndexes`.
fn index_def(v: &Value) -> Option<IndexDef> {
    let key_schema = v
        .get("KeySchema")?
        .as_sequence()?
        .iter()
        .filter_map(|k| {
            Some((
                k.get("AttributeName")?.as_str()?.to_owned(),
                k.get("KeyType")?.as_str()?.to_owned(),
            ))
        })
        .collect();
    let projection = v.get("Projection");
    Some(IndexDef {
        name: v.get("IndexName")?.as_str()?.to_owned(),
        key_schema,
        projection_type: projection
            .and_then(|p| p.get("ProjectionType"))
            .and_then(Value::as_str)
            .unwrap_or("ALL")
            .to_owned(),
        non_key_attributes: projection
            .and_then(|p| p.get("NonKeyAttributes"))
            .and_then(Value::as_sequence)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p: serde_json::Value = serde_json::from_str(
            r#"{"eventName":["INSERT"],"dynamodb":{"Keys":{"pk":{"S":[{"prefix":"OUTBOX#"}]}}}}"#,
        )
        .unwrap();
        let yes = serde_json::json!({"eventName":"INSERT","dynamodb":{"Keys":{"pk":{"S":"OUTBOX#p#g"},"sk":{"S":"1"}}}});
        let modify =
            serde_json::json!({"eventName":"MODIFY","dynamodb":{"Keys":{"pk":{"S":"OUTBOX#p#g"}}}});
        let other =
            serde_json::json!({"eventName":"INSERT","dynamodb":{"Keys":{"pk":{"S":"PARTNER#p"}}}});
        assert!(matches_pattern(&p, &yes));
        assert!(!matches_pattern(&p, &modify));
        assert!(!matches_pattern(&p, &other));
    }

    #[test]
    fn reads_the_project_template() {
        let t = Template::parse(crate::TEMPLATE_YAML).unwrap();
        assert_eq!(
            t.table.stream_view_type.as_deref(),
            Some("NEW_AND_OLD_IMAGES")
        );
        assert_eq!(t.table.ttl_attribute.as_deref(), Some("ttl"));
        let q = t.queue("StepUpQueue").unwrap();
        assert_eq!(
            q.redrive.as_ref().map(|r| r.0.as_str()),
            Some("StepUpDeadLetterQueue")
        );
        assert!(t.sqs_mappings.iter().all(|m| m.report_batch_item_failures));
        let s = &t.stream_mappings[0];
        assert!(s.report_batch_item_failures && s.bisect_on_error && s.maximum_retry_attempts > 0);
        assert_eq!(s.on_failure_queue.as_deref(), Some("FanoutFailureQueue"));
        let webhook = t
            .routes
            .iter()
            .find(|r| r.path == "/webhooks/klarna")
            .unwrap();
        assert!(!webhook.authorized);
        assert!(t
            .routes
            .iter()
            .filter(|r| r.path.starts_with("/v1/"))
            .all(|r| r.authorized));
        assert_eq!(
            t.authorizer_function.as_deref(),
            Some("PartnerAuthFunction")
        );
    }
}
