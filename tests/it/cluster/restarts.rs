//! Restarts: a leader stopped on purpose hands over at once, and a node that steps down
//! starts again even when its binary was replaced on disk.

use std::time::Duration;

use super::{Node, ONE_CLUSTER_AT_A_TIME, settled, three_nodes};

/// Which node leads, among `nodes`, once one does (within `limit`).
async fn leader_among(nodes: &[&Node], limit: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        for node in nodes {
            if node
                .cluster()
                .await
                .is_some_and(|view| view["role"] == "leader")
            {
                return Some(node.id.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_with_sigterm_hands_over_before_its_lease_runs_out() {
    // Goal (C7): a planned restart of the leader costs a moment, not a lease. With a lease
    // of 20 s, another node leads within 10 s of SIGTERM only if the leader gave the lease
    // up; before, the others waited for the lease to run out.
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    std::fs::write(
        directory.path().join("cluster.toml"),
        "[cluster]\nreplicas = 3\nlease_ttl_ms = 20000\nlease_renew_ms = 500\n",
    )
    .expect("configuration written");
    let (_nats, mut nodes) = three_nodes(directory.path()).await;
    let old = settled(&nodes).await;
    let pid = nodes[old].child.as_ref().expect("running").id();
    super::send_signal(pid, "-TERM");
    let code = nodes[old].exit_code(Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{}", nodes[old].log_text());
    assert!(nodes[old].log_text().contains("Gave the lease up"));
    let others = super::others_than(&nodes, old);
    let new = leader_among(&others, Duration::from_secs(10)).await;
    assert!(
        new.is_some(),
        "no node led within 10 s of the leader's SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_binary_was_replaced_starts_again_after_stepping_down() {
    // Goal (C7): a package upgrade replaces the binary while nodes run; a node that steps
    // down then starts again (from the path, now the new file) instead of exiting 1 on a
    // program that is gone. Method: the nodes run a copy of the binary; the copy is
    // deleted and written anew; the leader is paused past its lease (SIGSTOP), so it steps
    // down when it wakes; it must come back and follow.
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let copy = directory.path().join("stockpulse");
    std::fs::copy(env!("CARGO_BIN_EXE_stockpulse"), &copy).expect("binary copied");
    let nats = super::Nats::started(directory.path()).await;
    let mut nodes: Vec<Node> = ["a", "b", "c"]
        .into_iter()
        .map(|id| {
            let mut node = Node::prepare(directory.path(), id, &nats);
            node.program = copy.clone();
            node
        })
        .collect();
    for node in &mut nodes {
        node.spawn().await;
    }
    let old = settled(&nodes).await;
    std::fs::remove_file(&copy).expect("binary removed");
    std::fs::copy(env!("CARGO_BIN_EXE_stockpulse"), &copy).expect("binary replaced");
    let pid = nodes[old].child.as_ref().expect("running").id();
    let signal = |name: &str| super::send_signal(pid, name);
    signal("-STOP");
    let others = super::others_than(&nodes, old);
    assert!(
        leader_among(&others, Duration::from_secs(30))
            .await
            .is_some(),
        "no node took over"
    );
    signal("-CONT");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let log = nodes[old].log_text();
        if log.contains("Starting again as a standby")
            && nodes[old]
                .cluster()
                .await
                .is_some_and(|view| view["role"] == "standby")
        {
            break;
        }
        assert!(
            !log.contains("Cannot start again"),
            "the node did not start again:\n{log}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node did not come back as a standby:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    settled(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starting_again_waits_for_nats_instead_of_exiting() {
    // Goal (C7): a node that starts again after stepping down (it carries its count of
    // starts in its environment) and finds no NATS server waits for one, where a first
    // start exits 69 at once; once NATS is back it joins and leads.
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let mut nats = super::Nats::started(directory.path()).await;
    for index in 0..3 {
        nats.kill(index);
    }
    let mut node = Node::prepare(directory.path(), "a", &nats);
    node.env
        .push(("STOCKPULSE_RESTARTS".to_owned(), "1:0".to_owned()));
    node.launch();
    assert_eq!(
        node.exit_code(Duration::from_secs(5)).await,
        None,
        "it waits: {}",
        node.log_text()
    );
    assert!(
        node.log_text()
            .contains("Cannot reach NATS; waiting for it."),
        "{}",
        node.log_text()
    );
    for index in 0..3 {
        let child = nats.spawn(index);
        nats.servers[index] = Some(child);
    }
    assert!(
        crate::support::answers_within(&node.base, Duration::from_secs(60)).await,
        "{}",
        node.log_text()
    );
    let leader = leader_among(&[&node], Duration::from_secs(30)).await;
    assert_eq!(leader.as_deref(), Some("a"), "{}", node.log_text());
}
