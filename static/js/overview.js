// The overview page: the task board and the agents panel, live over one socket
// subscribed to `tasks` and `agents`. A card that changes glows for a moment;
// stuck work (in progress, but its agent is offline or nothing moved for the
// server's `stuck_after_ms`) says so.

import { Client } from './client.js';
import {
  TASK_STATUSES,
  agoElement,
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

const tasks = new Map();
const agents = new Map();
const cardEls = new Map();
const agentEls = new Map();
/** Tasks changed by live events since the last render: their cards flash. */
const changedIds = new Set();

const board = document.getElementById('board');
const columns = new Map(
  [...board.querySelectorAll('.column')].map((c) => [c.dataset.status, c]),
);
const agentList = document.getElementById('agent-list');

function byPriorityThenId(a, b) {
  return b.priority - a.priority || a.id - b.id;
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

function renderBoard() {
  const byStatus = new Map(TASK_STATUSES.map((s) => [s, []]));
  for (const t of tasks.values()) {
    (byStatus.get(t.status) || byStatus.get('todo')).push(t);
  }
  for (const [id, li] of cardEls) if (!tasks.has(id)) cardEls.delete(id) && li.remove();
  for (const [status, list] of byStatus) {
    list.sort(byPriorityThenId);
    const col = columns.get(status);
    reconcile(col.querySelector('.cards'), list.map(renderCard));
    setText(col.querySelector('.count'), list.length);
  }
  setText(document.getElementById('task-count'), tasks.size);
  board.removeAttribute('aria-busy');
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
  const task = agent.current_task_id ? tasks.get(agent.current_task_id) : null;
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

client.subscribe('tasks', {
  snapshot(list) {
    tasks.clear();
    for (const t of list) tasks.set(t.id, t);
    schedule();
  },
  event(ev, { replayed }) {
    applyEntity(tasks, ev);
    if (!replayed && ev.event === 'task.updated') changedIds.add(ev.data.id);
    schedule();
  },
  error: (err) => showError('tasks', err),
});

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
