//! Least privilege you can read: every statement a function's policy grants names the resources
//! it needs (the table, its stream and index, the step-up queue, the partner queues' name
//! pattern, the function's own secrets), never `*`, and no action IAM does not have.
//!
//! Two views: `template.yaml` as written (every function's `Policies` and every explicit role's
//! inline policies), and the template as SAM expands it for CloudFormation
//! (`scripts/check_expanded_iam.py`, SAM's own translator), where the roles SAM generates and the
//! managed policies it attaches for event sources show: those are what deploys.

use serde_yaml::Value;

/// Actions that only exist account-wide: `*` is what IAM requires for them.
const ACCOUNT_WIDE: &[&str] = &[
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "cloudwatch:PutMetricData",
    "dynamodb:ListStreams",
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
        let role = match r.get("Type").and_then(Value::as_str) {
            Some("AWS::Serverless::Function") => false,
            Some("AWS::IAM::Role") => true,
            _ => continue,
        };
        let policies = r
            .get("Properties")
            .and_then(|p| p.get("Policies"))
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        for policy in &policies {
            // A role's inline policy holds its statements in a policy document.
            let document = if role {
                policy.get("PolicyDocument").unwrap_or(&Value::Null)
            } else {
                policy
            };
            let Some(statements) = document.get("Statement").and_then(Value::as_sequence) else {
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

/// Runs the expanded-template check on `template` (YAML text); (exit code, output).
fn check_expanded(template: &str) -> (i32, String) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let python = format!("{root}/.venv-tools/bin/python");
    assert!(
        std::path::Path::new(&python).exists(),
        "{python} is missing: scripts/test.sh installs SAM's translator there (make_venv)"
    );
    let dir = std::env::temp_dir().join(format!("iam-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("template.yaml");
    std::fs::write(&path, template).unwrap();
    let out = std::process::Command::new(&python)
        .arg(format!("{root}/scripts/check_expanded_iam.py"))
        .arg(&path)
        .output()
        .expect("python runs");
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn template_text() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).unwrap()
}

#[test]
fn what_sam_deploys_grants_no_wildcard_and_no_poller_policy() {
    let (code, out) = check_expanded(&template_text());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("7 roles"), "{out}");
}

#[test]
fn the_expanded_check_bites_on_sams_poller_policy_and_on_a_wildcard() {
    // Back to SAM's generated role for the step-up function: its SQS event brings AWS's poller
    // policy, which receives and deletes on every queue.
    let t = template_text().replace(
        "      Role: !GetAtt StepUpCompletionRole.Arn\n",
        "      Policies:\n        - Statement:\n            - Effect: Allow\n              Action: [sqs:SendMessage]\n              Resource: \"*\"\n",
    );
    assert_ne!(t, template_text(), "the step-up function names its role");
    let (code, out) = check_expanded(&t);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("AWSLambdaSQSQueueExecutionRole"), "{out}");
    assert!(out.contains("Resource * for sqs:SendMessage"), "{out}");
}

#[test]
fn the_secrets_extension_layer_comes_from_each_regions_own_publisher() {
    let t = template();
    let map = t["Mappings"]["SecretsExtension"]
        .as_mapping()
        .expect("a SecretsExtension mapping");
    assert!(map.len() >= 20, "{} regions", map.len());
    let mut accounts = std::collections::BTreeSet::new();
    for (region, v) in map {
        let region = region.as_str().unwrap();
        let parts: Vec<&str> = region.split('-').collect();
        assert!(
            parts.len() == 3 && parts[2].chars().all(|c| c.is_ascii_digit()),
            "{region} is not a region name"
        );
        let account = v["Account"].as_str().unwrap_or_default();
        assert!(
            account.len() == 12 && account.chars().all(|c| c.is_ascii_digit()),
            "{region}: {account:?} is not an account id"
        );
        accounts.insert(account.to_owned());
    }
    assert_eq!(
        accounts.len(),
        map.len(),
        "each region has its own publisher"
    );
    assert_eq!(map[&Value::from("us-east-1")]["Account"], "177933569100");
    // Every function's layer is built from the mapping (or an explicit override), for the region
    // it deploys to, and for the architecture it is built for.
    let layers = serde_yaml::to_string(&t["Globals"]["Function"]["Layers"]).unwrap();
    for needed in [
        "SecretsExtension",
        "AWS::Region",
        "HasExtensionPublisher",
        "AWS-Parameters-and-Secrets-Lambda-Extension-Arm64",
    ] {
        assert!(layers.contains(needed), "{needed} not in {layers}");
    }
    assert_eq!(t["Globals"]["Function"]["Architectures"][0], "arm64");
}
