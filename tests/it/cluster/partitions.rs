//! Partitions: every node reaches every NATS server through a link of its own
//! ([`super::proxy::Link`]), which a test cuts and heals.

use super::proxy::Link;
use super::*;

/// Three nodes on a NATS cluster, each behind links of its own to every server; the links
/// by node.
async fn three_linked_nodes(directory: &Path) -> (Nats, Vec<Node>, Vec<Vec<Link>>) {
    let nats = Nats::started(directory).await;
    let mut nodes = Vec::new();
    let mut links = Vec::new();
    for id in ["a", "b", "c"] {
        let mut node_links = Vec::new();
        for port in &nats.client_ports {
            node_links.push(Link::to(*port).await);
        }
        let mut node = Node::prepare(directory, id, &nats);
        node.nats = node_links
            .iter()
            .map(|link| format!("nats://127.0.0.1:{}", link.port))
            .collect::<Vec<_>>()
            .join(",");
        node.launch();
        nodes.push(node);
        links.push(node_links);
    }
    for node in &nodes {
        if !crate::support::answers_within(&node.base, Duration::from_secs(10)).await {
            panic!("node {} did not answer: {}", node.id, node.log_text());
        }
    }
    (nats, nodes, links)
}

/// Sells `qty` of SKU A as a paid order `order_id` through the node at `base`: the answer,
/// or `None` when none came.
async fn sell(
    client: &reqwest::Client,
    base: &str,
    order_id: &str,
    qty: u32,
) -> Option<reqwest::Response> {
    client
        .post(format!("{base}/api/v1/orders"))
        .json(&json!({"order_id": order_id, "sku": "A", "qty": qty, "platform": "douyin", "paid": true}))
        .send()
        .await
        .ok()
}

/// Polls `node`'s view until `check` holds, for at most `limit`; the view it held on.
async fn view_until(node: &Node, limit: Duration, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last = Value::Null;
    while tokio::time::Instant::now() < deadline {
        if let Some(view) = node.cluster().await {
            if check(&view) {
                return view;
            }
            last = view;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "node {} never got there; last view {last}: {}",
        node.id,
        node.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_says_so_and_the_node_that_takes_over_names_itself() {
    // Goal: a leader cut off from every NATS server stops saying it leads once its lease has
    // gone unrenewed for longer than it lasts (role `isolated`, not `leader`); another node
    // takes over at a higher term and names itself and that term from the start, although
    // it read the older terms on its way; nothing acknowledged before the cut is lost; once
    // the link heals the old leader follows the new one.
    // Method: links black-holed (connections stay open, bytes vanish), as a silent network
    // failure is.
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let (_nats, nodes, links) = three_linked_nodes(directory.path()).await;
    let old = settled(&nodes).await;
    let client = reqwest::Client::new();
    put_sku(&client, &nodes[old].base, "A", 100).await;
    let sold = sell(&client, &nodes[old].base, "before-cut", 3)
        .await
        .expect("order");
    assert_eq!(sold.status(), StatusCode::CREATED);
    let old_term = nodes[old].cluster().await.expect("view")["term"]
        .as_u64()
        .expect("term");
    for link in &links[old] {
        link.cut();
    }
    let isolated = view_until(&nodes[old], Duration::from_secs(15), |view| {
        view["role"] == "isolated"
    })
    .await;
    assert_eq!(isolated["node"], nodes[old].id.as_str(), "{isolated}");
    // Another node leads, names itself and its term, and the third agrees.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (new, new_term) = loop {
        let mut found = None;
        for (index, node) in nodes.iter().enumerate().filter(|(index, _)| *index != old) {
            if let Some(view) = node.cluster().await
                && view["role"] == "leader"
            {
                found = Some((index, view));
            }
        }
        if let Some((index, view)) = found {
            assert_eq!(view["leader"], nodes[index].id.as_str(), "{view}");
            let term = view["term"].as_u64().expect("term");
            assert!(old_term < term, "{view}");
            break (index, term);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no node took over: {}",
            nodes[old].log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let third = (0..3)
        .find(|index| *index != old && *index != new)
        .expect("a third");
    view_until(&nodes[third], Duration::from_secs(10), |view| {
        view["leader"] == nodes[new].id.as_str() && view["term"].as_u64() == Some(new_term)
    })
    .await;
    let order = client
        .get(format!("{}/api/v1/orders/before-cut", nodes[new].base))
        .send()
        .await
        .expect("order read");
    assert_eq!(
        order.status(),
        StatusCode::OK,
        "acknowledged before the cut"
    );
    for link in &links[old] {
        link.heal();
    }
    // The old leader finds the lease another's, steps down, starts again and follows.
    let following = view_until(&nodes[old], Duration::from_secs(40), |view| {
        view["role"] == "standby" && view["leader"] == nodes[new].id.as_str()
    })
    .await;
    assert_eq!(following["term"].as_u64(), Some(new_term), "{following}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_reads_back_its_own_writes_and_stops_answering_reads_once_cut_off() {
    // Goal: a write forwarded by a standby is answered once the standby holds it, so the
    // client reads it back from the same node at once (the review saw 4 in 100 missing);
    // every read a standby answers says how far behind the log it is; a standby cut off
    // from the log answers reads 503 `stale` after 10 s instead of old numbers, and its
    // cluster view still answers.
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let (_nats, nodes, links) = three_linked_nodes(directory.path()).await;
    let leader = settled(&nodes).await;
    let standby = (leader + 1) % nodes.len();
    let client = reqwest::Client::new();
    put_sku(&client, &nodes[leader].base, "A", 1_000).await;
    let base = &nodes[standby].base;
    for index in 0..100 {
        let order_id = format!("ryw-{index}");
        let placed = sell(&client, base, &order_id, 1).await.expect("order");
        assert_eq!(placed.status(), StatusCode::CREATED, "{order_id}");
        assert!(placed.headers().get("x-stockpulse-log-seq").is_none());
        let read = client
            .get(format!("{base}/api/v1/orders/{order_id}"))
            .send()
            .await
            .expect("read back");
        assert_eq!(read.status(), StatusCode::OK, "{order_id} read back");
        assert!(read.headers().contains_key("x-stockpulse-lag"), "{read:?}");
    }
    for link in &links[standby] {
        link.cut();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let read = client
            .get(format!("{base}/api/v1/skus/A"))
            .send()
            .await
            .expect("read");
        if read.status() == StatusCode::SERVICE_UNAVAILABLE {
            let body: Value = read.json().await.expect("json");
            assert_eq!(body["error"]["code"], "stale", "{body}");
            break;
        }
        assert_eq!(read.status(), StatusCode::OK);
        assert!(
            tokio::time::Instant::now() < deadline,
            "a cut-off standby kept answering reads"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(nodes[standby].cluster().await.is_some(), "its view answers");
    for link in &links[standby] {
        link.heal();
    }
    view_until(&nodes[standby], Duration::from_secs(30), |view| {
        view["applied_seq"] == view["stream_seq"] && view["role"] == "standby"
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let read = client
            .get(format!("{base}/api/v1/skus/A"))
            .send()
            .await
            .expect("read");
        if read.status() == StatusCode::OK {
            let sku: Value = read.json().await.expect("json");
            assert_eq!(sku["sold"], 100, "{sku}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never answered again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The NATS server (by index) whose connections include the one named `stockpulse-<node>`.
async fn server_of(nats: &Nats, node: &str) -> usize {
    let name = format!("stockpulse-{node}");
    let client = reqwest::Client::new();
    for _ in 0..100 {
        for (index, port) in nats.monitor_ports.iter().enumerate() {
            let connections: Value = match client
                .get(format!("http://127.0.0.1:{port}/connz?limit=1000"))
                .send()
                .await
            {
                Ok(response) => response.json().await.unwrap_or(Value::Null),
                Err(_) => continue,
            };
            let named = connections["connections"].as_array().is_some_and(|all| {
                all.iter()
                    .any(|connection| connection["name"] == name.as_str())
            });
            if named {
                return index;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no NATS server has a connection named {name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_nats_server_goes_silent_moves_to_another_and_keeps_up() {
    // Goal (P4): a standby whose NATS server stops answering without closing anything (its
    // link black-holed, as a server cut off from its cluster answers nothing JetStream
    // asks) connects to another server of its list after a few unanswered requests, and
    // keeps up with the log and takes writes, instead of waiting minutes for its pings to
    // time out.
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let (nats, nodes, links) = three_linked_nodes(directory.path()).await;
    let leader = settled(&nodes).await;
    let standby = (leader + 1) % nodes.len();
    let client = reqwest::Client::new();
    put_sku(&client, &nodes[leader].base, "A", 1_000).await;
    let server = server_of(&nats, &nodes[standby].id).await;
    links[standby][server].cut();
    for index in 0..20 {
        let placed = sell(&client, &nodes[leader].base, &format!("p4-{index}"), 1)
            .await
            .expect("order");
        assert_eq!(placed.status(), StatusCode::CREATED);
    }
    let head = nodes[leader].cluster().await.expect("leader's view")["applied_seq"]
        .as_u64()
        .expect("applied_seq");
    view_until(&nodes[standby], Duration::from_secs(40), |view| {
        view["applied_seq"]
            .as_u64()
            .is_some_and(|applied| head <= applied)
    })
    .await;
    let placed = sell(&client, &nodes[standby].base, "p4-through-standby", 1)
        .await
        .expect("order");
    assert_eq!(placed.status(), StatusCode::CREATED);
    assert!(
        nodes[standby].log_text().contains("connecting to another"),
        "{}",
        nodes[standby].log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_link_to_the_leader_loses_no_acknowledged_order_and_never_splits_the_brain() {
    // Goal: the leader's links to NATS cut and healed every 700 ms for 15 s while buyers
    // order through every node: every order acknowledged is on every node afterwards, none
    // is sold twice, stock adds up, and no two nodes ever say they lead at the same term.
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let (_nats, nodes, links) = three_linked_nodes(directory.path()).await;
    let leader = settled(&nodes).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    put_sku(&client, &nodes[leader].base, "A", 1_000_000).await;
    let bases: Vec<String> = nodes.iter().map(|node| node.base.clone()).collect();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut buyers = Vec::new();
    for (buyer, base) in bases.iter().enumerate() {
        let (client, base) = (client.clone(), base.clone());
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        buyers.push(tokio::spawn(async move {
            let mut index = 0;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let order_id = format!("flap-{buyer}-{index}");
                let sent = sell(&client, &base, &order_id, 1).await;
                if sent.is_some_and(|response| response.status() == StatusCode::CREATED) {
                    acknowledged.lock().push(order_id);
                }
                index += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    let mut leaders_by_term: BTreeMap<u64, String> = BTreeMap::new();
    let flapping = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut cut = false;
    while tokio::time::Instant::now() < flapping {
        cut = !cut;
        for link in &links[leader] {
            if cut {
                link.cut();
            } else {
                link.heal();
            }
        }
        for node in &nodes {
            if let Some(view) = node.cluster().await
                && view["role"] == "leader"
            {
                let term = view["term"].as_u64().expect("term");
                let named = leaders_by_term
                    .entry(term)
                    .or_insert_with(|| node.id.clone());
                assert_eq!(*named, node.id, "two leaders at term {term}");
            }
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    for link in &links[leader] {
        link.heal();
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    for buyer in buyers {
        buyer.await.expect("buyer");
    }
    let acknowledged = acknowledged.lock().clone();
    assert!(!acknowledged.is_empty());
    let now_leader = settled(&nodes).await;
    let head = nodes[now_leader].cluster().await.expect("view")["applied_seq"].clone();
    for node in &nodes {
        view_until(node, Duration::from_secs(60), |view| {
            view["applied_seq"] == head
        })
        .await;
        for order_id in &acknowledged {
            let read = client
                .get(format!("{}/api/v1/orders/{order_id}", node.base))
                .send()
                .await
                .expect("read");
            assert_eq!(read.status(), StatusCode::OK, "{order_id} on {}", node.id);
        }
        let sku: Value = client
            .get(format!("{}/api/v1/skus/A", node.base))
            .send()
            .await
            .expect("sku")
            .json()
            .await
            .expect("json");
        let sold = sku["sold"].as_u64().expect("sold");
        assert!(acknowledged.len() as u64 <= sold, "{sku}");
        assert_eq!(
            sku["available"].as_u64().expect("available") + sold,
            1_000_000,
            "{sku}"
        );
    }
}
