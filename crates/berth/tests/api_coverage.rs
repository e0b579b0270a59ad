//! The rest of the API surface against `berth server` with simulated instances:
//! task definition revisions and deregistration, list filters and paging, tags,
//! container instance deregistration, agent state reports, cluster deletion.

mod common;

use common::*;
use serde_json::{json, Value};

async fn instance(api: &Api, cluster: &str) -> String {
    api.register_instance(cluster, 2048, 2048, "us-east-1a", json!([]))
        .await
}

#[tokio::test]
async fn task_definition_revisions_families_and_deregistration() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::server(dir.path(), &[]);
    let api = berth.api();
    for _ in 0..3 {
        api.register_busybox("alpha", "true").await;
    }
    api.register_busybox("beta", "true").await;
    let td = api
        .ok("DescribeTaskDefinition", json!({"taskDefinition": "alpha"}))
        .await;
    assert_eq!(td["taskDefinition"]["revision"], 3);
    assert_eq!(td["taskDefinition"]["status"], "ACTIVE");
    assert_eq!(
        td["taskDefinition"]["containerDefinitions"][0]["essential"],
        true
    );
    let dereg = api
        .ok(
            "DeregisterTaskDefinition",
            json!({"taskDefinition": "alpha:3"}),
        )
        .await;
    assert_eq!(dereg["taskDefinition"]["status"], "INACTIVE");
    // The family's latest ACTIVE revision is now 2; revision 3 still describes.
    let latest = api
        .ok("DescribeTaskDefinition", json!({"taskDefinition": "alpha"}))
        .await;
    assert_eq!(latest["taskDefinition"]["revision"], 2);
    let three = api
        .ok(
            "DescribeTaskDefinition",
            json!({"taskDefinition": "arn:aws:ecs:us-east-1:000000000000:task-definition/alpha:3"}),
        )
        .await;
    assert_eq!(three["taskDefinition"]["status"], "INACTIVE");
    // A new registration never reuses a revision.
    let four = api.register_busybox("alpha", "true").await;
    assert!(four.ends_with("alpha:4"), "{four}");

    let active = api
        .ok("ListTaskDefinitions", json!({"familyPrefix": "alpha"}))
        .await;
    assert_eq!(strings(&active["taskDefinitionArns"]).len(), 3);
    let inactive = api
        .ok("ListTaskDefinitions", json!({"status": "INACTIVE"}))
        .await;
    assert_eq!(
        strings(&inactive["taskDefinitionArns"]),
        vec!["arn:aws:ecs:us-east-1:000000000000:task-definition/alpha:3"]
    );
    let desc = api
        .ok(
            "ListTaskDefinitions",
            json!({"familyPrefix": "alpha", "sort": "DESC", "maxResults": 2}),
        )
        .await;
    let first_page = strings(&desc["taskDefinitionArns"]);
    assert!(
        first_page[0].ends_with("alpha:4") && first_page[1].ends_with("alpha:2"),
        "{first_page:?}"
    );
    let next = api
        .ok("ListTaskDefinitions", json!({"familyPrefix": "alpha", "sort": "DESC", "maxResults": 2, "nextToken": desc["nextToken"]}))
        .await;
    assert_eq!(strings(&next["taskDefinitionArns"]).len(), 1);
    assert!(next.get("nextToken").is_none());
    let families = api.ok("ListTaskDefinitionFamilies", json!({})).await;
    assert_eq!(strings(&families["families"]), vec!["alpha", "beta"]);
    let families = api
        .ok("ListTaskDefinitionFamilies", json!({"familyPrefix": "b"}))
        .await;
    assert_eq!(strings(&families["families"]), vec!["beta"]);

    api.create_cluster("c").await;
    instance(&api, "c").await;
    let msg = api
        .err(
            "RunTask",
            json!({"cluster": "c", "taskDefinition": "alpha:3"}),
            "ClientException",
        )
        .await;
    assert!(msg.contains("inactive"), "{msg}");
}

#[tokio::test]
async fn list_filters_tags_state_reports_and_deregistration() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::server(dir.path(), &[]);
    let api = berth.api();
    api.create_cluster("c").await;
    let i1 = instance(&api, "c").await;
    let i2 = instance(&api, "c").await;
    api.register_busybox("web", "true").await;
    api.register_busybox("worker", "true").await;
    let started = api
        .ok("StartTask", json!({"cluster": "c", "taskDefinition": "web", "containerInstances": [i1.clone()],
            "startedBy": "deployer", "group": "service:api", "tags": [{"key": "env", "value": "test"}]}))
        .await;
    let web_task = started["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    api.ok(
        "StartTask",
        json!({"cluster": "c", "taskDefinition": "worker", "containerInstances": [i2.clone()]}),
    )
    .await;

    let by = |filter: Value| {
        let api = &api;
        async move {
            let mut body = json!({"cluster": "c"});
            body.as_object_mut()
                .unwrap()
                .extend(filter.as_object().unwrap().clone());
            strings(&api.ok("ListTasks", body).await["taskArns"])
        }
    };
    assert_eq!(by(json!({})).await.len(), 2);
    assert_eq!(by(json!({"family": "web"})).await, vec![web_task.clone()]);
    assert_eq!(
        by(json!({"startedBy": "deployer"})).await,
        vec![web_task.clone()]
    );
    // serviceName names a service, and there is no service "api".
    api.err(
        "ListTasks",
        json!({"cluster": "c", "serviceName": "api"}),
        "ServiceNotFoundException",
    )
    .await;
    assert_eq!(
        by(json!({"containerInstance": i1.clone()})).await,
        vec![web_task.clone()]
    );
    assert_eq!(by(json!({"containerInstance": i2.clone()})).await.len(), 1);
    assert!(by(json!({"desiredStatus": "STOPPED"})).await.is_empty());

    // Tags given at launch, then tagged and untagged.
    let described = api
        .ok(
            "DescribeTasks",
            json!({"cluster": "c", "tasks": [web_task], "include": ["TAGS"]}),
        )
        .await;
    assert_eq!(
        described["tasks"][0]["tags"],
        json!([{"key": "env", "value": "test"}])
    );
    api.ok("TagResource", json!({"resourceArn": web_task, "tags": [{"key": "env", "value": "prod"}, {"key": "team", "value": "x"}]}))
        .await;
    api.ok(
        "UntagResource",
        json!({"resourceArn": web_task, "tagKeys": ["team"]}),
    )
    .await;
    let tags = api
        .ok("ListTagsForResource", json!({"resourceArn": web_task}))
        .await;
    assert_eq!(tags["tags"], json!([{"key": "env", "value": "prod"}]));

    // The agent's side: state reports move the task forward, never backward.
    let report = |status: &str, exit: Option<i64>| {
        let container = if status == "STOPPED" {
            "STOPPED"
        } else {
            "RUNNING"
        };
        let (api, task) = (&api, web_task.clone());
        let status = status.to_string();
        async move {
            let containers = json!([{"containerName": "main", "status": container, "runtimeId": "abc", "exitCode": exit}]);
            let (code, body) = api.agent_report(&task, &status, containers).await;
            assert_eq!(code, 200, "{body}");
        }
    };
    report("RUNNING", None).await;
    report("PENDING", None).await;
    let t = api
        .describe_tasks("c", std::slice::from_ref(&web_task))
        .await;
    assert_eq!(t[0]["lastStatus"], "RUNNING");
    assert_eq!(t[0]["containers"][0]["runtimeId"], "abc");
    let cluster = api.ok("DescribeClusters", json!({"clusters": ["c"]})).await;
    assert_eq!(cluster["clusters"][0]["runningTasksCount"], 1);
    assert_eq!(cluster["clusters"][0]["pendingTasksCount"], 1);
    assert_eq!(
        cluster["clusters"][0]["registeredContainerInstancesCount"],
        2
    );
    api.err(
        "SubmitTaskStateChange",
        json!({"cluster": "c", "task": web_task, "status": "DANCING"}),
        "InvalidParameterException",
    )
    .await;

    // Deregistering an instance with tasks needs force; force stops its tasks.
    let msg = api
        .err(
            "DeregisterContainerInstance",
            json!({"cluster": "c", "containerInstance": i2}),
            "ClientException",
        )
        .await;
    assert!(msg.contains("force"), "{msg}");
    let gone = api
        .ok(
            "DeregisterContainerInstance",
            json!({"cluster": "c", "containerInstance": i2, "force": true}),
        )
        .await;
    assert_eq!(gone["containerInstance"]["status"], "INACTIVE");
    let stopped = strings(
        &api.ok(
            "ListTasks",
            json!({"cluster": "c", "desiredStatus": "STOPPED"}),
        )
        .await["taskArns"],
    );
    assert_eq!(stopped.len(), 1);
    let t = api.describe_tasks("c", &stopped).await;
    assert_eq!(t[0]["lastStatus"], "STOPPED");
    assert_eq!(t[0]["stoppedReason"], "Container instance deregistered");
    let listed = api
        .ok("ListContainerInstances", json!({"cluster": "c"}))
        .await;
    assert_eq!(strings(&listed["containerInstanceArns"]), vec![i1.clone()]);

    // The public SubmitTaskStateChange cannot speak for a berth agent's task.
    api.err(
        "SubmitTaskStateChange",
        json!({"cluster": "c", "task": web_task, "status": "STOPPED"}),
        "AccessDeniedException",
    )
    .await;
    // A cluster goes once its tasks are STOPPED and its instances are gone.
    report("STOPPED", Some(0)).await;
    api.err(
        "DeleteCluster",
        json!({"cluster": "c"}),
        "ClusterContainsContainerInstancesException",
    )
    .await;
    api.ok(
        "DeregisterContainerInstance",
        json!({"cluster": "c", "containerInstance": i1}),
    )
    .await;
    let deleted = api.ok("DeleteCluster", json!({"cluster": "c"})).await;
    assert_eq!(deleted["cluster"]["status"], "INACTIVE");
    assert_eq!(
        strings(&api.ok("ListClusters", json!({})).await["clusterArns"]),
        Vec::<String>::new()
    );
    api.err(
        "ListTasks",
        json!({"cluster": "c"}),
        "ClusterNotFoundException",
    )
    .await;
}
