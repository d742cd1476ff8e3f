// @generated automatically by Diesel CLI.

diesel::table! {
    activity (seq) {
        seq -> BigInt,
        task_id -> BigInt,
        agent_id -> Nullable<BigInt>,
        kind -> Text,
        changed -> Text,
        prior -> Nullable<Text>,
        data -> Text,
        author -> Nullable<Text>,
        at -> Text,
    }
}

diesel::table! {
    agents (id) {
        id -> BigInt,
        name -> Text,
        status -> Text,
        reported_status -> Text,
        current_task_id -> Nullable<BigInt>,
        last_heartbeat_at -> Nullable<Text>,
        meta -> Text,
        version -> BigInt,
        created_at -> Text,
        updated_at -> Text,
    }
}

diesel::table! {
    changes (seq) {
        seq -> BigInt,
        entity -> Text,
        entity_id -> BigInt,
        kind -> Text,
        changed -> Text,
        data -> Text,
        at -> Text,
        author -> Nullable<Text>,
        prior -> Nullable<Text>,
    }
}

diesel::table! {
    login_codes (hash) {
        hash -> Text,
        token_id -> BigInt,
        created_at -> Text,
        expires_at -> Text,
        used_at -> Nullable<Text>,
    }
}

diesel::table! {
    meta (key) {
        key -> Text,
        value -> Text,
    }
}

diesel::table! {
    ops (token_id, op_id) {
        token_id -> BigInt,
        op_id -> Text,
        fingerprint -> Text,
        reply -> Text,
        seq -> Nullable<BigInt>,
        at -> Text,
    }
}

diesel::table! {
    tasks (id) {
        id -> BigInt,
        title -> Text,
        description -> Text,
        status -> Text,
        priority -> Integer,
        assignee_id -> Nullable<BigInt>,
        version -> BigInt,
        created_at -> Text,
        updated_at -> Text,
        progress -> Nullable<Integer>,
    }
}

diesel::table! {
    tokens (id) {
        id -> BigInt,
        hash -> Text,
        role -> Text,
        name -> Text,
        agent_id -> Nullable<BigInt>,
        created_at -> Text,
        revoked_at -> Nullable<Text>,
    }
}

diesel::table! {
    web_sessions (hash) {
        hash -> Text,
        token_id -> BigInt,
        created_at -> Text,
        expires_at -> Text,
    }
}

diesel::joinable!(tasks -> agents (assignee_id));

diesel::allow_tables_to_appear_in_same_query!(
    activity,
    agents,
    changes,
    login_codes,
    meta,
    ops,
    tasks,
    tokens,
    web_sessions,
);
