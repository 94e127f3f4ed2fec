//! Unit tests of the store: history reconstruction, compaction, selector transitions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;

use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{EvType, Filter, State, MAX_HISTORY};
use crate::util;

fn names(v: &[serde_json::Value]) -> Vec<String> {
    v.iter().map(|o| util::name_of(o).to_string()).collect()
}

#[test]
fn list_at_reconstructs_old_states() {
    let mut st = State::new();
    let cm = st.def_by_id("/configmaps").unwrap();
    let r0 = st.rev;
    st.create(
        &cm,
        "default",
        json!({"metadata": {"name": "a"}, "data": {"v": "1"}}),
    )
    .unwrap();
    let r1 = st.rev;
    st.create(&cm, "default", json!({"metadata": {"name": "b"}}))
        .unwrap();
    st.replace(
        &cm,
        "default",
        "a",
        json!({"metadata": {"name": "a"}, "data": {"v": "2"}}),
        false,
    )
    .unwrap();
    st.delete(&cm, "default", "b", None, None).unwrap();
    assert_eq!(
        names(&st.list_at("/configmaps", Some(r0))),
        Vec::<String>::new()
    );
    let at1 = st.list_at("/configmaps", Some(r1));
    assert_eq!(names(&at1), ["a"]);
    assert_eq!(at1[0]["data"]["v"], "1");
    assert_eq!(names(&st.list_at("/configmaps", Some(r1 + 1))), ["a", "b"]);
    assert_eq!(st.list_at("/configmaps", None)[0]["data"]["v"], "2");
    st.compact(r1 + 1);
    assert!(st.too_old(r1) && !st.too_old(r1 + 1));
    assert_eq!(names(&st.list_at("/configmaps", Some(r1 + 1))), ["a", "b"]);
}

#[test]
fn selector_transitions_and_auto_compaction() {
    let mut st = State::new();
    let cm = st.def_by_id("/configmaps").unwrap();
    let f = Filter {
        res_id: "/configmaps".into(),
        namespace: Some("default".into()),
        labels: LabelSelector::parse("app=web").unwrap(),
        fields: FieldSelector::default(),
    };
    st.create(
        &cm,
        "default",
        json!({"metadata": {"name": "a", "labels": {"app": "db"}}}),
    )
    .unwrap();
    st.replace(
        &cm,
        "default",
        "a",
        json!({"metadata": {"name": "a", "labels": {"app": "web"}}}),
        false,
    )
    .unwrap();
    st.replace(
        &cm,
        "default",
        "a",
        json!({"metadata": {"name": "a", "labels": {"app": "x"}}}),
        false,
    )
    .unwrap();
    let seen: Vec<Option<EvType>> = st
        .history
        .iter()
        .rev()
        .take(3)
        .map(|e| f.translate(e))
        .collect();
    assert_eq!(seen, [Some(EvType::Deleted), Some(EvType::Added), None]);
    for i in 0..=MAX_HISTORY {
        let v = json!({"metadata": {"name": "a"}, "data": {"i": i.to_string()}});
        st.replace(&cm, "default", "a", v, false).unwrap();
    }
    assert!(st.history.len() <= MAX_HISTORY);
    assert!(st.compacted > 0 && st.too_old(st.compacted - 1));
}

#[test]
fn list_pages_agree_with_full_reconstruction() {
    let mut st = State::new();
    let cm = st.def_by_id("/configmaps").unwrap();
    let r0 = st.rev;
    // A deterministic mix of creates, updates and deletes over two namespaces.
    for i in 0..60u32 {
        let ns = if i % 3 == 0 { "kube-system" } else { "default" };
        let name = format!("o{}", (i * 7) % 23);
        if st.get(&cm, ns, &name).is_none() {
            st.create(
                &cm,
                ns,
                json!({"metadata": {"name": name}, "data": {"i": i.to_string()}}),
            )
            .unwrap();
        } else if i % 2 == 0 {
            st.delete(&cm, ns, &name, None, None).unwrap();
        } else {
            st.replace(
                &cm,
                ns,
                &name,
                json!({"metadata": {"name": name}, "data": {"i": i.to_string()}}),
                false,
            )
            .unwrap();
        }
    }
    let all = Filter {
        res_id: "/configmaps".into(),
        namespace: None,
        labels: LabelSelector::default(),
        fields: FieldSelector::default(),
    };
    for at in r0..=st.rev {
        let full = st.list_at("/configmaps", Some(at));
        let (page, more) = st.list_page("/configmaps", Some(at), None, &all, None);
        assert_eq!(page, full, "at {at}");
        assert!(!more);
        // Pages of 4 concatenate to the same list.
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let (p, more) = st.list_page("/configmaps", Some(at), after.as_ref(), &all, Some(4));
            after = p.last().map(|o| {
                (
                    util::namespace_of(o).to_string(),
                    util::name_of(o).to_string(),
                )
            });
            paged.extend(p);
            if !more {
                break;
            }
        }
        assert_eq!(paged, full, "paged at {at}");
    }
}
