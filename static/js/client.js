// The taskwire client: one WebSocket, subscriptions that resume after any
// disconnect, calls that return promises and are never applied twice.
//
// Plain ES module, no dependencies. Works in browsers (the page's cookie
// authenticates the socket) and in Node 22+ or with the `ws` package (pass
// `createSocket` to send an Authorization header). See docs/client.md.

/** Defaults of every option; see docs/client.md. */
export const DEFAULTS = Object.freeze({
  /** First reconnect delay ceiling; doubles per failed attempt. */
  backoffBaseMs: 500,
  /** Largest reconnect delay ceiling (in a browser page: `pageBackoffCapMs`). */
  backoffCapMs: 30000,
  /** Largest reconnect delay ceiling in a browser page, unless `backoffCapMs`
   * is given: a page is back within about a second of its server. It holds
   * for the first `pageFastMs` of an outage of a page that was connected;
   * then (and for a page that never connected) `backoffCapMs` does. */
  pageBackoffCapMs: 1000,
  /** How long a page that lost its connection retries at `pageBackoffCapMs`. */
  pageFastMs: 120000,
  /** Send a ping when nothing was received for this long. */
  pingIntervalMs: 15000,
  /** Close the socket as dead when a ping got no frame back for this long. */
  pingTimeoutMs: 10000,
  /** Give up on a socket that did not say hello within this long. */
  connectTimeoutMs: 10000,
  /** A connection that lasted this long resets the backoff. */
  stableAfterMs: 5000,
  /** Delay before re-sending a call or subscribe answered `unavailable` or `rate_limited`. */
  retryBusyMs: 1000,
});

/** A failed request: `code` is the contract's error code (or `timeout`, `closed`). */
export class TaskwireError extends Error {
  constructor(code, message) {
    super(message || code);
    this.name = 'TaskwireError';
    this.code = code;
  }
}

/** The socket URL of the page's own server. */
export function defaultUrl() {
  const loc = globalThis.location;
  if (!loc) throw new Error('taskwire: no location; pass options.url');
  return (loc.protocol === 'https:' ? 'wss' : 'ws') + '://' + loc.host + '/ws';
}

/** A fresh random op_id (128 bits, hex or UUID). */
export function newOpId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  const bytes = new Uint8Array(16);
  c.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^attempt)). */
export function backoffDelay(attempt, baseMs, capMs, random = Math.random) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

const RETRYABLE = new Set(['unavailable', 'rate_limited']);

/**
 * One connection to a taskwire server.
 *
 * States (`client.state.state`): `idle` (not started), `connecting` (never
 * connected yet), `reconnecting` (lost the socket; `retryAt` is when the next
 * try starts, null while it is trying), `catching_up` (connected, waiting for
 * subscribe replies), `live`, `closed`.
 */
export class Client {
  constructor(options = {}) {
    this.options = { ...DEFAULTS, ...options };
    /** A page (not given `backoffCapMs`) retries fast for a while after a drop. */
    this._page = options.backoffCapMs === undefined && typeof document !== 'undefined';
    /** When the current outage began (the first drop after a hello), or 0. */
    this._downSince = 0;
    this.url = options.url || defaultUrl();
    this.hello = null;
    /** The newest change seen on any topic: `{seq, at: Date, event}` or null. */
    this.lastChange = null;
    this._listeners = new Map();
    this._subs = new Map();
    this._calls = new Map();
    this._byRef = new Map();
    this._nextRef = 1;
    this._nextCall = 1;
    this._ws = null;
    this._gen = 0;
    this._ready = false;
    this._everConnected = false;
    this._closed = false;
    this._attempt = 0;
    this._helloAt = 0;
    this._lastFrameAt = 0;
    this._pingRef = null;
    this._pingSentAt = 0;
    this._skew = null;
    this._timers = { retry: null, connect: null, watchdog: null };
    this._state = { state: 'idle', attempt: 0, retryAt: null, lastClose: null };
    if (typeof globalThis.addEventListener === 'function') {
      globalThis.addEventListener('online', () => this.retryNow());
    }
    if (typeof document !== 'undefined' && typeof document.addEventListener === 'function') {
      // A tab brought back to view retries at once, not at its next backoff.
      document.addEventListener('visibilitychange', () => {
        if (document.visibilityState === 'visible') this.retryNow();
      });
    }
  }

  // ---- events ----

  /**
   * Listens to `state` (the state object), `hello` (the hello frame),
   * `change` (each event with a seq, and `{replayed}`), `disconnect`
   * (`{code, reason}`) or `error` (an Error not tied to a request).
   * Returns a function that stops listening.
   */
  on(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return () => this._listeners.get(name).delete(fn);
  }

  _emit(name, ...args) {
    for (const fn of this._listeners.get(name) || []) {
      try {
        fn(...args);
      } catch (e) {
        this._report(e);
      }
    }
  }

  _report(e) {
    if ((this._listeners.get('error') || new Set()).size > 0 && !e._taskwireReported) {
      e._taskwireReported = true;
      this._emit('error', e);
    } else {
      setTimeout(() => {
        throw e;
      });
    }
  }

  /** The connection state: `{state, attempt, retryAt, lastClose}` (see the class doc). */
  get state() {
    return this._state;
  }

  _setState(state, extra = {}) {
    this._state = {
      state,
      attempt: this._attempt,
      retryAt: null,
      lastClose: this._state.lastClose,
      ...extra,
    };
    this._emit('state', this._state);
  }

  /** The server's clock as this client estimates it, in ms since the epoch. */
  serverNow() {
    return Date.now() - (this._skew ?? 0);
  }

  _observeServerTime(iso) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return;
    // Receive time minus server time is the clock offset plus latency, so the
    // smallest one seen is the best estimate of the offset.
    const d = Date.now() - t;
    if (this._skew === null || d < this._skew) this._skew = d;
  }

  // ---- connection ----

  /** Opens the socket (and keeps it open until `close()`). */
  connect() {
    if (this._closed) throw new Error('taskwire: client is closed');
    if (this._ws || this._timers.retry) return;
    this._open();
  }

  /** Skips the wait before the next reconnect try. */
  retryNow() {
    if (this._closed || !this._timers.retry) return;
    this._open();
  }

  /** Closes for good; pending calls reject with `closed`. */
  close() {
    if (this._closed) return;
    this._closed = true;
    const ws = this._ws;
    this._detach();
    if (ws) {
      try {
        ws.close(1000);
      } catch (_) {
        // already closing
      }
    }
    for (const c of this._calls.values()) {
      clearTimeout(c.timer);
      c.reject(new TaskwireError('closed', 'the client was closed'));
    }
    this._calls.clear();
    this._setState('closed');
  }

  _open() {
    clearTimeout(this._timers.retry);
    this._timers.retry = null;
    this._setState(this._everConnected ? 'reconnecting' : 'connecting');
    const gen = ++this._gen;
    let ws;
    try {
      ws = this.options.createSocket
        ? this.options.createSocket(this.url)
        : new WebSocket(this.url);
    } catch (e) {
      this._lost(gen, null, String(e && e.message ? e.message : e));
      return;
    }
    this._ws = ws;
    ws.onmessage = (ev) => {
      if (gen !== this._gen) return;
      const text = typeof ev.data === 'string' ? ev.data : String(ev.data);
      this._onFrame(text);
    };
    ws.onclose = (ev) => this._lost(gen, ev.code, ev.reason);
    ws.onerror = () => {
      // A close event follows; nothing to do here.
    };
    this._timers.connect = setTimeout(() => {
      if (gen === this._gen && !this._ready) this._drop(gen, 'no hello in time');
    }, this.options.connectTimeoutMs);
  }

  /** Gives up on a socket that seems dead, without waiting for its close event. */
  _drop(gen, reason) {
    const ws = this._ws;
    try {
      if (ws) ws.close();
    } catch (_) {
      // ignore
    }
    this._lost(gen, null, reason);
  }

  _detach() {
    this._gen++;
    this._ws = null;
    this._ready = false;
    for (const t of Object.keys(this._timers)) {
      clearTimeout(this._timers[t]);
      clearInterval(this._timers[t]);
      this._timers[t] = null;
    }
    this._pingRef = null;
    // Nothing sent on the old socket will be answered: calls are re-sent and
    // topics resumed after the next hello.
    for (const entry of this._byRef.values()) {
      if (entry.kind === 'unsub' || entry.kind === 'ping') entry.resolve();
    }
    this._byRef.clear();
    for (const c of this._calls.values()) c.ref = null;
    for (const s of this._subs.values()) {
      s.ref = null;
      s.active = false;
      s.buffer = [];
      clearTimeout(s.retry);
    }
  }

  _lost(gen, code, reason) {
    if (gen !== this._gen || this._closed) return;
    const wasReady = this._ready;
    if (wasReady && Date.now() - this._helloAt >= this.options.stableAfterMs) this._attempt = 0;
    this._detach();
    this._state = { ...this._state, lastClose: { code, reason: reason || '' } };
    if (wasReady || this._everConnected) this._emit('disconnect', { code, reason: reason || '' });
    if (wasReady) this._downSince = Date.now();
    const fast = this._page && this._downSince > 0 && Date.now() - this._downSince < this.options.pageFastMs;
    const cap = fast ? this.options.pageBackoffCapMs : this.options.backoffCapMs;
    const delay = backoffDelay(this._attempt, this.options.backoffBaseMs, cap);
    this._attempt++;
    this._timers.retry = setTimeout(() => this._open(), delay);
    this._setState(this._everConnected ? 'reconnecting' : 'connecting', {
      retryAt: Date.now() + delay,
    });
  }

  _send(frame) {
    if (!this._ws) return false;
    try {
      this._ws.send(JSON.stringify(frame));
      return true;
    } catch (e) {
      this._drop(this._gen, 'send failed');
      return false;
    }
  }

  _ref() {
    return this._nextRef++;
  }

  _onFrame(text) {
    this._lastFrameAt = Date.now();
    let f;
    try {
      f = JSON.parse(text);
    } catch (e) {
      this._report(new TaskwireError('bad_request', 'the server sent a frame that is not JSON'));
      return;
    }
    switch (f.type) {
      case 'hello':
        this._onHello(f);
        break;
      case 'reply':
        this._onReply(f);
        break;
      case 'event':
      case 'presence':
        this._onEvent(f);
        break;
      case 'error': {
        const e = f.error || {};
        this._report(new TaskwireError(e.code || 'internal', e.message));
        break;
      }
      default:
        break;
    }
  }

  _onHello(f) {
    clearTimeout(this._timers.connect);
    this._timers.connect = null;
    this.hello = f;
    this._ready = true;
    this._everConnected = true;
    this._helloAt = Date.now();
    this._emit('hello', f);
    for (const s of this._subs.values()) this._sendSub(s);
    const calls = [...this._calls.values()].sort((a, b) => a.key - b.key);
    for (const c of calls) this._sendCall(c);
    const gen = this._gen;
    this._timers.watchdog = setInterval(() => this._watch(gen), 1000);
    this._checkLive();
  }

  _watch(gen) {
    if (gen !== this._gen || !this._ready) return;
    const now = Date.now();
    if (this._pingRef !== null) {
      if (this._lastFrameAt < this._pingSentAt && now - this._pingSentAt > this.options.pingTimeoutMs) {
        this._drop(gen, 'ping timeout');
      }
    } else if (now - this._lastFrameAt >= this.options.pingIntervalMs) {
      this._sendPing(() => {});
    }
  }

  _sendPing(resolve) {
    const ref = this._ref();
    this._pingRef = ref;
    this._pingSentAt = Date.now();
    this._byRef.set(ref, { kind: 'ping', resolve });
    this._send({ type: 'ping', ref });
  }

  /** Sends an application ping; resolves with the round trip in ms. */
  ping() {
    if (!this._ready) return Promise.reject(new TaskwireError('unavailable', 'not connected'));
    const t0 = Date.now();
    return new Promise((resolve) => this._sendPing(() => resolve(Date.now() - t0)));
  }

  _checkLive() {
    if (!this._ready) return;
    const waiting = [...this._subs.values()].some((s) => !s.active);
    const state = waiting ? 'catching_up' : 'live';
    if (this._state.state !== state) this._setState(state);
  }

  _onReply(f) {
    const entry = this._byRef.get(f.ref);
    if (!entry) return;
    this._byRef.delete(f.ref);
    switch (entry.kind) {
      case 'call':
        this._onCallReply(entry.call, f);
        break;
      case 'sub':
        this._onSubReply(entry.sub, f);
        break;
      case 'unsub':
        entry.resolve();
        break;
      case 'ping':
        if (this._pingRef === f.ref) this._pingRef = null;
        entry.resolve();
        break;
      default:
        break;
    }
  }

  // ---- subscriptions ----

  /**
   * Subscribes to `topic` (`tasks`, `task:{id}`, `agents`, `agent:{id}`).
   *
   * `handlers.snapshot(data, info)` gets the whole state: on the first reply,
   * and again whenever the server answers a resume with a snapshot
   * (`info.resync` is then true); replace everything you hold.
   * `handlers.event(frame, info)` gets each event in order (`info.replayed`
   * is true for events replayed while catching up), never one twice.
   * `handlers.resumed(info)` is told when a resume was answered with the
   * missed events (`info.replayed` of them, already passed to `event`).
   * `handlers.error(err)` gets a subscribe that failed (e.g. `not_found`); the
   * subscription is then over.
   *
   * `position` (`{epoch, since}`) resumes from a position saved earlier.
   * `fields` are extra fields of every subscribe frame, e.g. `{history: 50}`
   * on `task:{id}`; the snapshot's `info.history` then holds the entries.
   * With `{presence: true}`, `info.presence` of every snapshot and resume
   * (after each reconnect too) is the whole list of who holds the topic:
   * replace yours; `handlers.presence(frame)` then gets each
   * `presence.joined` and `presence.left` frame.
   * Returns `{topic, position(), unsubscribe()}`.
   */
  subscribe(topic, handlers = {}, position = null, fields = {}) {
    if (this._closed) throw new Error('taskwire: client is closed');
    if (this._subs.has(topic)) throw new Error(`taskwire: already subscribed to ${topic}`);
    const sub = {
      topic,
      handlers,
      fields,
      epoch: position ? position.epoch : null,
      seq: position && typeof position.since === 'number' ? position.since : null,
      // The last reply's seq: live events at or below it are already in it.
      // (Not `seq`: a window sends several events with one change's seq.)
      floor: null,
      ref: null,
      active: false,
      buffer: [],
      retry: null,
    };
    this._subs.set(topic, sub);
    if (this._ready) {
      this._sendSub(sub);
      this._checkLive();
    }
    return {
      topic,
      position: () => ({ epoch: sub.epoch, since: sub.seq }),
      unsubscribe: () => this.unsubscribe(topic),
    };
  }

  /** Ends a subscription; resolves once no event of it can follow. */
  unsubscribe(topic) {
    const sub = this._subs.get(topic);
    if (!sub) return Promise.resolve();
    this._subs.delete(topic);
    clearTimeout(sub.retry);
    if (sub.ref !== null) this._byRef.delete(sub.ref);
    if (!this._ready) return Promise.resolve();
    const p = new Promise((resolve) => {
      const ref = this._ref();
      this._byRef.set(ref, { kind: 'unsub', resolve });
      this._send({ type: 'unsubscribe', ref, topic });
    });
    this._checkLive();
    return p;
  }

  _sendSub(sub) {
    const ref = this._ref();
    const frame = { ...sub.fields, type: 'subscribe', ref, topic: sub.topic };
    if (sub.seq !== null && sub.epoch) {
      frame.epoch = sub.epoch;
      frame.since = sub.seq;
    }
    sub.ref = ref;
    sub.active = false;
    this._byRef.set(ref, { kind: 'sub', sub });
    this._send(frame);
  }

  _onSubReply(sub, f) {
    if (this._subs.get(sub.topic) !== sub || sub.ref !== f.ref) return;
    sub.ref = null;
    if (!f.ok) {
      const e = f.error || {};
      const err = new TaskwireError(e.code || 'internal', e.message);
      if (RETRYABLE.has(err.code)) {
        const gen = this._gen;
        sub.retry = setTimeout(() => {
          if (gen === this._gen && this._subs.get(sub.topic) === sub) this._sendSub(sub);
        }, this.options.retryBusyMs);
        return;
      }
      this._subs.delete(sub.topic);
      this._call(sub.handlers.error, err);
      this._checkLive();
      return;
    }
    const d = f.data || {};
    if (Object.prototype.hasOwnProperty.call(d, 'snapshot')) {
      const info = {
        topic: sub.topic,
        epoch: d.epoch,
        seq: d.seq,
        resync: sub.seq !== null,
        history: d.history,
        presence: d.presence,
      };
      sub.epoch = d.epoch;
      sub.seq = d.seq;
      sub.floor = d.seq;
      sub.active = true;
      this._call(sub.handlers.snapshot, d.snapshot, info);
    } else {
      sub.active = true;
      const events = d.events || [];
      for (const ev of events) this._deliver(sub, ev, true);
      sub.epoch = d.epoch;
      if (sub.seq === null || d.seq > sub.seq) sub.seq = d.seq;
      sub.floor = d.seq;
      this._call(sub.handlers.resumed, {
        topic: sub.topic,
        epoch: d.epoch,
        seq: d.seq,
        replayed: events.length,
        presence: d.presence,
      });
    }
    const buffered = sub.buffer;
    sub.buffer = [];
    for (const ev of buffered) this._deliver(sub, ev, false);
    this._checkLive();
  }

  _call(fn, ...args) {
    if (typeof fn !== 'function') return;
    try {
      fn(...args);
    } catch (e) {
      this._report(e);
    }
  }

  _onEvent(f) {
    const sub = this._subs.get(f.topic);
    if (!sub) return;
    if (!sub.active) {
      sub.buffer.push(f);
      return;
    }
    this._deliver(sub, f, false);
  }

  _deliver(sub, ev, replayed) {
    if (ev.type === 'presence') {
      // Not a change: no seq, never replayed.
      this._call(sub.handlers.presence, ev);
      return;
    }
    if (typeof ev.seq === 'number') {
      // A resume's replay is exactly the missed events; a live one the reply
      // already covered came while the subscribe was on its way.
      if (!replayed && sub.floor !== null && ev.seq <= sub.floor) return;
      if (sub.seq === null || ev.seq > sub.seq) sub.seq = ev.seq;
    }
    if (!replayed && ev.data) {
      if (ev.event === 'agent.heartbeat' && ev.data.at) this._observeServerTime(ev.data.at);
      else if (ev.data.updated_at) this._observeServerTime(ev.data.updated_at);
    }
    this._call(sub.handlers.event, ev, { replayed });
    if (typeof ev.seq === 'number') this._noteSeq(ev.seq, ev, replayed);
  }

  _noteSeq(seq, ev, replayed) {
    if (typeof seq !== 'number') return;
    if (this.lastChange && this.lastChange.seq >= seq) return;
    // The change's own time when the entity carries one (a delete does not).
    const t = ev.data && ev.data.updated_at ? Date.parse(ev.data.updated_at) : NaN;
    const at = new Date(Number.isNaN(t) ? this.serverNow() : t);
    this.lastChange = { seq, at, event: ev };
    this._emit('change', ev, { replayed });
  }

  // ---- calls ----

  /**
   * Calls `method` with `params`; resolves with `{data, seq}` once the server
   * committed it (`seq` is null when nothing changed), rejects with a
   * `TaskwireError`. The call carries an `op_id` (yours, as `options.opId`,
   * or a random one) and is re-sent with it after a reconnect, so it is
   * applied once. `options.timeoutMs` rejects with `timeout` after that long
   * (the call may still commit later).
   */
  call(method, params = {}, options = {}) {
    if (this._closed) return Promise.reject(new TaskwireError('closed', 'the client was closed'));
    return new Promise((resolve, reject) => {
      const c = {
        key: this._nextCall++,
        method,
        params,
        opId: options.opId || newOpId(),
        ref: null,
        resolve,
        reject,
        timer: null,
        retry: null,
      };
      this._calls.set(c.key, c);
      const timeoutMs = options.timeoutMs ?? this.options.callTimeoutMs;
      if (timeoutMs) {
        c.timer = setTimeout(() => {
          if (this._calls.delete(c.key)) {
            if (c.ref !== null) this._byRef.delete(c.ref);
            reject(new TaskwireError('timeout', `${method} got no reply within ${timeoutMs} ms`));
          }
        }, timeoutMs);
      }
      if (this._ready) this._sendCall(c);
    });
  }

  _sendCall(c) {
    clearTimeout(c.retry);
    const ref = this._ref();
    c.ref = ref;
    this._byRef.set(ref, { kind: 'call', call: c });
    this._send({ type: 'call', ref, method: c.method, params: c.params, op_id: c.opId });
  }

  _onCallReply(c, f) {
    if (this._calls.get(c.key) !== c || c.ref !== f.ref) return;
    c.ref = null;
    if (f.ok) {
      this._calls.delete(c.key);
      clearTimeout(c.timer);
      c.resolve({ data: f.data, seq: typeof f.seq === 'number' ? f.seq : null });
      return;
    }
    const e = f.error || {};
    const err = new TaskwireError(e.code || 'internal', e.message);
    if (RETRYABLE.has(err.code)) {
      const gen = this._gen;
      c.retry = setTimeout(() => {
        if (gen === this._gen && this._ready && this._calls.get(c.key) === c && c.ref === null) {
          this._sendCall(c);
        }
      }, this.options.retryBusyMs);
      return;
    }
    this._calls.delete(c.key);
    clearTimeout(c.timer);
    c.reject(err);
  }
}
