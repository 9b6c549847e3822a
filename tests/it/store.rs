//! The event store and the service role's privileges, on real Postgres.

use chrono::Utc;
use serde_json::json;
use shared::access::store::{NewEvent, StoreError, TenantStore};
use shared::event::{Actor, ActorKind};
use shared::ids::TenantId;
use tests::db::TestDb;

fn event(tenant: TenantId, dedupe: Option<&str>) -> NewEvent {
    NewEvent {
        tenant_id: tenant,
        type_name: "automate_e.test.thing_happened.v1",
        payload: json!({"n": 1}),
        actor: Actor {
            kind: ActorKind::System,
            id: "test".into(),
        },
        occurred_at: Utc::now(),
        dedupe_key: dedupe.map(str::to_owned),
        correlation_id: None,
        causation_id: None,
        trace_id: None,
        source: "test",
    }
}

#[tokio::test]
async fn appends_are_optimistic_per_stream_and_deduplicated() {
    let db = TestDb::create().await;
    let tenant = TenantId::from(db.seed_tenant("acme", "slack", "T1", "*", "book-e").await);
    let store = db.service_store().await.tenant(tenant);

    assert_eq!(
        store
            .append("s-1", 0, &[event(tenant, None), event(tenant, None)])
            .await
            .unwrap(),
        2
    );
    let stale = store.append("s-1", 1, &[event(tenant, None)]).await;
    assert!(
        matches!(stale, Err(StoreError::VersionConflict { expected: 1, .. })),
        "{stale:?}"
    );
    assert_eq!(
        store
            .append("s-1", 2, &[event(tenant, Some("once"))])
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        store
            .append("s-1", 3, &[event(tenant, Some("once"))])
            .await
            .unwrap(),
        3,
        "duplicate skipped"
    );
    assert_eq!(
        store
            .append("s-2", 0, &[event(tenant, None)])
            .await
            .unwrap(),
        1,
        "streams are independent"
    );
    assert_eq!(store.stream_version("s-1").await.unwrap(), 3);
    let events = store.read_stream("s-1", &[]).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(
        events
            .windows(2)
            .all(|w| w[0].global_position < w[1].global_position)
    );
    db.drop().await;
}

#[tokio::test]
async fn the_service_role_cannot_rewrite_history_or_bypass_security() {
    let db = TestDb::create().await;
    let tenant = TenantId::from(db.seed_tenant("acme", "slack", "T1", "*", "book-e").await);
    let service = db.service_store().await;
    let store = service.tenant(tenant);
    store
        .append("s-1", 0, &[event(tenant, None)])
        .await
        .unwrap();

    for statement in [
        "UPDATE events SET payload = '{}'",
        "DELETE FROM events",
        "TRUNCATE events",
        "DELETE FROM inbox",
    ] {
        let err = sqlx::query(statement)
            .execute(service.pool())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("permission denied"),
            "{statement}: {err}"
        );
    }
    let (superuser, bypass, owns): (bool, bool, i64) = sqlx::query_as(
        "SELECT r.rolsuper, r.rolbypassrls, \
         (SELECT count(*) FROM pg_tables t WHERE t.schemaname = 'public' AND t.tableowner = current_user) \
         FROM pg_roles r WHERE r.rolname = current_user",
    )
    .fetch_one(service.pool())
    .await
    .unwrap();
    assert_eq!((superuser, bypass, owns), (false, false, 0));
    db.drop().await;
}

async fn one_message(db: &TestDb) -> (TenantStore, shared::access::store::InboxModel) {
    let tenant = db.seed_tenant("fenced", "slack", "T9", "*", "book-e").await;
    let store = db.service_store().await.tenant(TenantId::from(tenant));
    let params = shared::access::store::NewMessageParams {
        tenant_id: TenantId::from(tenant),
        character: "book-e".into(),
        platform: shared::ids::Platform::Slack,
        chat: "C9".into(),
        thread: "1.1".into(),
        platform_message_id: "T9:C9:1.1".into(),
        delivery_id: None,
        author_id: "U9".into(),
        text: "hi".into(),
        attachments: vec![],
        received_at: Utc::now(),
    };
    let shared::access::store::RecordOutcome::New { inbox_id } =
        store.record_message(&params).await.unwrap()
    else {
        panic!("first delivery is new");
    };
    let msg = store.inbox_message(inbox_id).await.unwrap();
    (store, msg)
}

#[tokio::test]
async fn a_conversation_lease_is_exclusive_expires_and_fences_a_stale_holder() {
    use std::time::Duration;

    let db = TestDb::create().await;
    let (store, msg) = one_message(&db).await;
    let conversation = msg.conversation_id;
    let ttl = Duration::from_millis(300);

    let stale = store
        .try_acquire_lease(conversation, "a", ttl)
        .await
        .unwrap()
        .expect("a free conversation is leased");
    assert!(
        store
            .try_acquire_lease(conversation, "b", ttl)
            .await
            .unwrap()
            .is_none(),
        "a running lease is exclusive"
    );
    let stream = shared::event::conversation_stream(conversation);
    let tenant = msg.tenant_id;
    assert_eq!(
        store
            .append_fenced(&stale, &stream, 0, &[event(tenant, None)])
            .await
            .unwrap(),
        1,
        "the holder writes"
    );

    // The holder stalls past its lease; another worker takes over.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let fresh = store
        .try_acquire_lease(conversation, "b", ttl)
        .await
        .unwrap()
        .expect("an expired lease is taken over");
    assert!(fresh.fence > stale.fence);
    assert!(matches!(
        store
            .append_fenced(&stale, &stream, 1, &[event(tenant, None)])
            .await,
        Err(StoreError::LeaseLost)
    ));
    let reply = shared::access::store::ReplyParams {
        outbox_id: shared::ids::OutboxId::new_v7(),
        inbox_ids: vec![msg.id],
        lease: Some(stale),
        dedupe_key: format!("reply:{}", msg.id),
        stream: stream.clone(),
        expected_version: 1,
        events: vec![event(tenant, None)],
        text: "stale".into(),
    };
    assert!(matches!(
        store.complete_turn(&reply).await,
        Err(StoreError::LeaseLost)
    ));
    assert!(!store.renew_lease(&stale, ttl).await.unwrap());
    store.release_lease(&stale).await.unwrap();
    assert!(
        store
            .try_acquire_lease(conversation, "c", ttl)
            .await
            .unwrap()
            .is_none(),
        "a stale holder cannot release the new lease"
    );

    let reply = shared::access::store::ReplyParams {
        lease: Some(fresh),
        text: "fresh".into(),
        ..reply
    };
    assert!(
        store.complete_turn(&reply).await.unwrap(),
        "the new holder ends the turn"
    );
    assert_eq!(db.count("outbox").await, 1);
    db.drop().await;
}
