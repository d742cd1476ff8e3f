// The overview page: the task board and the agents panel, live over one socket.
// Each open column is a window of its first 50 tasks in the board's sort
// (`tasks?limit=50&order=-priority&status=todo`), so a board of thousands of
// open tasks loads 50 per column; "Show all" turns a column into its whole
// filtered topic (`tasks?status=todo`), and so does a text filter or a sort
// the server cannot express (title), for every open column. The Done column
// is a window of the 50 most recently changed done tasks, with older ones
// paged in over REST on "Show more". The filters the server can express
// (assignee, minimum priority) are part of every topic; the text filter is
// applied here. All of them live in the query
// string, so a filtered board can be shared. A card that changes glows for a
// moment; stuck work (in progress, but its agent is offline or nothing moved
// for the server's `stuck_after_ms`) says so.

import { Client } from './client.js';
import {
  TASK_STATUSES,
  agoElement,
  closeOnLeave,
  el,
  errorText,
  flash,
  mountConnection,
  setChildren,
  setText,
  startTicking,
  statusMark,
  stuckReason,
  tickTimes,
} from './ui.js';

const client = new Client();
window.taskwire = client;
mountConnection(client, document.getElementById('conn'));
closeOnLeave(client);

/** Open tasks (any status but done), from the open columns' topics. */
const tasks = new Map();

/** Done tasks in the window, and older ones paged in over REST (not live). */
const done = new Map();
const older = new Map();
const agents = new Map();
const cardEls = new Map();
const agentEls = new Map();
/** Cards an open column shows until its "Show all" is pressed: a board of
 * thousands of open tasks draws at once, the rest on demand. */
const COLUMN_CARDS = 50;
/** Open columns whose every card is shown (until the view changes). */
const expanded = new Set();
/** Tasks changed by live events since the last render: their cards flash. */
const changedIds = new Set();

const board = document.getElementById('board');
const columns = new Map(
  [...board.querySelectorAll('.column')].map((c) => [c.dataset.status, c]),
);
const agentList = document.getElementById('agent-list');

/** Highest priority first, then newest: as the server's `-priority` order. */
function byPriorityThenId(a, b) {
  return b.priority - a.priority || b.id - a.id;
}

/** Newest change first, as the Done window holds them. */
function byUpdatedDesc(a, b) {
  return b.updated_at.localeCompare(a.updated_at) || b.id - a.id;
}

const SORTS = {
  priority: byPriorityThenId,
  updated: byUpdatedDesc,
  created: (a, b) => b.created_at.localeCompare(a.created_at) || b.id - a.id,
  title: (a, b) => a.title.localeCompare(b.title) || a.id - b.id,
};

const DONE_WINDOW = 50;
const OPEN_STATUSES = ['todo', 'in_progress', 'blocked', 'review'];
/** Each open column's tasks, as its topic holds them. A task moving between
 * columns is in both for a moment (one topic's `left`, the other's
 * `entered`, same seq); `tasks` holds it while any column does. */
const columnTasks = new Map(OPEN_STATUSES.map((s) => [s, new Map()]));
/** The server's window order for each sort; a sort not here is done in the page, on whole topics. */
const ORDERS = { priority: '-priority', updated: '-updated_at', created: '-created_at' };

// ---- the view: filters and sort, kept in the query string ----

/** The view the query string asks for; anything malformed is left out. */
function readView() {
  const q = new URLSearchParams(location.search);
  const assignee = q.get('assignee') || '';
  const priority = q.get('priority_min') || '';
  const sort = q.get('sort') || 'priority';
  return {
    assignee: /^(none|[1-9][0-9]*)$/.test(assignee) ? assignee : '',
    priority: /^[1-3]$/.test(priority) ? priority : '',
    text: q.get('q') || '',
    sort: sort in SORTS ? sort : 'priority',
  };
}

let view = readView();

function writeView() {
  const q = new URLSearchParams();
  if (view.assignee) q.set('assignee', view.assignee);
  if (view.priority) q.set('priority_min', view.priority);
  if (view.text) q.set('q', view.text);
  if (view.sort !== 'priority') q.set('sort', view.sort);
  const search = q.toString();
  try {
    history.replaceState(null, '', search ? `?${search}` : location.pathname);
  } catch {
    // Some browsers refuse many replaceState calls in a row (fast typing):
    // the address catches up on the next change; the board is not held up.
  }
}

/** A topic in the server's one spelling: fields in alphabetical order. */
function topicOf(fields) {
  const keys = Object.keys(fields).filter((k) => fields[k] !== '').sort();
  return keys.length ? `tasks?${keys.map((k) => `${k}=${fields[k]}`).join('&')}` : 'tasks';
}

/** The filter fields the server applies: `{assignee_id, priority_min}`. */
function serverFilter() {
  return { assignee_id: view.assignee, priority_min: view.priority };
}

function matchesText(task) {
  const needle = view.text.trim().toLowerCase();
  if (!needle) return true;
  return task.title.toLowerCase().includes(needle) || String(task.description || '').toLowerCase().includes(needle);
}

function agentName(id) {
  if (id === null || id === undefined) return null;
  const a = agents.get(id);
  return a ? a.name : `agent ${id}`;
}

function renderCard(task) {
  let li = cardEls.get(task.id);
  if (!li) {
    li = el('li', { class: 'card', dataset: { taskId: task.id } });
    cardEls.set(task.id, li);
  }
  const assignee = agentName(task.assignee_id);
  const stuckAfter = client.hello ? client.hello.stuck_after_ms || 0 : 0;
  const stuck = stuckReason(task, agents, stuckAfter, client.serverNow());
  const key = JSON.stringify([task.version, task.title, task.priority, task.status, assignee, task.progress, stuck]);
  if (li.dataset.key === key) return li;
  li.dataset.key = key;
  li.dataset.status = task.status;
  li.className = `card prio-${task.priority}${stuck ? ' stuck' : ''}`;
  setChildren(
    li,
    el('a', { class: 'card-title', href: `/tasks/${task.id}` }, task.title),
    el(
      'div',
      { class: 'card-meta' },
      el('span', { class: 'tid' }, `#${task.id}`),
      el('span', { class: 'prio', title: 'priority' }, `P${task.priority}`),
      assignee
        ? el(
            'a',
            { class: 'assignee', href: `/agents/${task.assignee_id}` },
            el('span', { class: 'visually-hidden' }, 'assigned to '),
            assignee,
          )
        : el('span', { class: 'assignee none' }, 'unassigned'),
      typeof task.progress === 'number' ? el('span', { class: 'progress-text' }, `${task.progress}%`) : null,
      agoElement(task.updated_at, 'changed'),
    ),
    stuck ? el('p', { class: 'stuck-mark' }, `Stuck: ${stuck}`) : null,
  );
  return li;
}

/** Puts `wanted` into `list` in order, moving only the nodes that are out of place. */
function reconcile(list, wanted) {
  const keep = new Set(wanted);
  for (const child of [...list.children]) if (!keep.has(child)) child.remove();
  wanted.forEach((node, i) => {
    if (list.children[i] !== node) list.insertBefore(node, list.children[i] || null);
  });
}

/** Any task the board holds, open or done. */
function taskById(id) {
  return tasks.get(id) || done.get(id) || older.get(id);
}

/** A performance mark set the first time only (docs/benchmarks.md reads them). */
function markOnce(name) {
  if (performance.getEntriesByName(name).length === 0) performance.mark(name);
}

function renderBoard() {
  const byStatus = new Map(TASK_STATUSES.map((s) => [s, []]));
  const shown = new Set();
  // A task in two maps for a moment (open again while the window has not
  // let it go yet, or an older page's copy) shows once, its live copy first.
  const all = [
    ...tasks.values(),
    ...[...done.values()].filter((t) => !tasks.has(t.id)),
    ...[...older.values()].filter((t) => !done.has(t.id) && !tasks.has(t.id)),
  ];
  for (const t of all) {
    if (!matchesText(t)) continue;
    shown.add(t.id);
    (byStatus.get(t.status) || byStatus.get('todo')).push(t);
  }
  for (const [id, li] of cardEls) if (!shown.has(id)) cardEls.delete(id) && li.remove();
  for (const [status, list] of byStatus) {
    // Done is the newest first whatever the sort: it is paged that way.
    list.sort(status === 'done' ? byUpdatedDesc : SORTS[view.sort]);
    const col = columns.get(status);
    const capped = status !== 'done' && !expanded.has(status) && list.length > COLUMN_CARDS;
    const drawn = capped ? list.slice(0, COLUMN_CARDS) : list;
    // Cards left undrawn are forgotten, so a later draw starts them afresh.
    for (const t of capped ? list.slice(COLUMN_CARDS) : []) {
      const li = cardEls.get(t.id);
      if (li) {
        li.remove();
        cardEls.delete(t.id);
      }
    }
    reconcile(col.querySelector('.cards'), drawn.map(renderCard));
    const all = col.querySelector('.column-all');
    if (all) {
      all.hidden = !capped;
      setText(all, windowFull(status) ? 'Show all' : `Show all ${list.length}`);
    }
    let count = list.length;
    if (status === 'done' && hasMore()) count = `${list.length}+`;
    else if (status !== 'done' && windowFull(status)) count = `${COLUMN_CARDS}+`;
    setText(col.querySelector('.count'), count);
  }
  setText(document.getElementById('task-count'), shown.size);
  if (loaded.size === OPEN_STATUSES.length + 1 && board.hasAttribute('aria-busy')) {
    board.removeAttribute('aria-busy');
    // For the benchmark of the first live render (docs/benchmarks.md).
    markOnce('taskwire:board');
  }
  renderMore();
  for (const tid of changedIds) flash(cardEls.get(tid));
  changedIds.clear();
  tickTimes(client, board);
}

function renderAgent(agent) {
  let li = agentEls.get(agent.id);
  if (!li) {
    li = el('li', { class: 'agent', dataset: { agentId: agent.id } });
    agentEls.set(agent.id, li);
  }
  const task = agent.current_task_id ? taskById(agent.current_task_id) : null;
  const key = JSON.stringify([
    agent.version,
    agent.name,
    agent.status,
    agent.current_task_id,
    task ? task.title : null,
    agent.last_heartbeat_at,
  ]);
  if (li.dataset.key === key) return li;
  li.dataset.key = key;
  li.dataset.status = agent.status;
  let current;
  if (agent.current_task_id) {
    const label = task ? `#${task.id} ${task.title}` : `#${agent.current_task_id}`;
    current = el('p', { class: 'agent-task' }, 'Working on ', el('a', { href: `/tasks/${agent.current_task_id}` }, label));
  } else {
    current = el('p', { class: 'agent-task none' }, 'No current task');
  }
  setChildren(
    li,
    el(
      'div',
      { class: 'agent-line' },
      el('a', { class: 'agent-name', href: `/agents/${agent.id}` }, agent.name),
      statusMark(agent.status),
    ),
    current,
    agoElement(agent.last_heartbeat_at, 'last heartbeat'),
  );
  return li;
}

function renderAgents() {
  renderAssigneeOptions();
  for (const [id, li] of agentEls) if (!agents.has(id)) agentEls.delete(id) && li.remove();
  const list = [...agents.values()].sort((a, b) => a.name.localeCompare(b.name) || a.id - b.id);
  reconcile(agentList, list.map(renderAgent));
  if (list.length === 0) {
    if (!agentList.querySelector('.empty')) {
      agentList.append(el('li', { class: 'empty' }, 'No agents yet. Agents appear here as they are created.'));
    }
  }
  setText(document.getElementById('agent-count'), agents.size);
  agentList.removeAttribute('aria-busy');
  // Fresh elements show their text at once rather than on the next tick.
  tickTimes(client, agentList);
}

let frame = 0;
/** Renders on the next animation frame, once however many events came. */
function schedule() {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    renderBoard();
    renderAgents();
  });
}

function applyEntity(map, ev) {
  const kind = ev.event.split('.')[1];
  if (kind === 'deleted') map.delete(ev.data.id);
  else if (kind === 'heartbeat') {
    const a = map.get(ev.data.id);
    if (a) map.set(a.id, { ...a, last_heartbeat_at: ev.data.at });
  } else map.set(ev.data.id, ev.data);
}

function showError(where, err) {
  const msg = document.getElementById('create-msg');
  msg.className = 'form-msg error';
  setText(msg, `Could not load ${where}: ${errorText(err)}`);
}

// ---- the task topics ----

/** Which of this view's two snapshots came (the board is busy until both). */
const loaded = new Set();
/** The cursor of the next older page of done tasks; undefined before the first, null after the last. */
let moreNext;
/** True while a page of older done tasks is being read. */
let moreLoading = false;
/** Bumped on every change of view: answers for an older view are dropped. */
let viewGen = 0;
/** Seq at which a live event took a task out of Done (an older page read before it must not bring it back). */
const goneAt = new Map();
let taskSubs = [];

/** Applies a task event of a filtered topic or window to `map`. */
function applyTask(map, ev, replayed) {
  const kind = ev.event.split('.')[1];
  if (kind === 'deleted' || kind === 'left') {
    map.delete(ev.data.id);
    return;
  }
  map.set(ev.data.id, ev.data);
  // A task let into the window by another's leaving did not change: no glow.
  if (!replayed && kind !== 'created' && (ev.changed || []).length > 0) changedIds.add(ev.data.id);
}

/** Whether an open column subscribes to its whole topic, not a window. */
function wholeColumn(status) {
  return expanded.has(status) || view.text.trim() !== '' || !ORDERS[view.sort];
}

/** An open column's topic: a window in the board's sort, or all of it. The
 * window holds one task more than the column draws: that one says there are more. */
function columnTopic(status) {
  const fields = { ...serverFilter(), status };
  if (!wholeColumn(status)) Object.assign(fields, { limit: COLUMN_CARDS + 1, order: ORDERS[view.sort] });
  return topicOf(fields);
}

/** A window column with more tasks than it draws. */
function windowFull(status) {
  return !wholeColumn(status) && columnTasks.get(status).size > COLUMN_CARDS;
}

function putOpen(status, task) {
  columnTasks.get(status).set(task.id, task);
  tasks.set(task.id, task);
  older.delete(task.id);
}

function dropOpen(status, id) {
  columnTasks.get(status).delete(id);
  const elsewhere = OPEN_STATUSES.map((s) => columnTasks.get(s).get(id)).find(Boolean);
  if (elsewhere) tasks.set(id, elsewhere);
  else tasks.delete(id);
}

/** The open columns' subscriptions, by status. */
const columnSubs = new Map();

/** (Re)subscribes an open column to its topic, if that changed. */
function subscribeColumn(status) {
  const topic = columnTopic(status);
  const old = columnSubs.get(status);
  if (old && old.topic === topic) return;
  if (old) old.unsubscribe();
  // The cards stay until the new topic's snapshot replaces them.
  loaded.delete(status);
  board.setAttribute('aria-busy', 'true');
  const sub = client.subscribe(topic, {
    snapshot(list) {
      for (const id of [...columnTasks.get(status).keys()]) dropOpen(status, id);
      for (const t of list) putOpen(status, t);
      loaded.add(status);
      if (OPEN_STATUSES.every((st) => loaded.has(st))) markOnce('taskwire:open-snapshot');
      schedule();
    },
    event(ev, { replayed }) {
      const kind = ev.event.split('.')[1];
      if (kind === 'deleted' || kind === 'left') dropOpen(status, ev.data.id);
      else {
        putOpen(status, ev.data);
        goneAt.set(ev.data.id, ev.seq);
        // Let into a window by another's leaving, it did not change: no glow.
        if (!replayed && kind !== 'created' && (ev.changed || []).length > 0) changedIds.add(ev.data.id);
      }
      schedule();
    },
    error: (err) => showError('tasks', err),
  });
  columnSubs.set(status, { topic, unsubscribe: () => sub.unsubscribe() });
}

function subscribeColumns() {
  for (const status of OPEN_STATUSES) subscribeColumn(status);
}

function subscribeTasks() {
  for (const s of taskSubs) s.unsubscribe();
  for (const s of columnSubs.values()) s.unsubscribe();
  columnSubs.clear();
  viewGen++;
  tasks.clear();
  for (const m of columnTasks.values()) m.clear();
  done.clear();
  older.clear();
  goneAt.clear();
  loaded.clear();
  moreNext = undefined;
  board.setAttribute('aria-busy', 'true');
  subscribeColumns();
  const win = client.subscribe(
    topicOf({ ...serverFilter(), limit: DONE_WINDOW, order: '-updated_at', status: 'done' }),
    {
      snapshot(list, info) {
        done.clear();
        for (const t of list) done.set(t.id, t);
        // After a long absence the older pages may be out of date: page again.
        if (info.resync) {
          older.clear();
          goneAt.clear();
          moreNext = undefined;
          viewGen++; // a page being read now was read before: drop it
        }
        loaded.add('done');
        markOnce('taskwire:done-snapshot');
        schedule();
      },
      event(ev, { replayed }) {
        const before = done.get(ev.data.id);
        applyTask(done, ev, replayed);
        // Pushed out by a newer one (`changed` empty), it is still done: the
        // older pages, once shown, start with it.
        // (A page being read then may have been read before it left: it is
        // kept here and not marked gone.)
        if (ev.event === 'task.left' && (ev.changed || []).length === 0) {
          if (before && (moreNext !== undefined || moreLoading)) older.set(before.id, before);
        } else if (ev.event === 'task.left' || ev.event === 'task.deleted') {
          older.delete(ev.data.id);
          goneAt.set(ev.data.id, ev.seq);
        }
        schedule();
      },
      error: (err) => showError('done tasks', err),
    },
  );
  taskSubs = [win];
}

// ---- older done tasks, over REST ----

const moreButton = document.getElementById('done-more');
const moreState = document.getElementById('done-more-state');

/** Older pages exist only past a full window, until a page says it was the last. */
function hasMore() {
  return loaded.has('done') && done.size >= DONE_WINDOW && moreNext !== null;
}

function renderMore() {
  moreButton.hidden = !hasMore();
}

async function showMore() {
  const gen = viewGen;
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(serverFilter())) if (v) q.set(k, v);
  q.set('status', 'done');
  q.set('order', '-updated_at');
  // The first page starts at the top (the window's tasks are skipped below).
  q.set('limit', String(moreNext === undefined ? 2 * DONE_WINDOW : DONE_WINDOW));
  if (moreNext) q.set('after', moreNext);
  moreButton.disabled = true;
  moreLoading = true;
  setText(moreState, 'Loading…');
  try {
    const res = await fetch(`/api/tasks?${q}`, { credentials: 'same-origin' });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw body.error || { code: String(res.status), message: res.statusText };
    if (gen !== viewGen) return;
    for (const t of body.items) {
      const gone = goneAt.get(t.id);
      if (gone !== undefined && gone > body.seq) continue;
      if (!done.has(t.id) && !tasks.has(t.id)) older.set(t.id, t);
    }
    moreNext = body.next || null;
    setText(moreState, '');
  } catch (err) {
    if (gen === viewGen) setText(moreState, `Could not load more: ${errorText(err)}`);
  } finally {
    moreLoading = false;
    moreButton.disabled = false;
    schedule();
  }
}
moreButton.addEventListener('click', showMore);
for (const [status, col] of columns) {
  col.querySelector('.column-all')?.addEventListener('click', () => {
    expanded.add(status);
    subscribeColumn(status);
    schedule();
  });
}

// ---- the filter bar ----

const filterForm = document.getElementById('filters');

function renderAssigneeOptions() {
  const select = filterForm.assignee;
  const list = [...agents.values()].sort((a, b) => a.name.localeCompare(b.name) || a.id - b.id);
  const key = JSON.stringify([list.map((a) => [a.id, a.name]), view.assignee]);
  if (select.dataset.key === key) return;
  select.dataset.key = key;
  const options = [el('option', { value: '' }, 'Anyone'), el('option', { value: 'none' }, 'Unassigned')];
  for (const a of list) options.push(el('option', { value: String(a.id) }, a.name));
  // An agent in the address that is not (yet) listed keeps its place.
  if (/^[0-9]+$/.test(view.assignee) && !agents.has(Number(view.assignee))) {
    options.push(el('option', { value: view.assignee }, `agent ${view.assignee}`));
  }
  setChildren(select, ...options);
  select.value = view.assignee;
}

function fillFilters() {
  renderAssigneeOptions();
  filterForm.priority_min.value = view.priority;
  filterForm.q.value = view.text;
  filterForm.sort.value = view.sort;
}

filterForm.addEventListener('submit', (e) => e.preventDefault());
filterForm.addEventListener('change', (e) => {
  const next = {
    assignee: filterForm.assignee.value,
    priority: filterForm.priority_min.value,
    text: filterForm.q.value,
    sort: filterForm.sort.value,
  };
  const resubscribe = next.assignee !== view.assignee || next.priority !== view.priority;
  if (resubscribe) expanded.clear();
  view = next;
  writeView();
  // A new sort, or a text filter begun or cleared, changes the open columns' topics.
  if (resubscribe) subscribeTasks();
  else subscribeColumns();
  schedule();
});
// The text filter narrows as one types.
filterForm.q.addEventListener('input', () => {
  view = { ...view, text: filterForm.q.value };
  writeView();
  subscribeColumns();
  schedule();
});

fillFilters();
subscribeTasks();

client.subscribe('agents', {
  snapshot(list) {
    agents.clear();
    for (const a of list) agents.set(a.id, a);
    schedule();
  },
  event(ev) {
    applyEntity(agents, ev);
    schedule();
  },
  error: (err) => showError('agents', err),
});

// ---- the create form ----

const form = document.getElementById('create-form');
const msg = document.getElementById('create-msg');
form.addEventListener('submit', async (e) => {
  e.preventDefault();
  const title = form.title.value.trim();
  if (!title) {
    msg.className = 'form-msg error';
    setText(msg, 'A task needs a title.');
    form.title.focus();
    return;
  }
  const button = form.querySelector('button[type=submit]');
  button.disabled = true;
  msg.className = 'form-msg';
  setText(msg, 'Creating…');
  try {
    const { data } = await client.call('task.create', {
      title,
      priority: Number(form.priority.value),
      status: form.status.value,
    });
    form.title.value = '';
    msg.className = 'form-msg ok';
    setChildren(msg, 'Created ', el('a', { href: `/tasks/${data.id}` }, `#${data.id} ${data.title}`), '.');
  } catch (err) {
    msg.className = 'form-msg error';
    setText(msg, `Not created: ${errorText(err)}`);
  } finally {
    button.disabled = false;
    form.title.focus();
  }
});

// Time alone makes a task stuck, and hello says after how long.
client.on('hello', schedule);
setInterval(schedule, 5000);
startTicking(client);
client.connect();
