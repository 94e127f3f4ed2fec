//! Tests of `filealloc`.
use super::*;

fn pool(c: &str, b: u8) -> PoolConf {
    PoolConf {
        cidr: c.parse().unwrap(),
        block_prefix: b,
    }
}

fn alloc(dir: &Path, node: &str, pools: &[PoolConf]) -> FileAllocator {
    FileAllocator::open(dir, "net", node, pools, Duration::from_millis(200)).unwrap()
}

fn attrs() -> AllocAttrs {
    AllocAttrs {
        node: "n1".into(),
        pod_namespace: Some("default".into()),
        pod_name: Some("web".into()),
        ..AllocAttrs::default()
    }
}

#[test]
fn dual_stack_idempotent_release_and_reuse() {
    let d = tempfile::tempdir().unwrap();
    let a = alloc(
        d.path(),
        "n1",
        &[pool("10.244.0.0/16", 26), pool("fd00:10:244::/56", 122)],
    );
    let h = Handle::new("net", "c1", "eth0");
    let ips = a.allocate(&h, &attrs()).unwrap();
    assert_eq!(
        ips,
        vec![
            "10.244.0.1".parse::<IpAddr>().unwrap(),
            "fd00:10:244::1".parse().unwrap()
        ]
    );
    assert_eq!(a.allocate(&h, &attrs()).unwrap(), ips);
    assert_eq!(a.lookup(&h).unwrap(), Some(ips.clone()));
    let h2 = Handle::new("net", "c2", "eth0");
    assert_eq!(
        a.allocate(&h2, &attrs()).unwrap()[0],
        "10.244.0.2".parse::<IpAddr>().unwrap()
    );
    assert!(a.release(&h).unwrap());
    assert!(!a.release(&h).unwrap());
    assert_eq!(a.lookup(&h).unwrap(), None);
    let h3 = Handle::new("net", "c3", "eth0");
    assert_eq!(
        a.allocate(&h3, &attrs()).unwrap(),
        ips,
        "freed address reused"
    );
    let raw = fs::read_to_string(d.path().join(STATE_FILE)).unwrap();
    assert!(raw.contains("\"podName\": \"web\""), "{raw}");
    assert!(raw.contains("\"containerId\": \"c3\""), "{raw}");
}

#[test]
fn blocks_per_node_then_borrowing_then_exhaustion() {
    let d = tempfile::tempdir().unwrap();
    let p = [pool("10.0.0.0/29", 30)]; // two blocks of four; .0 and .7 reserved
    let n1 = alloc(d.path(), "n1", &p);
    let n2 = alloc(d.path(), "n2", &p);
    let ip = |a: &FileAllocator, c: &str| {
        a.allocate(&Handle::new("net", c, "eth0"), &attrs())
            .map(|v| v[0].to_string())
    };
    assert_eq!(ip(&n1, "a").unwrap(), "10.0.0.1");
    assert_eq!(ip(&n2, "b").unwrap(), "10.0.0.4", "n2 claims its own block");
    for (i, c) in ["c", "d"].iter().enumerate() {
        assert_eq!(ip(&n1, c).unwrap(), format!("10.0.0.{}", i + 2));
    }
    assert_eq!(
        ip(&n1, "f").unwrap(),
        "10.0.0.5",
        "n1 borrows from n2's block"
    );
    n1.status().unwrap();
    assert_eq!(ip(&n1, "g").unwrap(), "10.0.0.6");
    assert!(matches!(
        n1.allocate(&Handle::new("net", "i", "eth0"), &attrs()),
        Err(AllocError::Exhausted(_))
    ));
    assert!(matches!(n1.status(), Err(AllocError::Exhausted(_))));
    n1.release(&Handle::new("net", "c", "eth0")).unwrap();
    n1.status().unwrap();
}

#[test]
fn dual_stack_is_all_or_nothing() {
    let d = tempfile::tempdir().unwrap();
    let a = alloc(
        d.path(),
        "n1",
        &[pool("10.0.0.0/24", 26), pool("fd00::/127", 127)],
    );
    // (a /127 has two addresses: none reserved)
    a.allocate(&Handle::new("net", "a", "eth0"), &attrs())
        .unwrap();
    a.allocate(&Handle::new("net", "b", "eth0"), &attrs())
        .unwrap();
    let h = Handle::new("net", "c", "eth0");
    assert!(matches!(
        a.allocate(&h, &attrs()),
        Err(AllocError::Exhausted(m)) if m.contains("IPv6")
    ));
    assert_eq!(a.lookup(&h).unwrap(), None, "no IPv4 address kept either");
}

#[test]
fn gc_keeps_valid_and_other_networks() {
    let d = tempfile::tempdir().unwrap();
    let p = [pool("10.0.0.0/24", 26)];
    let a = alloc(d.path(), "n1", &p);
    let other =
        FileAllocator::open(d.path(), "other", "n1", &p, Duration::from_millis(200)).unwrap();
    for c in ["a", "b", "c"] {
        a.allocate(&Handle::new("net", c, "eth0"), &attrs())
            .unwrap();
    }
    other
        .allocate(&Handle::new("other", "z", "eth0"), &attrs())
        .unwrap();
    let released = a.gc(&[Handle::new("net", "b", "eth0")]).unwrap();
    assert_eq!(
        released,
        vec![
            Handle::new("net", "a", "eth0"),
            Handle::new("net", "c", "eth0")
        ]
    );
    assert!(a
        .lookup(&Handle::new("net", "b", "eth0"))
        .unwrap()
        .is_some());
    assert!(other
        .lookup(&Handle::new("other", "z", "eth0"))
        .unwrap()
        .is_some());
    assert!(a.gc(&[Handle::new("net", "b", "eth0")]).unwrap().is_empty());
}

#[test]
fn busy_lock_is_transient_and_corruption_is_not_overwritten() {
    let d = tempfile::tempdir().unwrap();
    let a = alloc(d.path(), "n1", &[pool("10.0.0.0/24", 26)]);
    let f = File::create(d.path().join(LOCK_FILE)).unwrap();
    let held = Flock::lock(f, FlockArg::LockExclusive).unwrap();
    let e = a
        .allocate(&Handle::new("net", "a", "eth0"), &attrs())
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    drop(held);
    fs::write(d.path().join(STATE_FILE), b"{not json").unwrap();
    let e = a
        .allocate(&Handle::new("net", "a", "eth0"), &attrs())
        .unwrap_err();
    assert!(
        matches!(e, AllocError::Failed(ref m) if m.contains("corrupt")),
        "{e}"
    );
    assert_eq!(fs::read(d.path().join(STATE_FILE)).unwrap(), b"{not json");
}

#[test]
fn unusable_directory_fails() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("plain-file");
    fs::write(&file, b"x").unwrap();
    assert!(matches!(
        FileAllocator::open(&file, "net", "n1", &[], DEFAULT_LOCK_TIMEOUT),
        Err(AllocError::Failed(_))
    ));
}

#[test]
fn block_search_skips_foreign_blocks_and_handles_huge_v6_pools() {
    let p = pool("10.0.0.0/24", 26);
    let blocks = vec![Block {
        cidr: "10.0.0.0/25".parse().unwrap(), // an old, larger block
        node: "x".into(),
    }];
    assert_eq!(
        free_block(&p, &blocks).unwrap().to_string(),
        "10.0.0.128/26"
    );
    let p6 = pool("fd00::/56", 122);
    assert_eq!(free_block(&p6, &[]).unwrap().to_string(), "fd00::/122");
    let all = pool("::/0", 128);
    assert!(free_block(&all, &[]).is_some());
    let full = pool("10.0.0.0/30", 30);
    let b = vec![Block {
        cidr: "10.0.0.0/30".parse().unwrap(),
        node: "x".into(),
    }];
    assert_eq!(free_block(&full, &b), None);
}
