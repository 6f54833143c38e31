//! Least privilege you can read: every statement a function's policy grants names the resources
//! it needs (the table, its stream and index, the step-up queue, the partner queues' name
//! pattern, the function's own secrets), never `*`, and no action IAM does not have.
//!
//! This reads `template.yaml` as written. The roles SAM generates add AWS's managed execution
//! policies for the event sources (logs, X-Ray, the SQS poller, the stream reader); those are
//! AWS's and not checked here.

use serde_yaml::Value;

/// Actions that only exist account-wide: `*` is what IAM requires for them.
const ACCOUNT_WIDE: &[&str] = &[
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "cloudwatch:PutMetricData",
];

/// Name patterns that are scoped by a prefix this stack owns.
const SCOPED_PATTERNS: &[&str] = &[":klarna-partner-*"];

/// Not IAM actions: a policy naming them grants nothing (DynamoDB authorizes a transaction by
/// the item actions inside it), so it misleads whoever reads it.
const NOT_IAM_ACTIONS: &[&str] = &["dynamodb:TransactWriteItems", "dynamodb:TransactGetItems"];

/// The text of a resource: a plain string, or the string inside `!Sub`, `!GetAtt`, `!Ref`,
/// `!If` (both branches).
fn texts(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Sequence(items) => items.iter().for_each(|i| texts(i, out)),
        Value::Tagged(t) => texts(&t.value, out),
        Value::Mapping(m) => m.values().for_each(|i| texts(i, out)),
        _ => {}
    }
}

/// Every problem of the template's function policies, as `function: what`.
fn problems(template: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let Some(resources) = template.get("Resources").and_then(Value::as_mapping) else {
        return vec!["no Resources".into()];
    };
    for (name, r) in resources {
        let name = name.as_str().unwrap_or("?");
        if r.get("Type").and_then(Value::as_str) != Some("AWS::Serverless::Function") {
            continue;
        }
        let policies = r
            .get("Properties")
            .and_then(|p| p.get("Policies"))
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        for policy in &policies {
            let Some(statements) = policy.get("Statement").and_then(Value::as_sequence) else {
                found.push(format!("{name}: a policy that is not an inline statement list (a managed policy template may grant `*`)"));
                continue;
            };
            for st in statements {
                let mut actions = Vec::new();
                texts(st.get("Action").unwrap_or(&Value::Null), &mut actions);
                let mut res = Vec::new();
                texts(st.get("Resource").unwrap_or(&Value::Null), &mut res);
                for a in &actions {
                    if a == "*" || a.ends_with(":*") {
                        found.push(format!("{name}: wildcard action {a}"));
                    }
                    if NOT_IAM_ACTIONS.contains(&a.as_str()) {
                        found.push(format!("{name}: {a} is not an IAM action"));
                    }
                }
                let account_wide = actions.iter().all(|a| ACCOUNT_WIDE.contains(&a.as_str()));
                for r in res.iter().filter(|r| r.contains('*')) {
                    if r == "*" && account_wide {
                        continue;
                    }
                    if SCOPED_PATTERNS.iter().any(|p| r.ends_with(p)) {
                        continue;
                    }
                    found.push(format!("{name}: wildcard resource {r} for {actions:?}"));
                }
                if res.is_empty() {
                    found.push(format!("{name}: a statement without a resource"));
                }
            }
        }
    }
    found
}

fn template() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).expect("template.yaml")).expect("YAML")
}

#[test]
fn every_function_statement_names_its_resources() {
    let p = problems(&template());
    assert!(p.is_empty(), "{p:#?}");
}

#[test]
fn the_check_bites_on_a_wildcard_and_on_a_non_action() {
    let mut t = template();
    let policies = t["Resources"]["PartnerApiFunction"]["Properties"]["Policies"][0]["Statement"]
        .as_sequence_mut()
        .expect("partner-api has a statement list");
    policies.push(
        serde_yaml::from_str("{Effect: Allow, Action: [sqs:ReceiveMessage], Resource: \"*\"}")
            .unwrap(),
    );
    policies.push(
        serde_yaml::from_str(
            "{Effect: Allow, Action: [dynamodb:TransactWriteItems], Resource: arn:aws:dynamodb:eu-west-1:1:table/x}",
        )
        .unwrap(),
    );
    policies.push(
        serde_yaml::from_str(
            "{Effect: Allow, Action: [secretsmanager:GetSecretValue], Resource: !Sub 'arn:aws:secretsmanager:eu-west-1:1:secret:klarna-backend/*'}",
        )
        .unwrap(),
    );
    let p = problems(&t);
    assert_eq!(p.len(), 3, "{p:#?}");
    assert!(p[0].contains("wildcard resource *"), "{p:#?}");
    assert!(p[1].contains("not an IAM action"), "{p:#?}");
    assert!(p[2].contains("klarna-backend/*"), "{p:#?}");
}
