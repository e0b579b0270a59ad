//! The AWS managed policies berth knows (`arn:aws:iam::aws:policy/<name>`), limited to the
//! services berth serves. They can be attached like customer managed policies and are
//! read-only.

/// (name, path, document).
pub const AWS_MANAGED: &[(&str, &str, &str)] = &[
    (
        "AdministratorAccess",
        "/",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
    ),
    (
        "AmazonECS_FullAccess",
        "/",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecs:*","Resource":"*"},{"Effect":"Allow","Action":"iam:PassRole","Resource":"*","Condition":{"StringLike":{"iam:PassedToService":"ecs-tasks.amazonaws.com"}}}]}"#,
    ),
    (
        "AmazonECSTaskExecutionRolePolicy",
        "/service-role/",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecr:GetAuthorizationToken","ecr:BatchCheckLayerAvailability","ecr:GetDownloadUrlForLayer","ecr:BatchGetImage","logs:CreateLogStream","logs:PutLogEvents"],"Resource":"*"}]}"#,
    ),
    (
        "SecretsManagerReadWrite",
        "/",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"secretsmanager:*","Resource":"*"}]}"#,
    ),
    (
        "AmazonSSMReadOnlyAccess",
        "/",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ssm:Describe*","ssm:Get*","ssm:List*"],"Resource":"*"}]}"#,
    ),
    (
        "IAMFullAccess",
        "/",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:*","Resource":"*"}]}"#,
    ),
    (
        "IAMReadOnlyAccess",
        "/",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["iam:Get*","iam:List*"],"Resource":"*"}]}"#,
    ),
    (
        "ReadOnlyAccess",
        "/",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecs:Describe*","ecs:List*","iam:Get*","iam:List*","secretsmanager:DescribeSecret","secretsmanager:List*","ssm:Describe*","ssm:List*"],"Resource":"*"}]}"#,
    ),
];

/// `arn:aws:iam::aws:policy<path><name>`.
pub fn arn(path: &str, name: &str) -> String {
    format!("arn:aws:iam::aws:policy{path}{name}")
}

/// The managed policy an AWS ARN names: (name, path, document).
pub fn find(policy_arn: &str) -> Option<(&'static str, &'static str, &'static str)> {
    AWS_MANAGED
        .iter()
        .find(|(name, path, _)| arn(path, name) == policy_arn)
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{parse, PolicyKind};

    #[test]
    fn every_builtin_parses() {
        for (name, path, doc) in AWS_MANAGED {
            parse(doc, PolicyKind::Identity).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(find(&arn(path, name)).is_some());
        }
        assert!(
            find("arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy").is_some()
        );
    }
}
