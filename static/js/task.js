// The task page: one task, live over `task:{id}` (with its activity as a
// timeline) and `agents` (for names). Edits carry `if_version`, so a change
// someone else saved first is never overwritten: a save beaten by a change to
// other fields goes again on top of it; one beaten on the same field asks.
// Who else has the page open shows live, from the topic's presence.

import { agentLink, entryFromEvent, isTimelineEntry } from './activity.js';
import { Client, newOpId } from './client.js';
import { PAGE, fetchActivity, mountTimeline } from './timeline.js';
import {
  PRIORITY_LABELS,
  TASK_STATUS_LABELS,
  agoElement,
  closeOnLeave,
  dateTime,
  el,
  errorText,
  flash,
  idFromLocation,
  mountConnection,
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

const id = idFromLocation('tasks');
const $ = (s) => document.getElementById(s);
const view = $('task');
const form = $('edit-form');
const fieldset = $('edit-fieldset');
const note = $('edit-note');
const msg = $('edit-msg');
const notice = $('notice');
const conflictBox = $('conflict');

/** The newest version of the task this page knows. */
let current = null;
let deleted = false;
/** The version the form was filled from; edits are saved against it. */
let base = null;
let saving = false;
/** The edit refused as a conflict: `{patch, baseVersion}`. */
let refused = null;
/** Every agent by id, from `agents`: names for the picker and the timeline. */
const agents = new Map();
/** Fields changed by the newest live event, highlighted on the next render. */
let justChanged = [];

const FIELDS = ['title', 'description', 'status', 'priority', 'assignee_id'];

function showNotice(text, kind = 'warn') {
  notice.className = `notice ${kind}`;
  setText(notice, text);
  notice.hidden = false;
}

function fieldLabel(f) {
  return { title: 'Title', description: 'Description', status: 'Status', priority: 'Priority', assignee_id: 'Assignee' }[f];
}

function agentName(aid) {
  const a = agents.get(aid);
  return a ? a.name : `agent ${aid}`;
}

function fieldText(f, v) {
  if (f === 'status') return TASK_STATUS_LABELS[v] || v;
  if (f === 'priority') return PRIORITY_LABELS[v] || `P${v}`;
  if (f === 'assignee_id') return v === null || v === undefined ? 'unassigned' : agentName(v);
  if (f === 'description') return v === '' ? '(empty)' : v;
  return String(v);
}

function row(dl, term, ...value) {
  dl.append(el('dt', {}, term), el('dd', {}, ...value));
}

function renderView() {
  view.removeAttribute('aria-busy');
  if (!current) return;
  const t = current;
  setText($('task-title'), deleted ? `${t.title} (deleted)` : t.title);
  setText($('crumb'), `Task #${t.id}`);
  document.title = `#${t.id} ${t.title} · taskwire`;
  view.dataset.version = String(t.version);
  view.classList.toggle('deleted', deleted);
  const dl = $('task-fields');
  dl.replaceChildren();
  row(dl, 'Status', el('span', { class: `badge st-${t.status}`, id: 'v-status' }, TASK_STATUS_LABELS[t.status] || t.status));
  row(dl, 'Priority', el('span', { id: 'v-priority' }, PRIORITY_LABELS[t.priority] || `P${t.priority}`));
  row(dl, 'Assignee', assigneeView(t));
  row(dl, 'Progress', progressView(t));
  const stuck = stuckReason(t, agents, stuckAfterMs(), client.serverNow());
  view.classList.toggle('stuck', !!stuck);
  view.dataset.stuck = stuck || '';
  if (stuck) row(dl, 'Stuck', el('span', { id: 'v-stuck', class: 'stuck-mark' }, `Stuck: ${stuck}`));
  row(dl, 'Version', el('span', { id: 'v-version' }, t.version));
  row(dl, 'Id', `#${t.id}`);
  row(dl, 'Created', dateTime(t.created_at));
  row(dl, 'Updated', dateTime(t.updated_at), ' (', agoElement(t.updated_at), ')');
  const desc = $('task-description');
  if (t.description) {
    desc.classList.remove('none');
    setText(desc, t.description);
  } else {
    desc.classList.add('none');
    setText(desc, 'No description.');
  }
  tickTimes(client, view);
  flashChanged();
  renderNoteForm();
}

function assigneeView(t) {
  if (t.assignee_id === null) return el('span', { id: 'v-assignee', class: 'none' }, 'unassigned');
  const link = agentLink(t.assignee_id, agents);
  link.id = 'v-assignee';
  const a = agents.get(t.assignee_id);
  return a ? [link, ' ', statusMark(a.status)] : link;
}

function progressView(t) {
  if (t.progress === null || t.progress === undefined) return el('span', { id: 'v-progress', class: 'none' }, 'not reported');
  return el(
    'span',
    { id: 'v-progress', class: 'progress' },
    el('progress', { max: 100, value: t.progress, 'aria-label': 'Progress' }),
    ` ${t.progress}%`,
  );
}

const FIELD_VIEW = {
  title: 'task-title',
  description: 'task-description',
  status: 'v-status',
  priority: 'v-priority',
  assignee_id: 'v-assignee',
  progress: 'v-progress',
};

/** Highlights the fields the newest live change touched, once. */
function flashChanged() {
  for (const f of justChanged) flash($(FIELD_VIEW[f]));
  justChanged = [];
}

function stuckAfterMs() {
  return client.hello ? client.hello.stuck_after_ms || 0 : 0;
}

/** Whether this token may add notes: people, and the agent the task is assigned to. */
function mayNote() {
  const h = client.hello;
  if (!h || !current || deleted) return false;
  if (h.role === 'admin' || h.role === 'member') return true;
  return h.role === 'agent' && h.agent_id === current.assignee_id;
}

function renderNoteForm() {
  $('note-form').hidden = !mayNote();
}

/**
 * The agent id the assignee box names: empty is unassigned; otherwise an
 * agent's exact name (or "agent 7", how an unknown agent is shown);
 * `undefined` when it names no agent.
 */
function assigneeFromText(text) {
  const s = text.trim();
  if (s === '') return null;
  for (const a of agents.values()) if (a.name === text || a.name === s) return a.id;
  const m = s.match(/^agent (\d+)$/);
  return m ? Number(m[1]) : undefined;
}

function assigneeText(aid) {
  return aid === null ? '' : agentName(aid);
}

function formValues() {
  return {
    title: form.title.value,
    description: form.description.value,
    status: form.status.value,
    priority: Number(form.priority.value),
    assignee_id: assigneeFromText(form.assignee_id.value),
  };
}

/** The fields whose form values differ from `from`. */
function diff(from, values) {
  const patch = {};
  for (const f of FIELDS) {
    let v = values[f];
    if (f === 'title') v = v.trim();
    if (v !== from[f]) patch[f] = v;
  }
  return patch;
}

function fillForm(t, overrides = {}) {
  const v = { ...t, ...overrides };
  form.title.value = v.title;
  form.description.value = v.description;
  form.status.value = v.status;
  form.priority.value = String(v.priority);
  form.assignee_id.value = assigneeText(v.assignee_id);
  base = t;
  updateNote();
}

function isDirty() {
  return base !== null && Object.keys(diff(base, formValues())).length > 0;
}

/** The fields of `patch` that also changed between `from` and `to`: the overlap. */
function overlap(patch, from, to) {
  return Object.keys(patch).filter((f) => from[f] !== to[f]);
}

function updateNote() {
  const dirty = isDirty();
  form.classList.toggle('dirty', dirty);
  $('discard').disabled = !dirty || saving;
  $('save').disabled = !dirty || saving || deleted;
  if (dirty && current && base && current.version !== base.version && !deleted) {
    note.hidden = false;
    note.className = 'form-note warn';
    const same = overlap(diff(base, formValues()), base, current).map(fieldLabel);
    const what = same.length
      ? `, including ${same.join(', ')}. Saving will not overwrite their change.`
      : ', in other fields. Your changes will be saved on top of theirs.';
    setText(
      note,
      `Someone else changed this task while you were editing (now version ${current.version}; you started from version ${base.version})${what}`,
    );
  } else {
    note.hidden = true;
  }
}

/**
 * Moves an edit in progress onto `task` when the change that made it touched
 * none of the edited fields: the form shows their values beside the edits,
 * and a save goes against the new version. Returns false if it overlaps.
 */
function rebase(task) {
  const patch = diff(base, formValues());
  if (overlap(patch, base, task).length > 0) return false;
  const focused = document.activeElement;
  const sel = focused && 'selectionStart' in focused ? [focused.selectionStart, focused.selectionEnd] : null;
  // The assignee box may hold a name being typed that names no agent yet.
  const typed = form.assignee_id.value;
  fillForm(task, patch);
  if ('assignee_id' in patch) form.assignee_id.value = typed;
  if (sel && focused === document.activeElement) {
    try {
      focused.setSelectionRange(...sel);
    } catch (_) {
      // not a text field
    }
  }
  return true;
}

/** Takes a newer version of the task, from an event or a reply. */
function accept(task) {
  if (current && task.version < current.version) return;
  current = task;
  renderView();
  if (!isDirty() && !saving) fillForm(current);
  else if (!saving && base && base.version !== current.version) rebase(current);
  updateNote();
  renderConflict();
  wakeWaiters();
}

function markDeleted() {
  deleted = true;
  fieldset.disabled = true;
  showNotice('This task was deleted. Nothing here can be edited any more.', 'gone');
  renderView();
  updateNote();
}

function renderConflict() {
  if (!refused) {
    conflictBox.hidden = true;
    return;
  }
  conflictBox.hidden = false;
  const theirs = current ? current.version : '?';
  setText(
    $('conflict-text'),
    `You edited version ${refused.baseVersion}, but the task is now at version ${theirs}. Their version is kept and shown on this page.`,
  );
  const dl = $('conflict-mine');
  dl.replaceChildren();
  for (const [f, v] of Object.entries(refused.patch)) row(dl, fieldLabel(f), fieldText(f, v));
}

form.addEventListener('input', updateNote);
form.addEventListener('change', updateNote);

/** Waiters for a version above theirs: `{version, resolve}`. */
const versionWaiters = new Set();

/**
 * The task once this page holds a version above `version`. A `conflict` reply
 * may come before the event of the change that caused it; the event follows.
 */
function newestAfter(version, ms = 3000) {
  if (current && current.version > version) return Promise.resolve(current);
  return new Promise((resolve) => {
    const w = { version, resolve };
    versionWaiters.add(w);
    setTimeout(() => versionWaiters.delete(w) && resolve(current), ms);
  });
}

function wakeWaiters() {
  for (const w of versionWaiters) {
    if (current && current.version > w.version) {
      versionWaiters.delete(w);
      w.resolve(current);
    }
  }
}

/**
 * Saves `patch` against `from`; a `conflict` caused by a change to other fields
 * is sent again on top of the new version, quietly. Resolves with the saved
 * task; rejects with the error (a `conflict` when they changed the same field).
 */
async function save(patch, from) {
  for (let attempt = 0; ; attempt++) {
    try {
      const { data } = await client.call('task.update', { id, if_version: from.version, patch });
      return data;
    } catch (err) {
      if (err.code !== 'conflict' || attempt >= 5) throw err;
      const now = await newestAfter(from.version);
      if (!now || now.version <= from.version || overlap(patch, from, now).length > 0) throw err;
      from = now;
    }
  }
}

form.addEventListener('submit', async (e) => {
  e.preventDefault();
  if (!base || saving || deleted) return;
  const values = formValues();
  const patch = diff(base, values);
  if (Object.keys(patch).length === 0) {
    setText(msg, 'Nothing to save.');
    return;
  }
  if (patch.title === '') {
    msg.className = 'form-msg error';
    setText(msg, 'A task needs a title.');
    form.title.focus();
    return;
  }
  if ('assignee_id' in patch && patch.assignee_id === undefined) {
    msg.className = 'form-msg error';
    setText(msg, `No agent is called “${form.assignee_id.value.trim()}”. Pick one from the list, or leave it empty.`);
    form.assignee_id.focus();
    return;
  }
  const from = base;
  saving = true;
  updateNote();
  msg.className = 'form-msg';
  setText(msg, 'Saving…');
  try {
    const data = await save(patch, from);
    saving = false;
    refused = null;
    msg.className = 'form-msg ok';
    setText(msg, `Saved as version ${data.version}.`);
    base = null;
    accept(data);
    fillForm(current);
  } catch (err) {
    saving = false;
    if (err.code === 'conflict') {
      refused = { patch, baseVersion: from.version };
      msg.className = 'form-msg error';
      setText(msg, 'Not saved: the task changed first. Their version is shown.');
      fillForm(current);
      renderConflict();
      conflictBox.focus();
    } else if (err.code === 'not_found') {
      markDeleted();
      msg.className = 'form-msg error';
      setText(msg, 'Not saved: the task no longer exists.');
    } else {
      msg.className = 'form-msg error';
      setText(msg, `Not saved: ${errorText(err)}`);
    }
    updateNote();
  }
});

$('discard').addEventListener('click', () => {
  if (current) fillForm(current);
  setText(msg, '');
});

$('conflict-reapply').addEventListener('click', () => {
  if (!refused || !current) return;
  fillForm(current, refused.patch);
  refused = null;
  renderConflict();
  setText(msg, 'Your changes are back in the form, on top of the current version. Check them and save again.');
  form.title.focus();
});

$('conflict-dismiss').addEventListener('click', () => {
  refused = null;
  renderConflict();
  form.title.focus();
});

let armed = null;
$('delete').addEventListener('click', async () => {
  const button = $('delete');
  if (!current || deleted) return;
  if (!armed) {
    setText(button, 'Click again to delete');
    armed = setTimeout(() => {
      armed = null;
      setText(button, 'Delete task');
    }, 5000);
    return;
  }
  clearTimeout(armed);
  armed = null;
  setText(button, 'Delete task');
  try {
    await client.call('task.delete', { id, if_version: current.version });
    markDeleted();
  } catch (err) {
    msg.className = 'form-msg error';
    setText(msg, err.code === 'conflict' ? 'Not deleted: the task changed first. Look at the new version.' : `Not deleted: ${errorText(err)}`);
  }
});

// ---- the timeline and notes ----

const timeline = mountTimeline({
  client,
  agents,
  list: $('timeline'),
  older: $('timeline-older'),
  state: $('timeline-state'),
  live: $('timeline-live'),
  fetchOlder: (before) => fetchActivity(`/api/tasks/${id}/activity`, before),
});

const noteForm = $('note-form');
const noteMsg = $('note-msg');
noteForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const text = noteForm.text.value;
  if (text.trim() === '') {
    noteMsg.className = 'form-msg error';
    setText(noteMsg, 'A note needs some text.');
    noteForm.text.focus();
    return;
  }
  const params = { id, text };
  const p = noteForm.progress.value.trim();
  if (p !== '') {
    const n = Number(p);
    if (!(Number.isInteger(n) && n >= 0 && n <= 100)) {
      noteMsg.className = 'form-msg error';
      setText(noteMsg, 'Progress is a whole number from 0 to 100, or empty.');
      noteForm.progress.focus();
      return;
    }
    params.progress = n;
  }
  const button = $('note-send');
  button.disabled = true;
  noteMsg.className = 'form-msg';
  setText(noteMsg, 'Adding…');
  try {
    // The op_id makes a note re-sent after a drop count once.
    const { data } = await client.call('task.note', params, { opId: newOpId() });
    timeline.add(data);
    noteForm.reset();
    noteMsg.className = 'form-msg ok';
    setText(noteMsg, 'Note added.');
  } catch (err) {
    noteMsg.className = 'form-msg error';
    setText(noteMsg, `Not added: ${errorText(err)}`);
  } finally {
    button.disabled = false;
  }
});

// ---- agents: names for the picker, the timeline and the stuck check ----

function renderPicker() {
  const list = $('agent-names');
  const names = [...agents.values()].map((a) => a.name).sort((a, b) => a.localeCompare(b));
  if (list.dataset.names === names.join('\n')) return;
  list.dataset.names = names.join('\n');
  list.replaceChildren(...names.map((n) => el('option', { value: n })));
}

function agentsChanged() {
  renderPicker();
  timeline.render();
  if (!current) return;
  renderView();
  // The box shows a name: refill it when the names came or changed.
  if (!isDirty() && !saving) fillForm(current);
}

// ---- who else is viewing ----

/** Who holds `task:{id}` now, by token id (this page's own token included). */
const viewers = new Map();

/** "Builder Two" → "BT", "alice" → "AL". */
function initials(name) {
  const words = String(name || '?').split(/[\s._-]+/).filter(Boolean);
  // By code point, so a name that starts with an emoji keeps it whole.
  const first = (w) => [...w][0] || '';
  const s = words.length > 1 ? first(words[0]) + first(words[1]) : [...(words[0] || '?')].slice(0, 2).join('');
  return s.toUpperCase();
}

function renderViewers() {
  const own = client.hello ? client.hello.token_id : null;
  const others = [...viewers.values()]
    .filter((v) => v.token_id !== own)
    .sort((a, b) => a.name.localeCompare(b.name) || a.token_id - b.token_id);
  $('viewer-list').replaceChildren(
    ...others.map((v) => {
      const label = v.role === 'agent' ? `${v.name} (agent)` : v.name;
      return el(
        'li',
        { class: `viewer role-${v.role}`, title: label, dataset: { tokenId: v.token_id } },
        el('span', { class: 'initials', 'aria-hidden': 'true' }, initials(v.name)),
        el('span', { class: 'visually-hidden' }, label),
      );
    }),
  );
  $('viewers').hidden = others.length === 0;
}

function setViewers(list) {
  viewers.clear();
  for (const v of list || []) viewers.set(v.token_id, v);
  renderViewers();
}

if (id === null) {
  showNotice('This address names no task. Go back to the board.', 'gone');
  setText($('task-title'), 'No such task');
  view.removeAttribute('aria-busy');
  $('timeline').removeAttribute('aria-busy');
} else {
  client.subscribe(
    `task:${id}`,
    {
      snapshot(task, info) {
        setViewers(info.presence);
        deleted = false;
        notice.hidden = true;
        fieldset.disabled = false;
        current = null;
        accept(task);
        // A fresh snapshot (first, or after a long disconnect) brings the
        // timeline's newest entries in the same reply: start over from them.
        const history = info.history || [];
        timeline.seed(history, history.length >= PAGE ? history[history.length - 1].seq : null);
      },
      resumed: (info) => setViewers(info.presence),
      presence(frame) {
        if (frame.event === 'presence.joined') viewers.set(frame.data.token_id, frame.data);
        else if (frame.event === 'presence.left') viewers.delete(frame.data.token_id);
        renderViewers();
      },
      event(ev, { replayed }) {
        if (ev.event === 'task.deleted') {
          markDeleted();
          return;
        }
        const entry = entryFromEvent(ev);
        if (isTimelineEntry(entry)) timeline.add(entry, { fresh: !replayed });
        if (ev.data && ev.data.id === id && ev.event !== 'task.noted') {
          if (!replayed) justChanged = (ev.changed || []).filter((f) => f in FIELD_VIEW);
          accept(ev.data);
        }
      },
      error(err) {
        view.removeAttribute('aria-busy');
        $('timeline').removeAttribute('aria-busy');
        if (err.code === 'not_found') {
          if (current) markDeleted();
          else {
            setText($('task-title'), `Task #${id} not found`);
            showNotice(`There is no task #${id}. It may have been deleted.`, 'gone');
          }
        } else {
          showNotice(`Could not load the task: ${errorText(err)}`, 'error');
        }
      },
    },
    null,
    { history: PAGE, presence: true },
  );
  // Nobody is shown while the page cannot know who is there.
  client.on('disconnect', () => setViewers([]));
  client.subscribe('agents', {
    snapshot(list) {
      agents.clear();
      for (const a of list) agents.set(a.id, a);
      agentsChanged();
    },
    event(ev) {
      if (ev.event === 'agent.deleted') agents.delete(ev.data.id);
      else if (ev.event === 'agent.heartbeat') return;
      else agents.set(ev.data.id, ev.data);
      agentsChanged();
    },
    error: (err) => showNotice(`Could not load the agents: ${errorText(err)}`, 'error'),
  });
  client.on('hello', () => current && renderView());
  // Time alone makes a task stuck: look again now and then.
  setInterval(() => {
    const stuck = stuckReason(current, agents, stuckAfterMs(), client.serverNow()) || '';
    if (current && stuck !== view.dataset.stuck) renderView();
  }, 1000);
  startTicking(client);
  client.connect();
}
