// Small DOM helpers shared by the pages: element building, labels, relative
// times and the connection indicator. No framework; plain ES module.

export const TASK_STATUSES = ['todo', 'in_progress', 'blocked', 'review', 'done'];
export const TASK_STATUS_LABELS = {
  todo: 'To do',
  in_progress: 'In progress',
  blocked: 'Blocked',
  review: 'Review',
  done: 'Done',
};
export const AGENT_STATUSES = ['idle', 'busy', 'error', 'offline'];
export const PRIORITY_LABELS = ['P0 low', 'P1 normal', 'P2 high', 'P3 urgent'];

/**
 * Builds an element: `el('a', {href: '/', class: 'x', dataset: {id: 1}}, 'text', child)`.
 * Attributes named `on*` with a function become listeners; `hidden`, `disabled`
 * and other booleans are set as properties.
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') {
      node.addEventListener(key.slice(2), value);
    } else if (value === true) node.setAttribute(key, '');
    else node.setAttribute(key, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces the children of `node`. */
export function setChildren(node, ...children) {
  node.replaceChildren();
  append(node, children);
}

/** Sets text only when it differs, so screen readers and selection are not disturbed. */
export function setText(node, text) {
  const s = String(text);
  if (node.textContent !== s) node.textContent = s;
}

/** "just now", "3 s ago", "4 min ago", "2 h ago", "3 d ago". */
export function agoText(ms) {
  if (ms < 1000) return 'just now';
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ago`;
  return `${Math.floor(h / 24)} d ago`;
}

/** A local clock time, e.g. "14:03:22". */
export function clockTime(date) {
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/** A local date and time for an RFC 3339 string. */
export function dateTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString([], {
    year: 'numeric',
    month: 'short',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
  });
}

/** A `<time>` element showing how long ago `iso` was; kept ticking by `tickTimes`. */
export function agoElement(iso, prefix = '') {
  const t = el('time', { class: 'ago', datetime: iso || '' });
  t.dataset.prefix = prefix;
  if (iso) t.title = dateTime(iso);
  return t;
}

/** Refreshes every `time.ago` under `root` against the server's clock. */
export function tickTimes(client, root = document) {
  const now = client.serverNow();
  for (const t of root.querySelectorAll('time.ago')) {
    const iso = t.getAttribute('datetime');
    const prefix = t.dataset.prefix || '';
    if (!iso) {
      setText(t, prefix ? `${prefix} never` : 'never');
      continue;
    }
    const text = agoText(Math.max(0, now - Date.parse(iso)));
    setText(t, prefix ? `${prefix} ${text}` : text);
  }
}

/** Starts the once-a-second refresh of relative times. */
export function startTicking(client) {
  tickTimes(client);
  setInterval(() => tickTimes(client), 1000);
}

/** A coloured status mark with its text label (colour never carries meaning alone). */
export function statusMark(status) {
  return el(
    'span',
    { class: `agent-status status-${status}` },
    el('span', { class: 'mark', 'aria-hidden': 'true' }),
    el('span', { class: 'label' }, status),
  );
}

/** Task id from `/tasks/42`, `/agents/42` or `?id=42`. */
export function idFromLocation(kind) {
  const m = location.pathname.match(new RegExp(`/${kind}/(\\d+)/?$`));
  const raw = m ? m[1] : new URLSearchParams(location.search).get('id');
  const id = Number(raw);
  return Number.isSafeInteger(id) && id > 0 ? id : null;
}

/** A message for a failed call or subscribe. */
export function errorText(err) {
  if (!err) return 'Something went wrong.';
  const code = err.code ? `${err.code}: ` : '';
  return `${code}${err.message || 'failed'}`;
}

/**
 * Binds the connection indicator (`.conn` in the page header) to a client:
 * live, catching up, or reconnecting with the next try's countdown, and the
 * time of the last change seen. While there is no connection a banner says so
 * and every `[data-writes]` element (the forms that change things) is inert:
 * a write made then would only wait for the connection, unseen.
 */
export function mountConnection(client, root) {
  const text = root.querySelector('.conn-text');
  const announce = root.querySelector('.conn-announce');
  const retry = root.querySelector('.conn-retry');
  const last = root.querySelector('.conn-last');
  const login = root.querySelector('.conn-login');
  retry.addEventListener('click', () => client.retryNow());
  const banner = el(
    'p',
    { class: 'offline-banner', id: 'offline-banner', hidden: true },
    'Not connected: this page is not live and changes cannot be saved until the connection is back.',
  );
  (root.closest('header') || root).after(banner);

  const render = () => {
    const st = client.state;
    let shown = st.state;
    let label;
    switch (st.state) {
      case 'live':
        label = 'Live';
        break;
      case 'catching_up':
        label = 'Catching up…';
        shown = 'catching-up';
        break;
      case 'connecting':
      case 'reconnecting': {
        const verb = st.state === 'connecting' ? 'Connecting' : 'Reconnecting';
        if (st.retryAt) {
          const secs = Math.max(0, Math.ceil((st.retryAt - Date.now()) / 1000));
          label = `${verb} in ${secs} s`;
        } else {
          label = `${verb}…`;
        }
        break;
      }
      case 'closed':
        label = 'Closed';
        break;
      default:
        label = 'Starting…';
    }
    root.dataset.state = shown;
    setText(text, label);
    const connected = st.state === 'live' || st.state === 'catching_up';
    for (const w of document.querySelectorAll('[data-writes]')) w.inert = !connected;
    // A page still opening its first socket is not "lost" until a try failed.
    banner.hidden = connected || (st.state === 'connecting' && !st.lastClose) || st.state === 'idle';
    retry.hidden = !st.retryAt;
    // A socket that never opened may mean there is no session: offer to log in.
    if (login) login.hidden = !(st.state === 'connecting' && st.attempt >= 2);
    const lc = client.lastChange;
    setText(
      last,
      lc ? `Last change #${lc.seq} at ${clockTime(lc.at)}` : 'No change seen yet',
    );
    if (lc) last.dataset.seq = String(lc.seq);
  };
  let announced = '';
  client.on('state', (st) => {
    render();
    // Announce state changes once, not every countdown tick.
    const word = { live: 'Live', catching_up: 'Catching up', reconnecting: 'Connection lost, reconnecting', connecting: 'Connecting', closed: 'Closed' }[st.state] || '';
    if (word !== announced) {
      announced = word;
      setText(announce, word);
    }
  });
  client.on('change', render);
  setInterval(render, 500);
  render();
}

/**
 * Closes the client when the page is left, so others see this viewer go at
 * once (a page kept in the back-forward cache would otherwise hold its socket,
 * and its presence, open). A page brought back from that cache loads afresh.
 */
export function closeOnLeave(client) {
  addEventListener('pagehide', () => client.close());
  addEventListener('pageshow', (e) => {
    if (e.persisted) location.reload();
  });
}

/** "45 s", "30 min", "2 h", "3 d": a length of time. */
export function durationText(ms) {
  return agoText(ms).replace(/ ago$/, '').replace('just now', '0 s');
}

/**
 * Why an `in_progress` task counts as stuck, or null: its assignee is offline,
 * or it has not changed for longer than the server's `stuck_after_ms`. The
 * reason names the threshold, not the exact age, so it does not change every
 * second.
 */
export function stuckReason(task, agents, stuckAfterMs, now) {
  if (!task || task.status !== 'in_progress') return null;
  const a = task.assignee_id === null ? null : agents.get(task.assignee_id);
  if (a && a.status === 'offline') return `${a.name} is offline`;
  if (stuckAfterMs > 0 && now - Date.parse(task.updated_at) > stuckAfterMs) {
    return `unchanged for over ${durationText(stuckAfterMs)}`;
  }
  return null;
}

/**
 * Marks `node` as just changed for a moment (class `flash`). The stylesheet
 * animates it, or, under `prefers-reduced-motion`, shows a still outline.
 */
export function flash(node) {
  if (!node) return;
  node.classList.remove('flash');
  // Reading the layout restarts the animation when the node flashes again.
  void node.offsetWidth;
  node.classList.add('flash');
  clearTimeout(node._flashTimer);
  node._flashTimer = setTimeout(() => node.classList.remove('flash'), 2000);
}
