// The task page: one task, live over `task:{id}` only. Edits carry
// `if_version`, so a change someone else saved first is never overwritten: the
// page says so and shows their version.

import { Client } from './client.js';
import {
  PRIORITY_LABELS,
  TASK_STATUS_LABELS,
  agoElement,
  dateTime,
  el,
  errorText,
  idFromLocation,
  mountConnection,
  setChildren,
  setText,
  startTicking,
  tickTimes,
} from './ui.js';

const client = new Client();
window.taskwire = client;
mountConnection(client, document.getElementById('conn'));

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

const FIELDS = ['title', 'description', 'status', 'priority', 'assignee_id'];

function showNotice(text, kind = 'warn') {
  notice.className = `notice ${kind}`;
  setText(notice, text);
  notice.hidden = false;
}

function fieldLabel(f) {
  return { title: 'Title', description: 'Description', status: 'Status', priority: 'Priority', assignee_id: 'Assignee' }[f];
}

function fieldText(f, v) {
  if (f === 'status') return TASK_STATUS_LABELS[v] || v;
  if (f === 'priority') return PRIORITY_LABELS[v] || `P${v}`;
  if (f === 'assignee_id') return v === null ? 'unassigned' : `agent ${v}`;
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
  row(
    dl,
    'Assignee',
    t.assignee_id === null
      ? el('span', { id: 'v-assignee', class: 'none' }, 'unassigned')
      : el('a', { id: 'v-assignee', href: `/agents/${t.assignee_id}` }, `agent ${t.assignee_id}`),
  );
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
}

function formValues() {
  const assignee = form.assignee_id.value.trim();
  return {
    title: form.title.value,
    description: form.description.value,
    status: form.status.value,
    priority: Number(form.priority.value),
    assignee_id: assignee === '' ? null : Number(assignee),
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
  form.assignee_id.value = v.assignee_id === null ? '' : String(v.assignee_id);
  base = t;
  updateNote();
}

function isDirty() {
  return base !== null && Object.keys(diff(base, formValues())).length > 0;
}

function updateNote() {
  const dirty = isDirty();
  form.classList.toggle('dirty', dirty);
  $('discard').disabled = !dirty || saving;
  $('save').disabled = !dirty || saving || deleted;
  if (dirty && current && base && current.version !== base.version && !deleted) {
    note.hidden = false;
    note.className = 'form-note warn';
    setText(
      note,
      `Someone else changed this task while you were editing (now version ${current.version}; you started from version ${base.version}). Saving will not overwrite their change.`,
    );
  } else {
    note.hidden = true;
  }
}

/** Takes a newer version of the task, from an event or a reply. */
function accept(task) {
  if (current && task.version < current.version) return;
  current = task;
  renderView();
  if (!isDirty() && !saving) fillForm(current);
  else updateNote();
  renderConflict();
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
  if (patch.assignee_id !== undefined && patch.assignee_id !== null && !(Number.isSafeInteger(patch.assignee_id) && patch.assignee_id > 0)) {
    msg.className = 'form-msg error';
    setText(msg, 'The assignee is an agent id (a positive whole number), or empty.');
    form.assignee_id.focus();
    return;
  }
  const baseVersion = base.version;
  saving = true;
  updateNote();
  msg.className = 'form-msg';
  setText(msg, 'Saving…');
  try {
    const { data } = await client.call('task.update', { id, if_version: baseVersion, patch });
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
      refused = { patch, baseVersion };
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

if (id === null) {
  showNotice('This address names no task. Go back to the board.', 'gone');
  setText($('task-title'), 'No such task');
  view.removeAttribute('aria-busy');
} else {
  client.subscribe(`task:${id}`, {
    snapshot(task) {
      deleted = false;
      notice.hidden = true;
      fieldset.disabled = false;
      current = null;
      accept(task);
    },
    event(ev) {
      if (ev.event === 'task.deleted') markDeleted();
      else if (ev.data && ev.data.id === id) accept(ev.data);
    },
    error(err) {
      view.removeAttribute('aria-busy');
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
  });
  startTicking(client);
  client.connect();
}
