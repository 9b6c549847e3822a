//! The event store and the service role's privileges, on real Postgres.

use chrono::Utc;
use serde_json::json;
use std::collections::HashMap;

use shared::access::store::{
    CharacterMemory, InboxWriter, Lease, NewEvent, NewMessageParams, RecordOutcome, ReplyParams,
    StoreError, TenantStore, TurnStartParams,
};
use shared::event::{Actor, ActorKind};
use shared::ids::{InboxId, OutboxId, Platform, TenantId};
use tests::db::{TestDb, turn_start};

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
    TestDb::run(async |db| {
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
        assert_eq!(
            store
                .append(
                    "s-1",
                    3,
                    &[event(tenant, Some("once")), event(tenant, None)]
                )
                .await
                .unwrap(),
            4,
            "a skipped duplicate takes no version"
        );
        let refused = store
            .append_new(
                "s-1",
                4,
                &[event(tenant, None), event(tenant, Some("once"))],
            )
            .await;
        assert!(
            matches!(refused, Err(StoreError::AlreadyRecorded { .. })),
            "appended as new, a recorded key fails the append: {refused:?}"
        );
        assert_eq!(store.stream_version("s-1").await.unwrap(), 4);
        let events = store.read_stream("s-1", &[]).await.unwrap();
        assert_eq!(
            events.iter().map(|e| e.version).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert!(
            events
                .windows(2)
                .all(|w| w[0].global_position < w[1].global_position)
        );
        let tail = store
            .read_stream_tail("s-1", &["automate_e.test.thing_happened.v1"], 10, &[])
            .await
            .unwrap();
        assert_eq!((tail.events, tail.version), (events, 4));
        let tail = store
            .read_stream_tail("s-1", &["automate_e.test.other_thing.v1"], 10, &[])
            .await
            .unwrap();
        assert!(tail.events.is_empty());
        assert_eq!(tail.version, 4, "the last version whatever the types read");
    })
    .await;
}

#[tokio::test]
async fn the_service_role_cannot_rewrite_history_or_bypass_security() {
    TestDb::run(async |db| {
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
    })
    .await;
}

/// Whether `holder` is refused the conversation's lease (it takes the lease
/// when it is free).
async fn refused(
    store: &TenantStore,
    conversation: shared::ids::ConversationId,
    holder: &str,
    ttl: std::time::Duration,
) -> bool {
    store
        .try_acquire_lease(conversation, holder, ttl)
        .await
        .unwrap()
        .is_none()
}

/// Records a second message in `lead`'s conversation.
async fn record_follow_up(
    store: &TenantStore,
    lead: &shared::access::store::InboxModel,
    text: &str,
) -> InboxId {
    let follow_up = NewMessageParams {
        chat: "C9".into(),
        ..message(lead.tenant_id, "1.1", "T9:C9:1.2", text)
    };
    let RecordOutcome::New { inbox_id } = store.record_message(&follow_up).await.unwrap() else {
        panic!("the follow-up is new");
    };
    inbox_id
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

    TestDb::run(async |db| {
        let (store, msg) = one_message(db).await;
        let conversation = msg.conversation_id;
        let ttl = Duration::from_millis(300);

        let stale = store
            .try_acquire_lease(conversation, "a", ttl)
            .await
            .unwrap()
            .expect("a free conversation is leased");
        assert!(
            refused(&store, conversation, "b", ttl).await,
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
        let stalled = std::time::Instant::now();
        let fresh = loop {
            if let Some(lease) = store
                .try_acquire_lease(conversation, "b", ttl)
                .await
                .unwrap()
            {
                break lease;
            }
            assert!(
                stalled.elapsed() < 10 * ttl,
                "the expired lease was not taken over"
            );
            tokio::time::sleep(ttl / 10).await;
        };
        assert!(stalled.elapsed() >= ttl / 2, "taken over only once expired");
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
            refused(&store, conversation, "c", ttl).await,
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

        // A renewal that comes after the holder gave its lease back (it was
        // waiting on the row) does not take the conversation again.
        store.release_lease(&fresh).await.unwrap();
        assert!(!store.renew_lease(&fresh, ttl).await.unwrap());
        assert!(
            store
                .try_acquire_lease(conversation, "d", ttl)
                .await
                .unwrap()
                .is_some(),
            "a released lease stays released"
        );
    })
    .await;
}

#[tokio::test]
async fn a_claim_takes_a_free_lease_and_only_for_an_unanswered_message() {
    TestDb::run(async |db| {
        let (store, msg) = one_message(db).await;
        let memory = HashMap::new();
        let claim = |holder: &'static str| {
            let store = store.clone();
            let memory = &memory;
            async move {
                let start = store
                    .start_turn(&turn_start(msg.id, holder, None, memory, &[]))
                    .await
                    .unwrap();
                (start.message, start.lease)
            }
        };

        let (read, first) = claim("a").await;
        assert_eq!(read, msg);
        let first = first.expect("a free conversation is leased");
        assert_eq!(first.conversation_id, msg.conversation_id);
        assert!(claim("b").await.1.is_none(), "a held lease is not taken");

        let mut tx = store.begin().await.unwrap();
        assert!(
            tx.hand_back(msg.conversation_id, Some(&first))
                .await
                .unwrap()
                .is_empty()
        );
        tx.commit().await.unwrap();
        let second = claim("b").await.1.expect("a lease given back is free");
        assert!(second.fence > first.fence);

        let reply = shared::access::store::ReplyParams {
            outbox_id: shared::ids::OutboxId::new_v7(),
            inbox_ids: vec![msg.id],
            lease: Some(second),
            dedupe_key: format!("reply:{}", msg.id),
            stream: format!("conversation-{}", msg.conversation_id),
            expected_version: 0,
            events: vec![],
            text: "svar".into(),
        };
        assert!(store.complete_turn(&reply).await.unwrap());
        let mut tx = store.begin().await.unwrap();
        tx.hand_back(msg.conversation_id, Some(&second))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let (answered, lease) = claim("c").await;
        assert!(answered.processed_at.is_some());
        assert!(lease.is_none(), "an answered message takes no lease");
    })
    .await;
}

#[tokio::test]
async fn a_turn_whose_folded_follow_up_was_answered_meanwhile_writes_nothing() {
    TestDb::run(async |db| {
        let (store, lead) = one_message(db).await;
        let follow_up = record_follow_up(&store, &lead, "and one more thing").await;
        let reply = |inbox_ids: Vec<shared::ids::InboxId>| shared::access::store::ReplyParams {
            outbox_id: shared::ids::OutboxId::new_v7(),
            dedupe_key: format!("reply:{}", inbox_ids[0]),
            inbox_ids,
            lease: None,
            stream: format!("conversation-{}", lead.conversation_id),
            expected_version: 0,
            events: vec![],
            text: "svar".into(),
        };
        assert!(store.complete_turn(&reply(vec![follow_up])).await.unwrap());
        assert!(
            !store
                .complete_turn(&reply(vec![lead.id, follow_up]))
                .await
                .unwrap(),
            "a turn folding an answered message does not end"
        );
        assert!(
            store
                .inbox_message(lead.id)
                .await
                .unwrap()
                .processed_at
                .is_none(),
            "its lead stays unanswered"
        );
        assert_eq!(db.count("outbox").await, 1, "and it wrote no reply");
    })
    .await;
}

#[tokio::test]
async fn a_reply_delivered_twice_is_recorded_delivered_once_and_gives_the_hold_back() {
    TestDb::run(async |db| {
        let (store, msg) = one_message(db).await;
        let outbox_id = shared::ids::OutboxId::new_v7();
        let reply = shared::access::store::ReplyParams {
            outbox_id,
            inbox_ids: vec![msg.id],
            lease: None,
            dedupe_key: format!("reply:{}", msg.id),
            stream: format!("conversation-{}", msg.conversation_id),
            expected_version: 0,
            events: vec![event(msg.tenant_id, Some(&format!("reply:{}", msg.id)))],
            text: "svar".into(),
        };
        assert!(store.complete_turn(&reply).await.unwrap());
        assert!(
            !store.complete_turn(&reply).await.unwrap(),
            "an answered message is not answered again"
        );
        // The delivery holds the conversation's deliveries and gives them
        // back with its record.
        use shared::access::store::DeliveryTurn;
        let hold = std::time::Duration::from_secs(60);
        let held = store.next_delivery(outbox_id, "first", hold).await.unwrap();
        assert!(matches!(held, DeliveryTurn::Held { next: Some(_), .. }));
        assert!(matches!(
            store
                .next_delivery(outbox_id, "second", hold)
                .await
                .unwrap(),
            DeliveryTurn::Busy
        ));
        let stream = format!("delivery-{outbox_id}");
        let delivered = event(msg.tenant_id, Some(&format!("delivered:{outbox_id}")));
        let release = Some((msg.conversation_id, "first"));
        for release in [release, None] {
            store
                .complete_delivery(outbox_id, 1, &stream, &delivered, release)
                .await
                .unwrap();
        }
        assert!(matches!(
            store
                .next_delivery(outbox_id, "second", hold)
                .await
                .unwrap(),
            DeliveryTurn::Held { next: None, .. }
        ));
        assert_eq!(store.read_stream(&stream, &[]).await.unwrap().len(), 1);
        assert!(
            store
                .outbox_item(outbox_id)
                .await
                .unwrap()
                .delivered_at
                .is_some()
        );
    })
    .await;
}

#[tokio::test]
async fn a_lease_taken_in_a_rolled_back_transaction_leaves_no_usable_fence() {
    use std::time::Duration;

    TestDb::run(async |db| {
        let (store, msg) = one_message(db).await;
        let conversation = msg.conversation_id;
        let ttl = Duration::from_secs(30);

        // A turn takes the lease in its first transaction, which then fails.
        let mut tx = store.begin().await.unwrap();
        let rolled_back = tx
            .try_acquire_lease(conversation, "a", ttl)
            .await
            .unwrap()
            .expect("a free conversation is leased");
        drop(tx);

        let held = store
            .try_acquire_lease(conversation, "b", ttl)
            .await
            .unwrap()
            .expect("the rolled-back lease was never taken");
        assert_ne!(
            held.fence, rolled_back.fence,
            "a fence is never given twice"
        );
        store.release_lease(&rolled_back).await.unwrap();
        assert!(
            refused(&store, conversation, "c", ttl).await,
            "the first worker's release does not free the second's lease"
        );
        let stream = shared::event::conversation_stream(conversation);
        assert!(matches!(
            store
                .append_fenced(&rolled_back, &stream, 0, &[event(msg.tenant_id, None)])
                .await,
            Err(StoreError::LeaseLost)
        ));
    })
    .await;
}

#[tokio::test]
async fn token_usage_added_at_once_by_many_turns_is_spread_over_rows_and_summed() {
    TestDb::run(async |db| {
        let (store, _) = one_message(db).await;
        let today = Utc::now().date_naive();
        let yesterday = today.pred_opt().unwrap();
        store.add_token_usage(yesterday, 1_000).await.unwrap();

        let adds = (1..=40_i64).map(|tokens| {
            let store = store.clone();
            async move { store.add_token_usage(today, tokens).await.unwrap() }
        });
        let seen = futures::future::join_all(adds).await;
        let total: i64 = (1..=40).sum();
        assert!(
            seen.iter().all(|b| (1..=total).contains(&b.used)),
            "each add sees a partial sum of the day: {seen:?}"
        );
        assert_eq!(store.token_budget(today).await.unwrap().used, total);
        assert_eq!(store.token_budget(yesterday).await.unwrap().used, 1_000);
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_llm_usage WHERE day = $1")
            .bind(today)
            .fetch_one(&db.owner)
            .await
            .unwrap();
        assert!(
            rows > 1,
            "concurrent turns do not share one row (and its lock)"
        );
    })
    .await;
}

fn message(tenant: TenantId, thread: &str, id: &str, text: &str) -> NewMessageParams {
    NewMessageParams {
        tenant_id: tenant,
        character: "book-e".into(),
        platform: Platform::Slack,
        chat: "C1".into(),
        thread: thread.into(),
        platform_message_id: id.into(),
        delivery_id: None,
        author_id: "U1".into(),
        text: text.into(),
        attachments: vec![],
        received_at: Utc::now(),
    }
}

#[tokio::test]
async fn messages_written_together_each_get_their_own_outcome() {
    TestDb::run(async |db| {
        let a = TenantId::from(db.seed_tenant("a", "slack", "TA", "*", "book-e").await);
        let b = TenantId::from(db.seed_tenant("b", "slack", "TB", "*", "book-e").await);
        let c = TenantId::from(db.seed_tenant("c", "slack", "TC", "*", "book-e").await);
        let store = db.service_store().await;
        let RecordOutcome::New { inbox_id: earlier } = store
            .tenant(a)
            .record_message(&message(a, "t0", "TA:1", "earlier"))
            .await
            .unwrap()
        else {
            panic!("a first delivery is new");
        };

        // All of these are written in one round, each tenant's messages in
        // one call, at the same time.
        let writer = InboxWriter::start(&store, 64);
        let sent = [
            message(a, "t0", "TA:1", "earlier, delivered again"),
            message(a, "t1", "TA:2", "new"),
            message(a, "t1", "TA:2", "new, the same message at once"),
            message(a, "t1", "TA:3", "a follow-up in the same thread"),
            message(b, "t1", "TB:1", "another tenant's"),
            message(b, "t1", "TA:1", "a message id recorded for tenant a"),
            message(c, "t1", "TC:1", "fine"),
            message(c, "t2", "TC:2", "text Postgres refuses: \0"),
        ];
        let outcomes = futures::future::join_all(sent.into_iter().map(|m| writer.record(m))).await;

        let new = |i: usize| match &outcomes[i] {
            Ok(RecordOutcome::New { inbox_id }) => *inbox_id,
            other => panic!("message {i} is new, not {other:?}"),
        };
        assert!(matches!(
            outcomes[0],
            Ok(RecordOutcome::Duplicate { inbox_id, processed: false }) if inbox_id == earlier
        ));
        let first = new(1);
        assert!(
            matches!(outcomes[2], Ok(RecordOutcome::Duplicate { inbox_id, processed: false }) if inbox_id == first),
            "the twin gets the row of the first: {:?}",
            outcomes[2]
        );
        // A message that fails its tenant's call fails alone: the call wrote
        // nothing, so the others are new when written one by one.
        let (follow_up, other_tenant, fine) = (new(3), new(4), new(6));
        assert!(
            matches!(outcomes[5], Err(StoreError::NotFound("inbox message"))),
            "another tenant's message id is not this tenant's: {:?}",
            outcomes[5]
        );
        assert!(
            matches!(outcomes[7], Err(StoreError::Database(_))),
            "the bad message fails alone: {:?}",
            outcomes[7]
        );

        let rows: Vec<(uuid::Uuid, uuid::Uuid, uuid::Uuid)> = sqlx::query_as(
            "SELECT id, tenant_id, conversation_id FROM inbox ORDER BY platform_message_id",
        )
        .fetch_all(&db.owner)
        .await
        .unwrap();
        let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.0).collect();
        assert_eq!(ids, [earlier.0, first.0, follow_up.0, other_tenant.0, fine.0]);
        assert_eq!(rows[1].2, rows[2].2, "one thread, one conversation");
        assert_ne!(rows[0].2, rows[1].2);
        assert_eq!(rows[3].1, b.0, "recorded under its own tenant");
        assert_ne!(rows[3].2, rows[1].2);
    })
    .await;
}

#[tokio::test]
async fn two_first_messages_of_a_new_conversation_at_once_share_it() {
    use std::time::Duration;

    TestDb::run(async |db| {
        let tenant = TenantId::from(db.seed_tenant("acme", "slack", "T1", "*", "book-e").await);
        let store = db.service_store().await.tenant(tenant);
        // One gateway's transaction creates the conversation and has not
        // committed yet.
        let mut first = store.begin().await.unwrap();
        let outcomes = first
            .record_messages(&[&message(tenant, "t1", "T1:1", "one")])
            .await
            .unwrap();
        let RecordOutcome::New { inbox_id: one } = outcomes[0] else {
            panic!("a new message: {outcomes:?}");
        };
        // Another cannot see it yet: its insert waits for the first to end.
        let second = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .record_message(&message(tenant, "t1", "T1:2", "two"))
                    .await
            }
        });
        let waiting = std::time::Instant::now();
        while !waits_for_a_lock(db).await {
            assert!(
                waiting.elapsed() < Duration::from_secs(10),
                "the second never waited"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!second.is_finished(), "the second waits for the first");
        first.commit().await.unwrap();
        let RecordOutcome::New { inbox_id: two } = second.await.unwrap().unwrap() else {
            panic!("the second message is new too");
        };

        let conversation = |id| {
            let store = store.clone();
            async move { store.inbox_message(id).await.unwrap().conversation_id }
        };
        assert_eq!(conversation(one).await, conversation(two).await);
        assert_eq!(db.count("conversations").await, 1);
    })
    .await;
}

#[tokio::test]
async fn a_follow_up_is_recorded_while_a_turn_holds_its_conversation() {
    use std::time::Duration;

    TestDb::run(async |db| {
        let (store, msg) = one_message(db).await;
        // A turn's first transaction: the lease taken, the row locked until it
        // commits.
        let mut turn = store.begin().await.unwrap();
        turn.try_acquire_lease(msg.conversation_id, "a", Duration::from_secs(30))
            .await
            .unwrap()
            .expect("a free conversation is leased");

        let follow_up = NewMessageParams {
            chat: "C9".into(),
            ..message(msg.tenant_id, "1.1", "T9:C9:1.2", "and one more thing")
        };
        let recorded =
            tokio::time::timeout(Duration::from_secs(3), store.record_message(&follow_up))
                .await
                .expect("ingest does not wait for the turn's transaction")
                .unwrap();
        let RecordOutcome::New { inbox_id } = recorded else {
            panic!("a new message: {recorded:?}");
        };
        assert_eq!(
            store.inbox_message(inbox_id).await.unwrap().conversation_id,
            msg.conversation_id,
            "the follow-up joins the held conversation"
        );
        turn.commit().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn the_trigger_cursor_stops_before_the_first_event_still_settling() {
    TestDb::run(async |db| {
        let tenant = TenantId::from(db.seed_tenant("acme", "slack", "T1", "*", "book-e").await);
        let store = db.service_store().await.tenant(tenant);
        let four: Vec<NewEvent> = (0..4).map(|_| event(tenant, None)).collect();
        store.append("s-1", 0, &four).await.unwrap();
        let positions: Vec<i64> = store
            .read_stream("s-1", &[])
            .await
            .unwrap()
            .iter()
            .map(|e| e.global_position)
            .collect();
        // All but the third were recorded an hour ago (the fourth by a
        // transaction that started long before it inserted).
        let age = |position: i64, ago: &'static str| {
            let owner = db.owner.clone();
            async move {
                sqlx::query(&format!(
                    "UPDATE events SET recorded_at = now() - interval '{ago}' WHERE global_position = $1"
                ))
                .bind(position)
                .execute(&owner)
                .await
                .unwrap();
            }
        };
        for &p in [positions[0], positions[1], positions[3]].iter() {
            age(p, "1 hour").await;
        }
        let day = std::time::Duration::from_secs(86_400);
        assert_eq!(store.trigger_cursor("report-e", day).await.unwrap(), 0);
        // Advances the cursor (settle: a minute) and reads where it is.
        let advance = |up_to: Option<i64>| {
            let store = store.clone();
            async move {
                store
                    .advance_trigger_cursor("report-e", std::time::Duration::from_secs(60), up_to)
                    .await
                    .unwrap();
                store.trigger_cursor("report-e", day).await.unwrap()
            }
        };

        assert_eq!(
            advance(None).await,
            positions[1],
            "not past the third event, still settling"
        );
        age(positions[2], "1 hour").await;
        assert_eq!(
            advance(Some(positions[2])).await,
            positions[2],
            "capped by up_to"
        );
        assert_eq!(
            advance(None).await,
            positions[3],
            "all settled: to the newest"
        );
        assert_eq!(
            advance(Some(positions[0])).await,
            positions[3],
            "never backwards"
        );
    })
    .await;
}

/// Scans of `index` and rows read by sequential scans of `table`, so far.
/// (Rows, not scans: the migrations' index builds scan the tables while
/// they are empty, and their statistics may arrive late.)
async fn index_reads(db: &TestDb, (index, table): (&str, &str)) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = $1), \
         (SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = $2)",
    )
    .bind(index)
    .bind(table)
    .fetch_one(&db.owner)
    .await
    .unwrap()
}

/// Runs `insert` (bound to `id`) as the owner, then has Postgres count
/// `table` anew, as a real store's statistics would after such history.
async fn seed_history(db: &TestDb, insert: &str, id: uuid::Uuid, table: &str) {
    sqlx::query(insert)
        .bind(id)
        .execute(&db.owner)
        .await
        .unwrap();
    sqlx::query(&format!("ANALYZE {table}"))
        .execute(&db.owner)
        .await
        .unwrap();
}

/// A tenant's store on one service connection that uses generic plans,
/// which do not see bound values (a pooled connection uses them after a few
/// calls), so a test of an index does not pass on a plan made for one set
/// of values; with the pool, to flush its statistics.
async fn generic_plan_store(db: &TestDb, tenant: uuid::Uuid) -> (sqlx::PgPool, TenantStore) {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::Executor::execute(&mut *conn, "SET plan_cache_mode = force_generic_plan")
                    .await
                    .map(|_| ())
            })
        })
        .connect(&db.service_url())
        .await
        .unwrap();
    let store =
        shared::access::store::Store::from_pool(pool.clone()).tenant(TenantId::from(tenant));
    (pool, store)
}

/// Asserts that `index` was scanned at least `scans` more times than
/// `before` and that no sequential scan read rows of `table` since (the
/// statistics reach Postgres after a moment: waits up to 10 s for them).
async fn assert_read_through_index(
    db: &TestDb,
    pool: &sqlx::PgPool,
    (index, table): (&str, &str),
    before: (i64, i64),
    scans: i64,
) {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(pool)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let after = loop {
        let reads = index_reads(db, (index, table)).await;
        if reads.0 >= before.0 + scans || std::time::Instant::now() > deadline {
            break reads;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        after.0 >= before.0 + scans,
        "{index} scanned {scans} times ({before:?} → {after:?})"
    );
    assert_eq!(after.1, before.1, "{table} not read whole");
}

#[tokio::test]
async fn recording_messages_reads_the_inbox_only_through_its_message_index() {
    TestDb::run(async |db| {
        let tenant = db.seed_tenant("acme", "slack", "T1", "*", "book-e").await;
        let (pool, store) = generic_plan_store(db, tenant).await;
        let tenant = TenantId::from(tenant);
        let RecordOutcome::New { inbox_id: earlier } = store
            .record_message(&message(tenant, "t0", "T1:0", "earlier"))
            .await
            .unwrap()
        else {
            panic!("a first delivery is new");
        };
        // 20,000 more messages of the conversation.
        seed_history(
            db,
            "INSERT INTO inbox (id, tenant_id, conversation_id, platform, platform_message_id, \
             author_id, text, attachments, received_at) \
             SELECT gen_random_uuid(), i.tenant_id, i.conversation_id, 'slack', 'T1:bulk:' || g, \
                 'U1', 'text', '[]', now() \
             FROM inbox i, generate_series(1, 20000) g WHERE i.id = $1",
            earlier.0,
            "inbox",
        )
        .await;
        let by_message = ("inbox_platform_platform_message_id_key", "inbox");
        let before = index_reads(db, by_message).await;

        // A redelivery, a new message and its twin, in generic plans.
        for round in 0..8 {
            let fresh = format!("T1:new:{round}");
            let outcomes = store
                .record_messages(&[
                    &message(tenant, "t0", "T1:0", "earlier, delivered again"),
                    &message(tenant, "t1", &fresh, "new"),
                    &message(tenant, "t1", &fresh, "new, its twin"),
                ])
                .await
                .unwrap();
            assert!(
                matches!(outcomes[..], [
                    RecordOutcome::Duplicate { inbox_id, processed: false },
                    RecordOutcome::New { inbox_id: new },
                    RecordOutcome::Duplicate { inbox_id: twin, .. },
                ] if inbox_id == earlier && twin == new),
                "{outcomes:?}"
            );
        }

        // Each round looks up the redelivery and the twin, each inserted
        // row is checked against the index.
        assert_read_through_index(db, &pool, by_message, before, 16).await;
        pool.close().await;
    })
    .await;
}

#[tokio::test]
async fn the_usage_report_counts_its_period_and_reads_only_that_through_the_usage_index() {
    TestDb::run(async |db| {
        let tenant = db.seed_tenant("acme", "slack", "T1", "*", "book-e").await;
        // A year of history before the period (messages, model calls, tool
        // calls), then the period's two model calls and one tool call.
        seed_history(
            db,
            "INSERT INTO events (id, tenant_id, stream, version, type, occurred_at, actor_kind, \
             actor_id, payload_schema, payload, source) \
             SELECT gen_random_uuid(), $1, 'conversation-' || (g / 4), g % 4 + 1, \
                 'automate_e.conversation.' || t.name || '.v1', \
                 CASE WHEN g >= 20000 THEN now() - interval '1 day' \
                      ELSE now() - interval '400 days' + g * interval '20 minutes' END, \
                 'agent', 'book-e', 'test', t.payload, 'test' \
             FROM generate_series(1, 20003) g CROSS JOIN LATERAL (SELECT \
                 (ARRAY['llm_called', 'tool_called', 'message_received', 'llm_called'])[g % 4 + 1] AS name, \
                 (ARRAY['{\"model\": \"gpt-test\", \"input_tokens\": 120, \"output_tokens\": 30}', \
                        '{\"outcome\": \"ok\", \"request\": {\"path\": \"/contacts\"}}', '{}', \
                        '{\"model\": \"gpt-test\", \"input_tokens\": 120, \"output_tokens\": 30}'] \
                 )[g % 4 + 1]::jsonb AS payload) t",
            tenant,
            "events",
        )
        .await;
        let (pool, store) = generic_plan_store(db, tenant).await;
        let usage = ("events_usage", "events");
        let before = index_reads(db, usage).await;

        let now = Utc::now();
        let (lines, tool_calls) = store
            .recorded_usage(now - chrono::Duration::days(30), now)
            .await
            .unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(
            (
                lines[0].model.as_str(),
                lines[0].calls,
                lines[0].input_tokens
            ),
            ("gpt-test", 2, 240),
            "only the period's model calls"
        );
        assert_eq!(tool_calls, 1, "only the period's tool call");

        // Both queries.
        assert_read_through_index(db, &pool, usage, before, 2).await;
        pool.close().await;
    })
    .await;
}

#[tokio::test]
async fn the_tail_of_a_long_stream_has_its_newest_events_its_keyed_ones_and_its_version() {
    TestDb::run(async |db| {
        let tenant = TenantId::from(db.seed_tenant("acme", "slack", "T1", "*", "book-e").await);
        let store = db.service_store().await.tenant(tenant);
        const SAID: &str = "automate_e.test.said.v1";
        const NOTED: &str = "automate_e.test.noted.v1";
        // 300 events: every third one said (the first one keyed), the rest
        // noted; the last one noted.
        let events: Vec<NewEvent> = (1..=300)
            .map(|n| NewEvent {
                type_name: if n % 3 == 1 { SAID } else { NOTED },
                payload: json!({ "n": n }),
                dedupe_key: (n == 1).then(|| "first".to_owned()),
                ..event(tenant, None)
            })
            .collect();
        assert_eq!(store.append("long", 0, &events).await.unwrap(), 300);

        let tail = store
            .read_stream_tail(
                "long",
                &[SAID],
                4,
                &["first".to_owned(), "elsewhere".to_owned()],
            )
            .await
            .unwrap();
        let numbers: Vec<i64> = tail
            .events
            .iter()
            .map(|e| e.payload["n"].as_i64().unwrap())
            .collect();
        assert_eq!(
            numbers,
            [289, 292, 295, 298],
            "the newest four said, oldest first"
        );
        assert_eq!(tail.version, 300, "the last version, whatever its type");
        assert_eq!(tail.keyed.len(), 1);
        assert_eq!(
            tail.keyed[0].payload["n"], 1,
            "a keyed event far back is found"
        );

        let only_version = store.read_stream_tail("long", &[], 0, &[]).await.unwrap();
        assert_eq!(
            (
                only_version.events.len(),
                only_version.keyed.len(),
                only_version.version
            ),
            (0, 0, 300)
        );
        let empty = store
            .read_stream_tail("none", &[SAID], 4, &["first".to_owned()])
            .await
            .unwrap();
        assert_eq!(empty, shared::access::store::StreamTail::default());
    })
    .await;
}

#[tokio::test]
async fn an_agent_run_given_up_leaves_the_relay_sweep_until_it_is_reopened() {
    TestDb::run(async |db| {
        let tenant = TenantId::from(db.seed_tenant("acme", "slack", "T1", "*", "book-e").await);
        let store = db.service_store().await.tenant(tenant);
        let run = shared::access::store::NewAgentRun {
            character: "report-e".into(),
            dedupe_key: "test:run".into(),
            reason: json!({}),
        };
        let id = store
            .create_agent_run(&run)
            .await
            .unwrap()
            .expect("a new run");
        let later = Utc::now() + chrono::Duration::seconds(1);
        assert_eq!(store.unfinished_agent_runs(later, 10).await.unwrap(), [id]);

        assert!(store.set_agent_run_given_up(id, true).await.unwrap());
        assert!(
            !store.set_agent_run_given_up(id, true).await.unwrap(),
            "given up once"
        );
        assert!(
            store
                .unfinished_agent_runs(later, 10)
                .await
                .unwrap()
                .is_empty()
        );

        assert!(store.set_agent_run_given_up(id, false).await.unwrap());
        assert_eq!(store.unfinished_agent_runs(later, 10).await.unwrap(), [id]);
    })
    .await;
}

#[tokio::test]
async fn a_failed_message_is_reopened_only_with_its_failure_notice_found_by_index() {
    TestDb::run(async |db| {
        let tenant = db.seed_tenant("acme", "slack", "T1", "*", "book-e").await;
        // Three answered messages with neighbouring ids: the first and the third
        // got a failure notice, the second a reply. Then a history of replies
        // and other messages' notices.
        let ids: Vec<uuid::Uuid> = (1..=3)
            .map(|n| uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n))
            .collect();
        sqlx::query(
            "WITH c AS (INSERT INTO conversations (id, tenant_id, platform, chat, character) \
                        VALUES (gen_random_uuid(), $1, 'slack', 'C1', 'book-e') RETURNING id), \
                  m AS (INSERT INTO inbox (id, tenant_id, conversation_id, platform, \
                            platform_message_id, author_id, text, received_at, processed_at) \
                        SELECT u.message, $1, c.id, 'slack', u.message::text, 'W1', 'hi', now(), \
                            now() \
                        FROM c, unnest($2::uuid[]) u(message) RETURNING id) \
             INSERT INTO outbox (id, tenant_id, conversation_id, dedupe_key, platform, chat, text) \
             SELECT gen_random_uuid(), $1, c.id, key, 'slack', 'C1', 'x' FROM c, \
                 (SELECT 'turn-failed:' || $2[1] || ':' || gen_random_uuid() UNION ALL \
                  SELECT 'reply:' || $2[2] UNION ALL \
                  SELECT 'turn-failed:' || $2[3] || ':' || gen_random_uuid() UNION ALL \
                  SELECT CASE WHEN g % 50 = 0 THEN 'turn-failed:' || gen_random_uuid() || ':x' \
                              ELSE 'reply:' || gen_random_uuid() END \
                  FROM generate_series(1, 5000) g) keys(key)",
        )
        .bind(tenant)
        .bind(&ids)
        .execute(&db.owner)
        .await
        .unwrap();
        sqlx::query("ANALYZE outbox")
            .execute(&db.owner)
            .await
            .unwrap();
        let (pool, store) = generic_plan_store(db, tenant).await;
        let notices = ("outbox_failure_notices", "outbox");
        let before = index_reads(db, notices).await;

        assert!(
            !store.reopen_failed_message(ids[1].into()).await.unwrap(),
            "a message answered with a reply stays answered"
        );
        assert!(store.reopen_failed_message(ids[0].into()).await.unwrap());
        assert!(
            !store.reopen_failed_message(ids[0].into()).await.unwrap(),
            "reopened once"
        );
        let open: Vec<uuid::Uuid> =
            sqlx::query_scalar("SELECT id FROM inbox WHERE processed_at IS NULL")
                .fetch_all(&db.owner)
                .await
                .unwrap();
        assert_eq!(open, [ids[0]]);

        // The two messages that were answered.
        assert_read_through_index(db, &pool, notices, before, 2).await;
        pool.close().await;
    })
    .await;
}

#[tokio::test]
async fn dead_jobs_are_listed_newest_first_all_or_only_those_not_replayed() {
    TestDb::run(async |db| {
        let store = db.service_store().await;
        let mut recorded = Vec::new();
        for n in 0..3 {
            let job = shared::access::store::NewDeadJob {
                queue: "worker",
                task_id: format!("task-{n}"),
                kind: "turn",
                subject: None,
                job: json!({"n": n}),
                error: "failed".into(),
                attempts: 5,
            };
            recorded.push(store.record_dead_job(&job).await.unwrap());
        }
        assert!(
            store
                .mark_dead_job_replayed(recorded[1], "replay-1")
                .await
                .unwrap()
        );
        let listed = |open_only| {
            let store = store.clone();
            async move {
                let jobs = store.dead_jobs(open_only, 10).await.unwrap();
                jobs.into_iter().map(|j| j.id).collect::<Vec<_>>()
            }
        };
        assert_eq!(listed(true).await, [recorded[2], recorded[0]]);
        assert_eq!(listed(false).await, [recorded[2], recorded[1], recorded[0]]);
        assert_eq!(store.dead_jobs(false, 1).await.unwrap().len(), 1, "limited");
    })
    .await;
}

/// Whether a session of the test's database waits for a lock another holds.
async fn waits_for_a_lock(db: &TestDb) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock')",
    )
    .fetch_one(&db.owner)
    .await
    .unwrap()
}

/// A turn's start and end, each one call of a function in Postgres.
#[tokio::test]
async fn a_turn_starts_and_ends_in_one_call_each_under_its_lease() {
    const HEARD: &str = "automate_e.test.heard.v1";
    TestDb::run(async |db| {
        let (store, lead) = one_message(db).await;
        let follow_up = record_follow_up(&store, &lead, "and one more thing").await;
        for fact in ["likes tea", "pays in NOK"] {
            store
                .remember_fact(Platform::Slack, "U9", fact, lead.conversation_id)
                .await
                .unwrap();
        }
        store
            .remember_fact(
                Platform::Slack,
                "U1",
                "not the lead's",
                lead.conversation_id,
            )
            .await
            .unwrap();
        // Five events of the history's type, the lead's `message_received`
        // (an earlier attempt's) and one of another type, the last.
        let stream = format!("conversation-{}", lead.conversation_id);
        let mut history: Vec<NewEvent> = (0..5)
            .map(|_| NewEvent {
                type_name: HEARD,
                ..event(lead.tenant_id, None)
            })
            .collect();
        history.push(event(lead.tenant_id, Some(&format!("message:{}", lead.id))));
        history.push(event(lead.tenant_id, None));
        store.append(&stream, 0, &history).await.unwrap();
        let memory = HashMap::from([(
            "book-e".to_owned(),
            CharacterMemory {
                facts: 1,
                history_days: None,
                history_messages: 2,
            },
        )]);

        let start = store
            .start_turn(&turn_start(lead.id, "a", None, &memory, &[HEARD]))
            .await
            .unwrap();
        assert_eq!(start.message, lead);
        let lease = start.lease.expect("a free conversation is leased");
        let context = start.context.expect("read under the lease");
        let pending: Vec<InboxId> = context.pending.iter().map(|m| m.id).collect();
        assert_eq!(pending, [lead.id, follow_up], "oldest first");
        assert_eq!(context.settings.slug, "fenced");
        assert_eq!(context.budget.used, 0);
        assert_eq!(context.facts, ["pays in NOK"], "the lead author's newest");
        assert_eq!(context.tail.version, 7);
        let versions: Vec<i64> = context.tail.events.iter().map(|e| e.version).collect();
        assert_eq!(
            versions,
            [2, 3, 4, 5],
            "the newest history and the pending messages' room"
        );
        assert_eq!(context.tail.keyed.len(), 1, "the lead's recorded message");
        assert_eq!(context.tail.keyed[0].version, 6);

        let busy = store
            .start_turn(&turn_start(lead.id, "b", None, &memory, &[HEARD]))
            .await
            .unwrap();
        assert_eq!(
            (busy.lease, busy.context),
            (None, None),
            "a held lease waits"
        );

        let today = Utc::now().date_naive();
        let reply = ReplyParams {
            outbox_id: OutboxId::new_v7(),
            inbox_ids: vec![lead.id, follow_up],
            lease: Some(lease),
            dedupe_key: format!("reply:{}", lead.id),
            stream: stream.clone(),
            expected_version: 7,
            events: vec![event(lead.tenant_id, None)],
            text: "svar".into(),
        };
        let stale = Lease {
            fence: lease.fence - 1,
            ..lease
        };
        assert!(matches!(
            store
                .start_turn(&turn_start(lead.id, "a", Some(stale), &memory, &[HEARD]))
                .await,
            Err(StoreError::LeaseLost)
        ));
        assert!(matches!(
            store
                .end_turn(
                    &ReplyParams {
                        lease: Some(stale),
                        ..reply.clone()
                    },
                    true,
                    &[]
                )
                .await,
            Err(StoreError::LeaseLost)
        ));
        let conflict = store
            .end_turn(
                &ReplyParams {
                    expected_version: 6,
                    ..reply.clone()
                },
                true,
                &[],
            )
            .await;
        assert!(
            matches!(
                conflict,
                Err(StoreError::VersionConflict { expected: 6, .. })
            ),
            "{conflict:?}"
        );
        assert!(
            store
                .inbox_message(lead.id)
                .await
                .unwrap()
                .processed_at
                .is_none(),
            "a failed end writes nothing"
        );
        assert!(
            refused(
                &store,
                lead.conversation_id,
                "b",
                std::time::Duration::from_secs(30)
            )
            .await,
            "a failed end keeps the lease"
        );

        let unreviewed = store.end_turn(&reply, true, &[(today, 42)]).await.unwrap();
        assert_eq!(unreviewed, Some(vec![]), "ended, the lease given back");
        for id in [lead.id, follow_up] {
            assert!(
                store
                    .inbox_message(id)
                    .await
                    .unwrap()
                    .processed_at
                    .is_some()
            );
        }
        assert_eq!(store.stream_version(&stream).await.unwrap(), 8);
        assert_eq!(store.token_budget(today).await.unwrap().used, 42);
        assert!(
            store
                .try_acquire_lease(
                    lead.conversation_id,
                    "b",
                    std::time::Duration::from_secs(30)
                )
                .await
                .unwrap()
                .is_some(),
            "the lease was given back"
        );
        let again = ReplyParams {
            outbox_id: OutboxId::new_v7(),
            lease: None,
            expected_version: 8,
            ..reply
        };
        assert_eq!(
            store.end_turn(&again, false, &[(today, 1)]).await.unwrap(),
            None,
            "answered already"
        );
        assert_eq!(
            store.token_budget(today).await.unwrap().used,
            42,
            "nothing written"
        );
        assert_eq!(store.stream_version(&stream).await.unwrap(), 8);
    })
    .await;
}

/// A give-up answers its message with the start's tail: the message's own
/// `message_received` is found even when older pending messages fill the
/// read.
#[tokio::test]
async fn a_turn_start_finds_its_own_recorded_message_beyond_the_pending_it_reads() {
    TestDb::run(async |db| {
        let (store, lead) = one_message(db).await;
        let own = record_follow_up(&store, &lead, "later").await;
        let stream = format!("conversation-{}", lead.conversation_id);
        let recorded = event(lead.tenant_id, Some(&format!("message:{own}")));
        store.append(&stream, 0, &[recorded]).await.unwrap();
        let memory = HashMap::new();
        let start = TurnStartParams {
            limit: 1,
            ..turn_start(own, "a", None, &memory, &[])
        };
        let context = store.start_turn(&start).await.unwrap().context.unwrap();
        let pending: Vec<InboxId> = context.pending.iter().map(|m| m.id).collect();
        assert_eq!(pending, [lead.id], "only the oldest is read");
        assert_eq!(
            context.tail.keyed.len(),
            1,
            "its own recorded message is found"
        );
        assert_eq!(context.tail.keyed[0].version, 1);
    })
    .await;
}
