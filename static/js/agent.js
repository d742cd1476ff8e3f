// The agent page: one agent over `agent:{id}` (status, meta, heartbeats) and
// the tasks assigned to it, from `tasks` filtered here (no HTTP after load).

import { Client } from './client.js';
import {
  PRIORITY_LABELS,
  TASK_STATUSES,
  TASK_STATUS_LABELS,
  agoElement,
  dateTime,
  el,
  errorText,
  idFromLocation,
  mountConnection,
  setText,
  startTicking,
  statusMark,
  tickTimes,
} from './ui.js';

const client = new Client();
window.taskwire = client;
mountConnection(client, document.getElementById('conn'));

const id = idFromLocation('agents');
const $ = (s) => document.getElementById(s);
const view = $('agent');
const notice = $('notice');

let agent = null;
let deleted = false;
const tasks = new Map();

function showNotice(text, kind = 'warn') {
  notice.className = `notice ${kind}`;
  setText(notice, text);
  notice.hidden = false;
}

function row(dl, term, ...value) {
  dl.append(el('dt', {}, term), el('dd', {}, ...value));
}

let agentKey = '';
let tasksKey = '';

function renderBeat() {
  const beat = $('v-beat');
  if (!beat || !agent) return;
  const at = agent.last_heartbeat_at;
  beat.querySelector('time').setAttribute('datetime', at || '');
  setText(beat.querySelector('.abs'), at ? ` (${dateTime(at)})` : '');
  tickTimes(client, beat);
}

function renderAgent() {
  view.removeAttribute('aria-busy');
  if (!agent) return;
  const a = agent;
  const currentTask = a.current_task_id ? tasks.get(a.current_task_id) : null;
  const key = JSON.stringify([{ ...a, last_heartbeat_at: null }, deleted, currentTask && currentTask.title]);
  if (key === agentKey) {
    renderBeat();
    return;
  }
  agentKey = key;
  setText($('agent-title'), deleted ? `${a.name} (deleted)` : a.name);
  setText($('crumb'), `Agent ${a.name}`);
  document.title = `${a.name} · taskwire`;
  view.dataset.version = String(a.version);
  view.dataset.status = a.status;
  const dl = $('agent-fields');
  dl.replaceChildren();
  row(dl, 'Status', statusMark(a.status));
  let current = el('span', { class: 'none', id: 'v-current' }, 'none');
  if (a.current_task_id) {
    const t = tasks.get(a.current_task_id);
    current = el('a', { href: `/tasks/${a.current_task_id}`, id: 'v-current' }, t ? `#${t.id} ${t.title}` : `#${a.current_task_id}`);
  }
  row(dl, 'Current task', current);
  row(dl, 'Last heartbeat', el('span', { id: 'v-beat' }, agoElement(null), el('span', { class: 'abs' })));
  row(dl, 'Version', el('span', { id: 'v-version' }, a.version));
  row(dl, 'Id', `#${a.id}`);
  row(dl, 'Created', dateTime(a.created_at));
  row(dl, 'Updated', dateTime(a.updated_at));
  const meta = a.meta && Object.keys(a.meta).length ? JSON.stringify(a.meta, null, 2) : '{}';
  setText($('agent-meta'), meta);
  renderBeat();
}

function renderTasks() {
  const list = $('assigned');
  list.removeAttribute('aria-busy');
  const mine = [...tasks.values()]
    .filter((t) => t.assignee_id === id)
    .sort((x, y) => TASK_STATUSES.indexOf(x.status) - TASK_STATUSES.indexOf(y.status) || y.priority - x.priority || x.id - y.id);
  const key = JSON.stringify([mine.map((t) => [t.id, t.version]), agent && agent.current_task_id]);
  if (key === tasksKey) return;
  tasksKey = key;
  list.replaceChildren(
    ...mine.map((t) =>
      el(
        'li',
        { dataset: { taskId: t.id }, class: t.id === (agent && agent.current_task_id) ? 'current' : '' },
        el('a', { href: `/tasks/${t.id}` }, `#${t.id} ${t.title}`),
        ' ',
        el('span', { class: `badge st-${t.status}` }, TASK_STATUS_LABELS[t.status] || t.status),
        ' ',
        el('span', { class: 'prio' }, PRIORITY_LABELS[t.priority] || `P${t.priority}`),
      ),
    ),
  );
  if (mine.length === 0) list.append(el('li', { class: 'empty' }, 'No tasks assigned.'));
  setText($('assigned-count'), mine.length);
}

function render() {
  renderAgent();
  renderTasks();
}

if (id === null) {
  showNotice('This address names no agent. Go back to the board.', 'gone');
  setText($('agent-title'), 'No such agent');
  view.removeAttribute('aria-busy');
} else {
  client.subscribe(`agent:${id}`, {
    snapshot(a) {
      agent = a;
      deleted = false;
      notice.hidden = true;
      render();
    },
    event(ev) {
      if (ev.event === 'agent.deleted') {
        deleted = true;
        showNotice('This agent was deleted.', 'gone');
      } else if (ev.event === 'agent.heartbeat') {
        if (agent) agent = { ...agent, last_heartbeat_at: ev.data.at };
      } else {
        agent = ev.data;
      }
      render();
    },
    error(err) {
      view.removeAttribute('aria-busy');
      if (err.code === 'not_found') {
        if (agent) {
          deleted = true;
          showNotice('This agent was deleted.', 'gone');
          render();
        } else {
          setText($('agent-title'), `Agent #${id} not found`);
          showNotice(`There is no agent #${id}. It may have been deleted.`, 'gone');
        }
      } else {
        showNotice(`Could not load the agent: ${errorText(err)}`, 'error');
      }
    },
  });
  client.subscribe('tasks', {
    snapshot(list) {
      tasks.clear();
      for (const t of list) tasks.set(t.id, t);
      render();
    },
    event(ev) {
      if (ev.event === 'task.deleted') tasks.delete(ev.data.id);
      else tasks.set(ev.data.id, ev.data);
      render();
    },
    error: (err) => showNotice(`Could not load the tasks: ${errorText(err)}`, 'error'),
  });
  startTicking(client);
  client.connect();
}
