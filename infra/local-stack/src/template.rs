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

/// The value a function's environment variable is given in the template.
#[derive(Clone, Debug, PartialEq)]
pub enum EnvValue {
    /// A plain value.
    Literal(String),
    /// `!Ref X`: a parameter or a resource.
    Ref(String),
    /// `!GetAtt X.Attr`.
    GetAtt(String, String),
    /// `!If [condition, then, else]`.
    If {
        condition: String,
        then: Box<EnvValue>,
        otherwise: Box<EnvValue>,
    },
    /// `!Ref AWS::NoValue`: the variable is absent.
    NoValue,
    /// Anything else (`!Sub`, `!Join`, ...), as written.
    Unsupported(String),
}

/// A Lambda function of the template, as the local stack runs its binary.
#[derive(Clone, Debug)]
pub struct FunctionDef {
    pub logical_id: String,
    /// `Metadata.BuildProperties.Binary`: the cargo binary that is the function.
    pub binary: Option<String>,
    /// `Timeout` (seconds), from the function or `Globals`; Lambda's default is 3.
    pub timeout_secs: u64,
    /// `MemorySize` (MB), from the function or `Globals`; Lambda's default is 128.
    pub memory_mb: u64,
    /// Every environment variable the function gets, `Globals` first, then its own (which win).
    pub env: Vec<(String, EnvValue)>,
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
    /// Environment variable names each function gets (`Globals` and its own).
    pub function_env: BTreeMap<String, Vec<String>>,
    /// Every function by logical id: binary, timeout, memory and environment.
    pub functions: BTreeMap<String, FunctionDef>,
    /// `Conditions`, as written (evaluated by [`Template::resolve_env`]).
    pub conditions: BTreeMap<String, Value>,
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

/// The `!Fn [args]` / `{"Fn::Fn": [args]}` form of an intrinsic function, if `v` is one.
fn intrinsic<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    match v {
        Value::Tagged(t) if t.tag == name => Some(&t.value),
        Value::Mapping(m) if m.len() == 1 => match name {
            "Ref" | "Condition" => m.get(name),
            _ => m.get(format!("Fn::{name}").as_str()),
        },
        _ => None,
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Reads an environment variable's value expression.
pub fn env_value(v: &Value) -> EnvValue {
    if let Some(s) = scalar(v) {
        return EnvValue::Literal(s);
    }
    if let Some(r) = intrinsic(v, "Ref").and_then(Value::as_str) {
        return if r == "AWS::NoValue" {
            EnvValue::NoValue
        } else {
            EnvValue::Ref(r.to_owned())
        };
    }
    if let Some(g) = intrinsic(v, "GetAtt") {
        let parts: Vec<String> = match g {
            Value::String(s) => s.splitn(2, '.').map(str::to_owned).collect(),
            Value::Sequence(s) => s.iter().filter_map(scalar).collect(),
            _ => Vec::new(),
        };
        if let [res, attr] = parts.as_slice() {
            return EnvValue::GetAtt(res.clone(), attr.clone());
        }
    }
    if let Some(Value::Sequence(args)) = intrinsic(v, "If") {
        if let [Value::String(c), then, otherwise] = args.as_slice() {
            return EnvValue::If {
                condition: c.clone(),
                then: Box::new(env_value(then)),
                otherwise: Box::new(env_value(otherwise)),
            };
        }
    }
    EnvValue::Unsupported(
        serde_yaml::to_string(v)
            .unwrap_or_default()
            .trim()
            .to_owned(),
    )
}

fn env_vars(props: Option<&Value>) -> Vec<(String, EnvValue)> {
    props
        .and_then(|p| p.get("Environment"))
        .and_then(|e| e.get("Variables"))
        .and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), env_value(v))))
                .collect()
        })
        .unwrap_or_default()
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
        let mut functions = BTreeMap::new();
        let globals = doc.get("Globals").and_then(|g| g.get("Function"));
        let global_env = env_vars(globals);
        let global_timeout = int(globals.and_then(|g| g.get("Timeout")));
        let global_memory = int(globals.and_then(|g| g.get("MemorySize")));
        let conditions: BTreeMap<String, Value> = doc
            .get("Conditions")
            .and_then(Value::as_mapping)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.clone())))
                    .collect()
            })
            .unwrap_or_default();
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
                    let mut env = global_env.clone();
                    for (name, value) in env_vars(Some(&props)) {
                        env.retain(|(n, _)| *n != name);
                        env.push((name, value));
                    }
                    function_env.insert(id.clone(), env.iter().map(|(n, _)| n.clone()).collect());
                    functions.insert(
                        id.clone(),
                        FunctionDef {
                            logical_id: id.clone(),
                            binary: r
                                .get("Metadata")
                                .and_then(|m| m.get("BuildProperties"))
                                .and_then(|b| b.get("Binary"))
                                .and_then(Value::as_str)
                                .map(str::to_owned),
                            timeout_secs: int(props.get("Timeout"))
                                .or(global_timeout)
                                .unwrap_or(3)
                                .max(1) as u64,
                            memory_mb: int(props.get("MemorySize"))
                                .or(global_memory)
                                .unwrap_or(128)
                                .max(128) as u64,
                            env,
                        },
                    );
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
            functions,
            conditions,
        })
    }

    pub fn queue(&self, logical_id: &str) -> Option<&QueueDef> {
        self.queues.iter().find(|q| q.logical_id == logical_id)
    }

    /// The environment `function` gets, with every `!Ref` answered by `refs` (a parameter's
    /// value, a resource's name or URL; `None`: the caller cannot supply it) and every `!If`
    /// decided by the template's `Conditions`. Fails naming every variable that cannot be
    /// supplied, so a variable added to the template cannot be silently missing locally.
    pub fn resolve_env(
        &self,
        function: &str,
        refs: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, String)>, TemplateError> {
        let f = self
            .functions
            .get(function)
            .ok_or_else(|| shape(format!("no function {function}")))?;
        let mut out = Vec::new();
        let mut missing = Vec::new();
        for (name, value) in &f.env {
            match self.value(value, refs) {
                Ok(Some(v)) => out.push((name.clone(), v)),
                Ok(None) => {}
                Err(why) => missing.push(format!("{name} ({why})")),
            }
        }
        if missing.is_empty() {
            Ok(out)
        } else {
            Err(shape(format!(
                "the local stack cannot supply {function}'s environment: {}",
                missing.join(", ")
            )))
        }
    }

    /// `Ok(None)`: the variable is absent (`AWS::NoValue`).
    fn value(
        &self,
        v: &EnvValue,
        refs: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, String> {
        match v {
            EnvValue::Literal(s) => Ok(Some(s.clone())),
            EnvValue::NoValue => Ok(None),
            EnvValue::Ref(r) => refs(r)
                .map(Some)
                .ok_or_else(|| format!("no local value for !Ref {r}")),
            EnvValue::GetAtt(r, a) => refs(&format!("{r}.{a}"))
                .map(Some)
                .ok_or_else(|| format!("no local value for !GetAtt {r}.{a}")),
            EnvValue::If {
                condition,
                then,
                otherwise,
            } => {
                if self.condition(condition, refs, 0)? {
                    self.value(then, refs)
                } else {
                    self.value(otherwise, refs)
                }
            }
            EnvValue::Unsupported(s) => Err(format!("unsupported expression {s}")),
        }
    }

    fn condition(
        &self,
        name: &str,
        refs: &dyn Fn(&str) -> Option<String>,
        depth: u32,
    ) -> Result<bool, String> {
        let c = self
            .conditions
            .get(name)
            .ok_or_else(|| format!("no condition {name}"))?;
        self.truth(c, refs, depth)
    }

    fn truth(
        &self,
        c: &Value,
        refs: &dyn Fn(&str) -> Option<String>,
        depth: u32,
    ) -> Result<bool, String> {
        if depth > 16 {
            return Err("conditions nest too deep".into());
        }
        let args = |f: &str| intrinsic(c, f).and_then(Value::as_sequence);
        if let Some(a) = args("Not") {
            return Ok(!self.truth(a.first().ok_or("empty !Not")?, refs, depth + 1)?);
        }
        if let Some(a) = args("And") {
            for x in a {
                if !self.truth(x, refs, depth + 1)? {
                    return Ok(false);
                }
            }
            return Ok(true);
        }
        if let Some(a) = args("Or") {
            for x in a {
                if self.truth(x, refs, depth + 1)? {
                    return Ok(true);
                }
            }
            return Ok(false);
        }
        if let Some([x, y]) = args("Equals").map(Vec::as_slice) {
            let x = self.value(&env_value(x), refs)?;
            let y = self.value(&env_value(y), refs)?;
            return Ok(x == y);
        }
        if let Some(name) = intrinsic(c, "Condition").and_then(Value::as_str) {
            return self.condition(name, refs, depth + 1);
        }
        Err(format!(
            "unsupported condition {}",
            serde_yaml::to_string(c).unwrap_or_default().trim()
        ))
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

    #[test]
    fn functions_carry_binary_timeout_and_the_globals_environment() {
        let t = Template::parse(crate::TEMPLATE_YAML).unwrap();
        assert_eq!(t.functions.len(), 7);
        let api = &t.functions["PartnerApiFunction"];
        assert_eq!(api.binary.as_deref(), Some("partner-api"));
        assert_eq!(api.timeout_secs, 25);
        let names: Vec<&str> = api.env.iter().map(|(n, _)| n.as_str()).collect();
        for n in [
            "RUST_LOG",
            "TABLE_NAME",
            "DATA_KEY_SECRET_ID",
            "KLARNA_BASE_URL",
        ] {
            assert!(names.contains(&n), "{n} in {names:?}");
        }
        assert!(t.function_env["PartnerAuthFunction"].contains(&"TABLE_NAME".to_owned()));
        assert!(t
            .functions
            .values()
            .all(|f| f.binary.is_some() && f.timeout_secs >= 3));
    }

    #[test]
    fn the_environment_resolves_refs_and_conditions_or_names_what_is_missing() {
        let t = Template::parse(
            r#"
Parameters:
  Mtls: {Type: String, Default: ""}
Conditions:
  HasMtls: !Not [!Equals [!Ref Mtls, ""]]
Globals:
  Function:
    Timeout: 7
    Environment:
      Variables:
        TABLE_NAME: !Ref Table
Resources:
  Table: {Type: AWS::DynamoDB::Table, Properties: {}}
  Q: {Type: AWS::SQS::Queue, Properties: {}}
  F:
    Type: AWS::Serverless::Function
    Metadata: {BuildProperties: {Binary: f}}
    Properties:
      Environment:
        Variables:
          QUEUE: !Ref Q
          LITERAL: 3
          MTLS_SECRET_ID: !If [HasMtls, !Ref Mtls, !Ref AWS::NoValue]
          OTHER: !Ref Unknown
"#,
        )
        .unwrap();
        assert_eq!(t.functions["F"].timeout_secs, 7);
        let refs = |r: &str| match r {
            "Table" => Some("t1".to_owned()),
            "Q" => Some("https://q".to_owned()),
            "Mtls" => Some(String::new()),
            _ => None,
        };
        let err = t.resolve_env("F", &refs).unwrap_err().to_string();
        assert!(
            err.contains("OTHER (no local value for !Ref Unknown)"),
            "{err}"
        );
        let refs = |r: &str| refs(r).or_else(|| (r == "Unknown").then(|| "u".to_owned()));
        let env = t.resolve_env("F", &refs).unwrap();
        assert_eq!(
            env,
            [
                ("TABLE_NAME", "t1"),
                ("QUEUE", "https://q"),
                ("LITERAL", "3"),
                ("OTHER", "u")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let with_mtls = |r: &str| match r {
            "Mtls" => Some("mtls-id".to_owned()),
            other => refs(other),
        };
        let env = t.resolve_env("F", &with_mtls).unwrap();
        assert!(env.contains(&("MTLS_SECRET_ID".to_owned(), "mtls-id".to_owned())));
    }
}
