// Activity entries (a task's changes and the notes on it) told as sentences a
// person reads: "builder-2 moved this to In progress · 2 min ago". Names come
// from the live agents list, so a renamed agent shows its current name.

import { PRIORITY_LABELS, TASK_STATUS_LABELS, agoElement, el } from './ui.js';

/** An activity entry from an event frame: the frame without `type` and `topic`. */
export function entryFromEvent(ev) {
  const { type, topic, ...entry } = ev;
  if (entry.task_id === undefined && entry.data) entry.task_id = entry.data.task_id ?? entry.data.id;
  return entry;
}

/** True for the entries a task's timeline shows. */
export function isTimelineEntry(entry) {
  return typeof entry.seq === 'number' && ['task.created', 'task.updated', 'task.noted'].includes(entry.event);
}

/** An agent's name, linked to its page; `agents` maps id to agent. */
export function agentLink(id, agents, fallback) {
  const a = agents.get(id);
  const name = a ? a.name : fallback || `agent ${id}`;
  return el('a', { class: 'who agent-link', href: `/agents/${id}`, dataset: { agentId: id } }, name);
}

/** Who made an entry: an agent (linked, by its current name), a person, or the server. */
export function authorNode(by, agents) {
  if (!by) return el('span', { class: 'who none' }, 'Someone');
  if (by.kind === 'system') return el('span', { class: 'who system' }, 'taskwire');
  if (by.kind === 'agent' && by.agent_id) return agentLink(by.agent_id, agents, by.name);
  return el('span', { class: 'who person', title: by.kind }, by.name || 'Someone');
}

const quote = (s) => `“${s}”`;
const prio = (p) => PRIORITY_LABELS[p] || `P${p}`;
const status = (s) => TASK_STATUS_LABELS[s] || s;

/** One changed field as a phrase (an array of strings and nodes); `by` made it. */
function phrase(field, before, after, hasBefore, agents, by) {
  switch (field) {
    case 'status':
      return [`moved this to ${status(after)}`];
    case 'title':
      return hasBefore ? [`renamed it from ${quote(before)} to ${quote(after)}`] : [`renamed it to ${quote(after)}`];
    case 'priority':
      return hasBefore ? [`changed priority from ${prio(before)} to ${prio(after)}`] : [`changed priority to ${prio(after)}`];
    case 'assignee_id':
      if (after === null) return hasBefore && before !== null ? ['unassigned ', agentLink(before, agents)] : ['unassigned it'];
      // An agent assigning itself (a claim) took the task.
      if (by && by.agent_id === after) return ['took it'];
      return ['assigned it to ', agentLink(after, agents)];
    case 'description':
      return ['edited the description'];
    case 'progress':
      return after === null ? ['cleared the progress'] : [`set progress to ${after}%`];
    default:
      return [`changed ${field}`];
  }
}

/** Joins phrases as "a, b and c". */
function joinPhrases(list) {
  const out = [];
  list.forEach((p, i) => {
    if (i > 0) out.push(i === list.length - 1 ? ' and ' : ', ');
    out.push(...p);
  });
  return out;
}

// Who has it, then where it is: "took it and moved this to In progress".
const ORDER = ['assignee_id', 'status', 'title', 'priority', 'progress', 'description'];

/** What a change entry did, as phrases without its author. */
export function changeText(entry, agents) {
  if (entry.event === 'task.created') return ['created this task'];
  const before = entry.before || {};
  const changed = [...(entry.changed || [])].sort((a, b) => {
    const ia = ORDER.indexOf(a);
    const ib = ORDER.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib);
  });
  const after = (f) => (entry.data ? entry.data[f] : undefined);
  const phrases = changed.map((f) => phrase(f, before[f], after(f), f in before, agents, entry.by));
  return phrases.length ? joinPhrases(phrases) : ['changed nothing visible'];
}

/**
 * The list item of one entry. `lead` (optional nodes) comes first, e.g. the
 * task's link on the agent page.
 */
export function entryElement(entry, agents, lead = null) {
  const time = el('span', { class: 'when' }, ' · ', agoElement(entry.at));
  if (entry.event === 'task.noted') {
    const d = entry.data || {};
    return el(
      'li',
      { class: 'entry note', dataset: { seq: entry.seq } },
      el('p', { class: 'entry-head' }, lead, authorNode(entry.by, agents), ' wrote', time),
      el('blockquote', { class: 'note-text' }, d.text || ''),
      typeof d.progress === 'number' ? el('p', { class: 'note-progress' }, `Progress ${d.progress}%`) : null,
    );
  }
  return el(
    'li',
    { class: 'entry change', dataset: { seq: entry.seq } },
    el('p', { class: 'entry-head' }, lead, authorNode(entry.by, agents), ' ', ...changeText(entry, agents), time),
  );
}

/** The plain text of an entry, for a screen reader's announcement. */
export function entryText(entry, agents) {
  const who = authorNode(entry.by, agents).textContent;
  if (entry.event === 'task.noted') return `${who}: ${(entry.data || {}).text || ''}`;
  const p = el('p', {}, ...changeText(entry, agents));
  return `${who} ${p.textContent}`;
}

/** A key that changes when any agent's name does: entries then need new names. */
export function namesKey(agents) {
  return [...agents.values()].map((a) => `${a.id}:${a.name}`).join('\n');
}
