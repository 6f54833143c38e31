"""Least privilege over what deploys: expands the SAM template as CloudFormation will (SAM's own
translator, offline) and fails on any IAM grant wider than the stack needs.

    .venv-tools/bin/python scripts/check_expanded_iam.py template.yaml

Checked in every role the expanded template holds (SAM's generated ones and the template's own):
- a managed policy other than the two every function gets (CloudWatch Logs, X-Ray), e.g. the
  SQS or DynamoDB poller policies SAM adds for event sources, whose resource is `*`;
- an inline statement whose resource is `*` for an action that has resources (only actions IAM
  defines account-wide may name `*`);
- an action that is not an IAM action (it grants nothing and misleads).
Exit 1 with one line per problem; 0 when there is none.
"""
import os
import sys

# The translator resolves ARNs with a region; any will do for checking grants.
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

# What SAM attaches to every function's role: logs to CloudWatch, traces to X-Ray.
ALLOWED_MANAGED = ("service-role/AWSLambdaBasicExecutionRole", "AWSXrayWriteOnlyAccess")
# Actions IAM defines without a resource type: `*` is the only resource they can have.
ACCOUNT_WIDE = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "cloudwatch:PutMetricData",
    "dynamodb:ListStreams",
}
NOT_IAM_ACTIONS = {"dynamodb:TransactWriteItems", "dynamodb:TransactGetItems"}


class NoManagedPolicies:
    """The translator's loader of managed-policy names; this template names none."""

    def load(self):
        return {}


def expand(path):
    template = yaml_parse(open(path).read())
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") == "AWS::Serverless::Function":
            # What `sam package` puts there; the translator insists on an S3 location.
            resource["Properties"]["CodeUri"] = "s3://bucket/key"
    return transform(template, {}, NoManagedPolicies())


def as_list(v):
    return v if isinstance(v, list) else [v]


def managed_name(arn):
    if isinstance(arn, dict):
        arn = arn.get("Fn::Sub", "")
        if isinstance(arn, list):
            arn = arn[0]
    return str(arn).split(":policy/", 1)[-1]


def problems(expanded):
    found = []
    for name, r in expanded.get("Resources", {}).items():
        if r.get("Type") != "AWS::IAM::Role":
            continue
        props = r.get("Properties", {})
        for arn in props.get("ManagedPolicyArns", []):
            if managed_name(arn) not in ALLOWED_MANAGED:
                found.append(f"{name}: managed policy {managed_name(arn)} (its resource is AWS's choice, often *)")
        for policy in props.get("Policies", []):
            for st in as_list(policy.get("PolicyDocument", {}).get("Statement", [])):
                if st.get("Effect") != "Allow":
                    continue
                actions = [a for a in as_list(st.get("Action", [])) if isinstance(a, str)]
                for a in actions:
                    if a in NOT_IAM_ACTIONS:
                        found.append(f"{name}: {a} is not an IAM action")
                    if a.endswith(":*") or a == "*":
                        found.append(f"{name}: wildcard action {a}")
                resources = as_list(st.get("Resource", []))
                if "*" in resources:
                    wide = [a for a in actions if a not in ACCOUNT_WIDE]
                    if wide:
                        found.append(f"{name}: Resource * for {', '.join(wide)}")
    return found


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    expanded = expand(sys.argv[1])
    roles = [n for n, r in expanded["Resources"].items() if r.get("Type") == "AWS::IAM::Role"]
    found = problems(expanded)
    for p in found:
        print(p)
    if found:
        return 1
    print(f"ok: {len(roles)} roles in the expanded template, no grant wider than needed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
