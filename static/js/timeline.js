// A live list of activity entries, newest first: seeded from a subscribe's
// history (or a first page), grown by live events and by older pages loaded
// when the reader scrolls to its end. Entries are keyed by seq, so an entry
// that arrives twice (history and a replayed event, a page and a live event)
// shows once.

import { entryElement, entryText, namesKey } from './activity.js';
import { el, errorText, flash, setText, tickTimes } from './ui.js';

/** Page size of older entries; also what a subscribe's history asks for. */
export const PAGE = 50;

/**
 * `list` is the `<ol>` (a scroll box), `older` the "Load older" button, `state`
 * a text for loading and errors, `live` a polite live region. `fetchOlder(before)`
 * resolves with `{items, next_before}`. `lead(entry)` gives nodes put before an
 * entry's text (e.g. its task on the agent page).
 */
export function mountTimeline({ client, agents, list, older, state, live, fetchOlder, lead = () => null, empty = 'Nothing has happened yet.' }) {
  const entries = new Map();
  const els = new Map();
  let nextBefore = null;
  let seeded = false;
  let loading = false;
  let gen = 0;
  let names = '';

  function render() {
    const key = namesKey(agents);
    if (key !== names) {
      // A rename shows in every entry that names the agent.
      names = key;
      els.clear();
    }
    const wanted = [...entries.values()].filter((e) => !toldByNote(e, entries)).sort((a, b) => b.seq - a.seq).map((e) => {
      let li = els.get(e.seq);
      if (!li) {
        li = entryElement(e, agents, lead(e));
        els.set(e.seq, li);
      }
      return li;
    });
    const keep = new Set(wanted);
    for (const child of [...list.children]) if (!keep.has(child)) child.remove();
    wanted.forEach((node, i) => {
      if (list.children[i] !== node) list.insertBefore(node, list.children[i] || null);
    });
    if (seeded && entries.size === 0) list.append(el('li', { class: 'empty' }, empty));
    if (seeded) list.removeAttribute('aria-busy');
    older.hidden = nextBefore === null;
    tickTimes(client, list);
  }

  /** Replaces everything with a fresh first page (`items` newest first). */
  function seed(items, next) {
    gen++;
    loading = false;
    entries.clear();
    for (const e of items) entries.set(e.seq, e);
    nextBefore = next;
    seeded = true;
    setText(state, '');
    render();
  }

  /** Adds one entry; a live one is highlighted, and announced if someone else made it. */
  function add(entry, { fresh = false } = {}) {
    if (entries.has(entry.seq)) return;
    entries.set(entry.seq, entry);
    render();
    if (!fresh) return;
    flash(els.get(entry.seq));
    const mine = client.hello && entry.by && entry.by.token_id === client.hello.token_id;
    if (!mine) setText(live, entryText(entry, agents));
  }

  async function loadOlder() {
    if (loading || nextBefore === null) return;
    loading = true;
    const mine = gen;
    setText(state, 'Loading older entries…');
    try {
      const page = await fetchOlder(nextBefore);
      if (mine !== gen) return;
      for (const e of page.items) if (!entries.has(e.seq)) entries.set(e.seq, e);
      nextBefore = page.next_before;
      setText(state, nextBefore === null ? 'That is the beginning.' : '');
      render();
    } catch (err) {
      if (mine === gen) setText(state, `Could not load older entries: ${errorText(err)}`);
    } finally {
      if (mine === gen) loading = false;
    }
  }

  older.addEventListener('click', loadOlder);
  list.addEventListener('scroll', () => {
    if (list.scrollTop + list.clientHeight >= list.scrollHeight - 40) loadOlder();
  });

  return { seed, add, render, loadOlder, has: (seq) => entries.has(seq) };
}

/**
 * True for the progress change a note made (the change right before it, of
 * `progress` only, to the note's value): the note shows the progress, once.
 */
function toldByNote(e, entries) {
  if (e.event !== 'task.updated' || !e.changed || e.changed.length !== 1 || e.changed[0] !== 'progress') return false;
  const note = entries.get(e.seq + 1);
  return !!note && note.event === 'task.noted' && note.data && e.data && note.data.progress === e.data.progress;
}

/** GETs a page of activity with the page's session; rejects with `{code, message}`. */
export async function fetchActivity(path, before) {
  const from = before === null ? '' : `before=${before}&`;
  const res = await fetch(`${path}?${from}limit=${PAGE}`, { credentials: 'same-origin' });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw body.error || { code: String(res.status), message: res.statusText };
  return body;
}
