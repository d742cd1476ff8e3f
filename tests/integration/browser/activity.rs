//! Browser tests of issue 20's pages: the task page's timeline (history, live
//! notes, older entries on scroll), the assignee picker, stuck work, the
//! quiet re-apply of a save beaten on other fields, and the agent page's
//! activity across tasks.

use super::*;

/// A JavaScript expression: how many entries the task page's timeline shows.
const ENTRIES: &str = "document.querySelectorAll('#timeline li.entry').length";

/// A JavaScript expression: the text of the newest timeline entry.
const NEWEST: &str = "(document.querySelector('#timeline li.entry')?.textContent || '')";

/// A REST write made with `token` rather than the admin's.
async fn as_token(app: &TestApp, token: &str, method: reqwest::Method, path: &str, body: Value) -> Value {
    rest(app.http().request(method, app.url(path)).bearer_auth(token).json(&body)).await
}

/// Makes the page's `prefers-reduced-motion` match `reduce` (DevTools emulation).
async fn reduce_motion(b: &Browser) {
    let res = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/session/{}/goog/cdp/execute",
            b.driver_port, b.session
        ))
        .json(&json!({"cmd": "Emulation.setEmulatedMedia",
                      "params": {"features": [{"name": "prefers-reduced-motion", "value": "reduce"}]}}))
        .send()
        .await
        .expect("chromedriver cdp");
    assert!(res.status().is_success(), "{}", res.text().await.unwrap_or_default());
    assert_eq!(
        b.js("matchMedia('(prefers-reduced-motion: reduce)').matches").await,
        true
    );
}

/// The page after login, live, on `path`.
async fn open(driver: &Driver, app: &TestApp, path: &str) -> Browser {
    let b = driver.browser(1280, 900).await;
    b.login(app).await;
    b.goto(app, path).await;
    b.wait_live().await;
    b
}

/// History on load (50 of 63 entries, authors by name and linked), a note
/// from another client without reload, the page's own note, older entries on
/// scroll, a rename of the agent shown in every entry, and the agent page's
/// activity across tasks kept live.
#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn the_timeline_shows_history_live_notes_and_older_entries() {
    let _one = BROWSERS.lock().await;
    let app = spawn_app();
    let agent = app.create_agent("builder-2").await;
    let aid = id_of(&agent);
    let agent_token = agent["token"].as_str().unwrap().to_string();
    let task = app.create_task("Fix login").await;
    let tid = id_of(&task);
    for i in 0..60 {
        rest(app.patch(
            &format!("/api/tasks/{tid}"),
            json!({"description": format!("step {i}")}),
        ))
        .await;
    }
    rest(app.patch(&format!("/api/tasks/{tid}"), json!({"assignee_id": aid}))).await;
    as_token(
        &app,
        &agent_token,
        reqwest::Method::PATCH,
        &format!("/api/tasks/{tid}"),
        json!({"status": "in_progress"}),
    )
    .await;

    let driver = Driver::start();
    let b = open(&driver, &app, &format!("/tasks/{tid}")).await;
    b.wait_for("50 entries of history", &format!("{ENTRIES} === 50"), WAIT)
        .await;
    b.wait_for(
        "the newest entry, by the agent's name, linked",
        &format!(
            "{NEWEST}.startsWith('builder-2 moved this to In progress') && \
             document.querySelector('#timeline li.entry a.who').getAttribute('href') === '/agents/{aid}' && \
             document.querySelectorAll('#timeline li.entry')[1].textContent.startsWith('admin assigned it to builder-2')"
        ),
        WAIT,
    )
    .await;
    b.wait_for(
        "a relative time",
        "document.querySelector('#timeline li.entry time.ago').textContent.includes('ago') || \
         document.querySelector('#timeline li.entry time.ago').textContent === 'just now'",
        WAIT,
    )
    .await;

    // A note from the agent arrives without reload, with its progress.
    as_token(
        &app,
        &agent_token,
        reqwest::Method::POST,
        &format!("/api/tasks/{tid}/notes"),
        json!({"text": "tests pass on Safari", "progress": 80}),
    )
    .await;
    b.wait_for(
        "the agent's note",
        &format!(
            "{NEWEST}.includes('builder-2 wrote') && {NEWEST}.includes('tests pass on Safari') && \
             document.querySelector('#timeline li.entry').classList.contains('note') && \
             document.querySelector('#v-progress progress')?.value === 80 && \
             document.querySelector('#timeline-live').textContent === 'builder-2: tests pass on Safari'"
        ),
        BLINK,
    )
    .await;

    // The page's own note, through the note box.
    b.type_into("#note-text", "Looks good, merging").await;
    b.find("#note-send").await.click().await.unwrap();
    b.wait_for(
        "my note",
        &format!("{NEWEST}.includes('admin wrote') && {NEWEST}.includes('Looks good, merging')"),
        WAIT,
    )
    .await;
    // Both notes: 50 + 2 entries, no duplicates; the agent's note shows its
    // progress, so the progress change it made is not shown again.
    b.wait_for("no duplicates", &format!("{ENTRIES} === 52"), WAIT).await;

    // Scrolling to the end loads the older entries, down to the creation.
    b.js("(() => { const t = document.querySelector('#timeline'); t.scrollTop = t.scrollHeight; return 1; })()")
        .await;
    b.wait_for("older entries", &format!("{ENTRIES} > 52"), WAIT).await;
    b.js("(() => { const t = document.querySelector('#timeline'); t.scrollTop = t.scrollHeight; return 1; })()")
        .await;
    // 1 create + 60 + 2 + 2 notes (and the progress change, not shown).
    b.wait_for(
        "the whole activity",
        &format!(
            "{ENTRIES} === 65 && \
             document.querySelector('#timeline li.entry:last-child').textContent.startsWith('admin created this task') && \
             new Set([...document.querySelectorAll('#timeline li.entry')].map(li => li.dataset.seq)).size === 65"
        ),
        WAIT,
    )
    .await;

    // A renamed agent is shown by its new name everywhere on the page.
    rest(app.patch(&format!("/api/agents/{aid}"), json!({"name": "builder-two"}))).await;
    b.wait_for(
        "the new name",
        &format!(
            "[...document.querySelectorAll('#timeline a.who[href=\"/agents/{aid}\"]')].every(a => a.textContent === 'builder-two') && \
             document.querySelector('#v-assignee').textContent === 'builder-two'"
        ),
        BLINK,
    )
    .await;

    // The agent page: what it did and said, newest first, each naming its task.
    let other = app.create_task("Write docs").await;
    let oid = id_of(&other);
    as_token(
        &app,
        &agent_token,
        reqwest::Method::POST,
        &format!("/api/tasks/{oid}/claim"),
        json!({}),
    )
    .await;
    let a = open(&driver, &app, &format!("/agents/{aid}")).await;
    a.wait_for(
        "its activity",
        &format!(
            "document.querySelectorAll('#activity li.entry').length === 3 && \
             document.querySelector('#activity li.entry').textContent.startsWith('Write docs: builder-two took it and moved this to In progress') && \
             document.querySelector('#activity li.entry a.task-ref').getAttribute('href') === '/tasks/{oid}' && \
             document.querySelectorAll('#activity li.entry')[1].textContent.startsWith('Fix login: builder-two wrote')"
        ),
        WAIT,
    )
    .await;
    // Its change on another task (from `tasks`) and its note there (from the
    // `task:M` the page follows since the assignment) arrive live.
    as_token(
        &app,
        &agent_token,
        reqwest::Method::PATCH,
        &format!("/api/tasks/{oid}"),
        json!({"status": "review"}),
    )
    .await;
    as_token(
        &app,
        &agent_token,
        reqwest::Method::POST,
        &format!("/api/tasks/{oid}/notes"),
        json!({"text": "ready for review"}),
    )
    .await;
    a.wait_for(
        "its live change and note",
        "document.querySelectorAll('#activity li.entry').length === 5 && \
         document.querySelector('#activity li.entry').textContent.startsWith('Write docs: builder-two wrote') && \
         document.querySelectorAll('#activity li.entry')[1].textContent.startsWith('Write docs: builder-two moved this to Review')",
        BLINK,
    )
    .await;
}

/// The assignee is picked by name from the live list of agents.
#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn the_assignee_picker_names_agents_and_follows_them_live() {
    let _one = BROWSERS.lock().await;
    let app = spawn_app();
    app.create_agent("alpha-bot").await;
    let beta = id_of(&app.create_agent("beta-bot").await);
    let tid = id_of(&app.create_task("Pick me").await);

    let driver = Driver::start();
    let b = open(&driver, &app, &format!("/tasks/{tid}")).await;
    const OPTIONS: &str = "[...document.querySelectorAll('#agent-names option')].map(o => o.value).join(',')";
    b.wait_for(
        "the agents to pick from",
        &format!("{OPTIONS} === 'alpha-bot,beta-bot'"),
        WAIT,
    )
    .await;

    b.type_into("#f-assignee", "beta-bot").await;
    b.find("#save").await.click().await.unwrap();
    b.wait_for(
        "the assignee by name",
        "document.querySelector('#edit-msg').textContent === 'Saved as version 2.' && \
         document.querySelector('#v-assignee').textContent === 'beta-bot' && \
         document.querySelector('#f-assignee').value === 'beta-bot'",
        WAIT,
    )
    .await;
    let stored = rest(app.get(&format!("/api/tasks/{tid}"))).await;
    assert_eq!(stored["assignee_id"], beta);

    // A new agent appears in the picker without reload.
    app.create_agent("gamma-bot").await;
    b.wait_for(
        "the new agent in the picker",
        &format!("{OPTIONS} === 'alpha-bot,beta-bot,gamma-bot'"),
        BLINK,
    )
    .await;

    // A name no agent has is refused in the page, with the reason.
    b.type_into("#f-assignee", "nobody-bot").await;
    b.find("#save").await.click().await.unwrap();
    b.wait_for(
        "the refusal",
        "document.querySelector('#edit-msg').textContent.includes('No agent is called “nobody-bot”')",
        WAIT,
    )
    .await;
    // Emptying it unassigns.
    b.type_into("#f-assignee", "").await;
    b.find("#f-assignee").await.send_keys("\u{E003}").await.unwrap();
    b.find("#save").await.click().await.unwrap();
    b.wait_for(
        "unassigned",
        "document.querySelector('#v-assignee').textContent === 'unassigned'",
        WAIT,
    )
    .await;
}

/// An `in_progress` task is marked stuck when nothing moved for the server's
/// stuck time, or when its agent is offline; cards say how long ago they
/// changed, ticking.
#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn stuck_work_is_marked_on_the_board_and_the_task_page() {
    let _one = BROWSERS.lock().await;
    let driver = Driver::start();

    // Unchanged for longer than --stuck-after.
    let app = spawn_app_with(|c| c.stuck_after = Duration::from_secs(2));
    let stale = id_of(&rest(app.post("/api/tasks", json!({"title": "Stale", "status": "in_progress"}))).await);
    let waiting = id_of(&rest(app.post("/api/tasks", json!({"title": "Waiting", "status": "todo"}))).await);
    let b = open(&driver, &app, "/").await;
    b.wait_for(
        "the card's age",
        &format!(
            "{}.querySelector('time.ago').textContent.startsWith('changed ')",
            card(stale)
        ),
        WAIT,
    )
    .await;
    b.wait_for(
        "the stuck card",
        &format!(
            "{0}.classList.contains('stuck') && {0}.querySelector('.stuck-mark').textContent === 'Stuck: unchanged for over 2 s'",
            card(stale)
        ),
        WAIT,
    )
    .await;
    assert_eq!(
        b.js(&format!("{}.classList.contains('stuck')", card(waiting))).await,
        false
    );
    let t = open(&driver, &app, &format!("/tasks/{stale}")).await;
    t.wait_for(
        "stuck on the task page",
        "document.querySelector('#v-stuck')?.textContent === 'Stuck: unchanged for over 2 s'",
        WAIT,
    )
    .await;
    // A change clears it, on both pages.
    rest(app.patch(&format!("/api/tasks/{stale}"), json!({"priority": 2}))).await;
    t.wait_for("not stuck after a change", "!document.querySelector('#v-stuck')", BLINK)
        .await;
    b.wait_for(
        "the card not stuck, highlighted as changed",
        &format!(
            "!{0}.classList.contains('stuck') && {0}.classList.contains('flash')",
            card(stale)
        ),
        BLINK,
    )
    .await;
    drop(app);

    // Its agent offline.
    let app = spawn_app_with(|c| c.db.heartbeat_timeout = Duration::from_secs(1));
    let aid = id_of(&app.create_agent("runner-9").await);
    let tid = id_of(
        &rest(app.post(
            "/api/tasks",
            json!({"title": "Orphan", "status": "in_progress", "assignee_id": aid}),
        ))
        .await,
    );
    let b = open(&driver, &app, "/").await;
    b.wait_for(
        "the offline agent's card",
        &format!(
            "{}?.querySelector('.stuck-mark')?.textContent === 'Stuck: runner-9 is offline'",
            card(tid)
        ),
        WAIT,
    )
    .await;
}

/// Someone else's change to other fields while the page edits: the edit is
/// saved on top of it, no conflict box; a change to the same field asks.
#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn a_save_beaten_on_other_fields_is_reapplied_quietly() {
    let _one = BROWSERS.lock().await;
    let app = spawn_app();
    let tid = id_of(&app.create_task("Old title").await);
    let driver = Driver::start();
    let b = open(&driver, &app, &format!("/tasks/{tid}")).await;
    b.wait_for(
        "the form",
        "document.querySelector('#f-title').value === 'Old title'",
        WAIT,
    )
    .await;

    b.type_into("#f-title", "New title").await;
    rest(app.patch(&format!("/api/tasks/{tid}"), json!({"priority": 2}))).await;
    b.wait_for(
        "their change, highlighted, beside my edit",
        "document.querySelector('#v-priority').textContent === 'P2 high' && \
         document.querySelector('#v-priority').classList.contains('flash') && \
         getComputedStyle(document.querySelector('#v-priority')).animationName === 'flash' && \
         document.querySelector('#f-priority').value === '2' && \
         document.querySelector('#f-title').value === 'New title'",
        BLINK,
    )
    .await;
    b.find("#save").await.click().await.unwrap();
    b.wait_for(
        "my save on top of theirs",
        "document.querySelector('#edit-msg').textContent === 'Saved as version 3.' && \
         document.querySelector('#conflict').hidden",
        WAIT,
    )
    .await;
    let stored = rest(app.get(&format!("/api/tasks/{tid}"))).await;
    assert_eq!(stored["title"], "New title");
    assert_eq!(stored["priority"], 2);

    // Their change's event may come after the refusal of my save (the
    // contract allows either order): the page waits for it, sees that other
    // fields changed, and saves again. Here the page holds the event back
    // until the refusal.
    b.js(&format!(
        "(() => {{
            const c = window.taskwire, sub = c._subs.get('task:{tid}'), handler = sub.handlers.event;
            const held = window.__held = [];
            sub.handlers.event = (ev, info) => held.push([ev, info]);
            const call = c.call;
            c.call = (...args) => call.apply(c, args).catch((err) => {{
                c.call = call;
                sub.handlers.event = handler;
                for (const [ev, info] of held.splice(0)) handler(ev, info);
                throw err;
            }});
            return true;
        }})()"
    ))
    .await;
    b.type_into("#f-description", "Held back").await;
    rest(app.patch(&format!("/api/tasks/{tid}"), json!({"status": "blocked"}))).await;
    b.wait_for("their event, held back", "window.__held.length === 1", WAIT)
        .await;
    b.find("#save").await.click().await.unwrap();
    b.wait_for(
        "my save after the refusal, on top of theirs",
        "document.querySelector('#edit-msg').textContent === 'Saved as version 5.' && \
         document.querySelector('#conflict').hidden && window.__held.length === 0",
        WAIT,
    )
    .await;
    let stored = rest(app.get(&format!("/api/tasks/{tid}"))).await;
    assert_eq!(stored["description"], "Held back");
    assert_eq!(stored["status"], "blocked");

    // The same field changed by them: the page asks. With reduced motion the
    // highlight is a still outline, not an animation.
    reduce_motion(&b).await;
    b.type_into("#f-title", "Mine again").await;
    rest(app.patch(&format!("/api/tasks/{tid}"), json!({"title": "Theirs"}))).await;
    b.wait_for(
        "their title, outlined",
        "document.querySelector('#task-title').textContent === 'Theirs' && \
         document.querySelector('#task-title').classList.contains('flash') && \
         getComputedStyle(document.querySelector('#task-title')).animationName === 'none' && \
         getComputedStyle(document.querySelector('#task-title')).outlineStyle === 'solid'",
        BLINK,
    )
    .await;
    b.find("#save").await.click().await.unwrap();
    b.wait_for(
        "the conflict box",
        "!document.querySelector('#conflict').hidden && \
         document.querySelector('#conflict-mine').textContent.includes('Mine again')",
        WAIT,
    )
    .await;
    let stored = rest(app.get(&format!("/api/tasks/{tid}"))).await;
    assert_eq!(stored["title"], "Theirs");
}

/// A short drop resumes: the entries missed are appended, none twice. A drop
/// the server cannot replay (here: the page's position names another
/// database) answers a fresh snapshot, which re-seeds the timeline from its
/// history.
#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn the_timeline_catches_up_after_a_drop_and_reseeds_after_a_long_one() {
    let _one = BROWSERS.lock().await;
    let app = spawn_app();
    let tid = id_of(&app.create_task("Flaky test").await);
    for i in 0..55 {
        rest(app.patch(&format!("/api/tasks/{tid}"), json!({"description": format!("try {i}")}))).await;
    }
    let driver = Driver::start();
    let b = open(&driver, &app, &format!("/tasks/{tid}")).await;
    b.wait_for("the first page", &format!("{ENTRIES} === 50"), WAIT).await;
    b.find("#timeline-older").await.click().await.unwrap();
    b.wait_for("all 56 entries", &format!("{ENTRIES} === 56"), WAIT).await;
    const UNIQUE: &str = "new Set([...document.querySelectorAll('#timeline li.entry')].map(li => li.dataset.seq)).size";
    // The page stops reading its socket, then drops it: what came meanwhile is
    // replayed on the resume.
    const DEAF: &str = "(window.taskwire._ws.onmessage = null, true)";
    const DROP: &str = "(window.taskwire._drop(window.taskwire._gen, 'test'), true)";

    b.js(DEAF).await;
    rest(app.post(&format!("/api/tasks/{tid}/notes"), json!({"text": "missed note"}))).await;
    rest(app.patch(&format!("/api/tasks/{tid}"), json!({"priority": 3}))).await;
    b.js(DROP).await;
    b.wait_for(
        "the missed entries, appended",
        &format!(
            "{ENTRIES} === 58 && {UNIQUE} === 58 && {NEWEST}.startsWith('admin changed priority from P0 low to P3 urgent') && \
             document.querySelectorAll('#timeline li.entry')[1].textContent.includes('missed note')"
        ),
        WAIT,
    )
    .await;
    b.wait_live().await;

    b.js(DEAF).await;
    rest(app.post(
        &format!("/api/tasks/{tid}/notes"),
        json!({"text": "after the long drop"}),
    ))
    .await;
    b.js(&format!(
        "(window.taskwire._subs.get('task:{tid}').epoch = 'another-database', true)"
    ))
    .await;
    b.js(DROP).await;
    b.wait_for(
        "a timeline re-seeded from the snapshot's history",
        &format!(
            "{ENTRIES} === 50 && {UNIQUE} === 50 && {NEWEST}.includes('after the long drop') && \
             !document.querySelector('#timeline-older').hidden"
        ),
        WAIT,
    )
    .await;
}

/// The README's pictures of the timeline: a task a person and an agent work
/// on, on a wide screen and on the agent's page.
#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn screenshots_of_the_timeline() {
    let _one = BROWSERS.lock().await;
    let app = spawn_app();
    let alice = app.token("member", "alice").await;
    let builder = app.create_agent("builder-2").await;
    let bid = id_of(&builder);
    let bot = builder["token"].as_str().unwrap().to_string();
    app.create_agent("reviewer").await;
    let task = as_token(
        &app,
        &alice,
        reqwest::Method::POST,
        "/api/tasks",
        json!({"title": "Fix login redirect loop", "priority": 1,
               "description": "Users on Safari land back on /login after logging in."}),
    )
    .await;
    let tid = id_of(&task);
    let path = format!("/api/tasks/{tid}");
    as_token(&app, &alice, reqwest::Method::PATCH, &path, json!({"assignee_id": bid})).await;
    as_token(
        &app,
        &bot,
        reqwest::Method::PATCH,
        &path,
        json!({"status": "in_progress"}),
    )
    .await;
    let notes = format!("/api/tasks/{tid}/notes");
    as_token(
        &app,
        &bot,
        reqwest::Method::POST,
        &notes,
        json!({"text": "Reproduced: Safari drops the session cookie on the 303. Trying the redirect without it.", "progress": 30}),
    )
    .await;
    as_token(
        &app,
        &alice,
        reqwest::Method::PATCH,
        &path,
        json!({"title": "Fix login redirect loop on Safari"}),
    )
    .await;
    as_token(&app, &alice, reqwest::Method::PATCH, &path, json!({"priority": 2})).await;
    as_token(
        &app,
        &bot,
        reqwest::Method::POST,
        &notes,
        json!({"text": "Fixed locally; adding a browser test before review.", "progress": 70}),
    )
    .await;

    let driver = Driver::start();
    let b = driver.browser(1280, 1000).await;
    b.login(&app).await;
    b.goto(&app, &format!("/tasks/{tid}")).await;
    b.wait_live().await;
    b.wait_for("the timeline", &format!("{ENTRIES} === 7"), WAIT).await;
    let png = b.find("#task").await.screenshot().await.expect("screenshot");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
    std::fs::write(dir.join("timeline.png"), png).unwrap();

    b.goto(&app, &format!("/agents/{bid}")).await;
    b.wait_live().await;
    b.wait_for(
        "the agent's activity",
        "document.querySelectorAll('#activity li.entry').length === 3",
        WAIT,
    )
    .await;
    b.screenshot("agent-activity.png").await;
}
