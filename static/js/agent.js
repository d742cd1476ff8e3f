// The agent page: one agent over `agent:{id}` (status, meta, heartbeats), the
// tasks assigned to it from `tasks?assignee_id={id}`, and what it did and said
// across tasks: a first page of its activity over REST, then kept live from its
// changes on that topic (`by.agent_id`) and its notes on `task:M` of each task
// assigned to it. (Its changes to tasks assigned to it neither before nor after
// do not reach the topic: they show on the next load.)

import { entryFromEvent, isTimelineEntry } from './activity.js';
import { Client } from './client.js';
import { PAGE, fetchActivity, mountTimeline } from './timeline.js';
import {
  PRIORITY_LABELS,
  TASK_STATUSES,
  TASK_STATUS_LABELS,
  agoElement,
  closeOnLeave,
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
closeOnLeave(client);

const id = idFromLocation('agents');
const $ = (s) => document.getElementById(s);
const view = $('agent');
const notice = $('notice');

let agent = null;
let deleted = false;
const tasks = new Map();
/** Every agent by id, for names in the activity. */
const agents = new Map();

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
  followAssigned();
}

// ---- what it did and said ----

/** The task an entry is about, by its title, linked. */
function taskRef(entry) {
  const tid = entry.task_id ?? (entry.data && (entry.data.task_id ?? entry.data.id));
  const t = tasks.get(tid);
  const title = t ? t.title : entry.data && entry.data.title ? entry.data.title : `task ${tid}`;
  return [el('a', { class: 'task-ref', href: `/tasks/${tid}` }, title), ': '];
}

const activity = mountTimeline({
  client,
  agents,
  list: $('activity'),
  older: $('activity-older'),
  state: $('activity-state'),
  live: $('activity-live'),
  fetchOlder: (before) => fetchActivity(`/api/agents/${id}/activity`, before),
  lead: taskRef,
  empty: 'This agent has not changed a task or written a note yet.',
});

let seeded = false;
/** Live entries that came before the first page: added once it is in. */
const early = [];

function byThisAgent(entry) {
  return !!entry.by && entry.by.agent_id === id && isTimelineEntry(entry);
}

function addEntry(entry, fresh) {
  if (!byThisAgent(entry)) return;
  if (seeded) activity.add(entry, { fresh });
  else early.push(entry);
}

/** Adds the entry `seq` of task `taskId`'s activity (the timeline keys entries by seq). */
async function addHandOff(taskId, seq, fresh) {
  try {
    const page = await fetchActivity(`/api/tasks/${taskId}/activity`, seq + 1);
    for (const entry of page.items) if (entry.seq === seq) addEntry(entry, fresh);
  } catch {
    // The task may be gone already; the next full load shows what is left.
  }
}

/** The first page; after the `tasks` snapshot, so no live change falls between. */
async function loadActivity() {
  try {
    const page = await fetchActivity(`/api/agents/${id}/activity`, null);
    activity.seed(page.items, page.next_before);
  } catch (err) {
    activity.seed([], null);
    setText($('activity-state'), `Could not load the activity: ${errorText(err)}`);
  }
  seeded = true;
  for (const e of early.splice(0)) activity.add(e);
}

/** `task:M` subscriptions for the tasks assigned to this agent (its notes come there). */
const followed = new Set();

function followAssigned() {
  const mine = new Set([...tasks.values()].filter((t) => t.assignee_id === id).map((t) => t.id));
  for (const tid of mine) {
    if (followed.has(tid)) continue;
    followed.add(tid);
    client.subscribe(
      `task:${tid}`,
      {
        // The history holds notes written before the subscribe (and after the first page).
        snapshot: (_task, info) => (info.history || []).forEach((e) => addEntry(e, false)),
        event: (ev, { replayed }) => {
          if (ev.event === 'task.noted') addEntry(entryFromEvent(ev), !replayed);
        },
        error: () => followed.delete(tid),
      },
      null,
      { history: PAGE },
    );
  }
  for (const tid of followed) {
    if (mine.has(tid)) continue;
    followed.delete(tid);
    client.unsubscribe(`task:${tid}`);
  }
}

if (id === null) {
  showNotice('This address names no agent. Go back to the board.', 'gone');
  setText($('agent-title'), 'No such agent');
  view.removeAttribute('aria-busy');
  $('activity').removeAttribute('aria-busy');
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
  client.subscribe(`tasks?assignee_id=${id}`, {
    snapshot(list) {
      tasks.clear();
      for (const t of list) tasks.set(t.id, t);
      render();
      if (!seeded) loadActivity();
    },
    event(ev, { replayed }) {
      if (ev.event === 'task.deleted' || ev.event === 'task.left') tasks.delete(ev.data.id);
      else tasks.set(ev.data.id, ev.data);
      // A change that assigned the task to this agent comes as `entered`: in
      // the timeline it is the update it was. (A `left` carries only the id.)
      const entry = entryFromEvent(ev);
      if (entry.event === 'task.entered') entry.event = 'task.updated';
      addEntry(entry, !replayed);
      // A hand-off by this agent (it unassigned itself) comes as `left`
      // with only the id: the entry itself is read from the task's activity.
      if (ev.event === 'task.left' && ev.by && ev.by.agent_id === id) addHandOff(ev.data.id, ev.seq, !replayed);
      render();
    },
    error: (err) => showNotice(`Could not load the tasks: ${errorText(err)}`, 'error'),
  });
  client.subscribe('agents', {
    snapshot(list) {
      agents.clear();
      for (const a of list) agents.set(a.id, a);
      activity.render();
    },
    event(ev) {
      if (ev.event === 'agent.heartbeat') return;
      if (ev.event === 'agent.deleted') agents.delete(ev.data.id);
      else agents.set(ev.data.id, ev.data);
      activity.render();
    },
  });
  startTicking(client);
  client.connect();
}
