// The seed's design, as a reference for the benchmarks: Node, Express, ws and
// better-sqlite3, one process, one thread. Issue 8 set its targets from this
// design ("taskwire must beat [it]") and from a no-database fan-out
// (bench/src/bin/fanout-baseline.rs); the suite runs the same generator against
// all three on the same machine (docs/benchmarks.md, "Beside the seed's design").
//
// It keeps what makes the comparison fair: every acknowledged write is durable
// (WAL, synchronous = FULL), the writes that arrive in one turn of the event
// loop share one transaction (group commit), each event is serialized and
// encoded once and sent to every subscriber, and changes are kept in a log
// that a resume replays. It speaks only the part of the protocol
// taskwire-bench uses, with taskwire's frames: hello, subscribe (fresh or
// resumed) and unsubscribe of `tasks`, ping, and the calls `task.create` and
// `task.update`. It leaves out what the generator does not exercise (other
// topics and entities, op_id, WebSocket pings, rate limits, a cap on a slow
// socket's queue, hashed tokens), all of which would cost it a little more.
// It is not part of taskwire.
//
//   npm ci --prefix bench/seed-node
//   node bench/seed-node/server.js 127.0.0.1:18091 /tmp/seed.db
//   target/release/taskwire-bench --addr 127.0.0.1:18091 fanout -n 1000
'use strict';

const http = require('http');
const crypto = require('crypto');
const express = require('express');
const { WebSocketServer } = require('ws');
const Database = require('better-sqlite3');

const [addr = '127.0.0.1:18091', dbPath = 'seed.db'] = process.argv.slice(2);
const colon = addr.lastIndexOf(':');
const host = addr.slice(0, colon);
const port = Number(addr.slice(colon + 1));
const token = process.env.TASKWIRE_ADMIN_TOKEN;

const db = new Database(dbPath);
db.pragma('journal_mode = WAL');
db.pragma('synchronous = FULL');
db.exec(`
  CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'todo',
    priority INTEGER NOT NULL DEFAULT 0,
    assignee_id INTEGER,
    version INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
  );
  CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    frame TEXT NOT NULL
  );
  CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
`);
const q = {
  task: db.prepare('SELECT * FROM tasks WHERE id = ?'),
  tasks: db.prepare('SELECT * FROM tasks ORDER BY id'),
  insert: db.prepare(
    'INSERT INTO tasks (title, description, status, priority, assignee_id, created_at, updated_at) ' +
      'VALUES (@title, @description, @status, @priority, @assignee_id, @created_at, @updated_at)'
  ),
  update: db.prepare(
    'UPDATE tasks SET title = @title, description = @description, status = @status, ' +
      'priority = @priority, assignee_id = @assignee_id, version = @version, updated_at = @updated_at ' +
      'WHERE id = @id'
  ),
  log: db.prepare('INSERT INTO changes (seq, topic, frame) VALUES (?, ?, ?)'),
  since: db.prepare('SELECT frame FROM changes WHERE topic = ? AND seq > ? ORDER BY seq'),
  head: db.prepare('SELECT coalesce(max(seq), 0) AS seq FROM changes'),
};

// The epoch is fixed when the database is created, as the contract says.
db.prepare('INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)').run('epoch', crypto.randomBytes(9).toString('base64url'));
const epoch = db.prepare("SELECT value FROM meta WHERE key = 'epoch'").get().value;
let seq = q.head.get().seq;
const subscribers = new Set();
const FIELDS = ['title', 'description', 'status', 'priority', 'assignee_id'];
// What each field may hold; anything else is refused before it reaches SQL.
const VALID = {
  title: (v) => typeof v === 'string' && v.trim() !== '' && v.length <= 200,
  description: (v) => typeof v === 'string' && v.length <= 20000,
  status: (v) => ['todo', 'in_progress', 'blocked', 'review', 'done'].includes(v),
  priority: (v) => Number.isInteger(v) && v >= 0 && v <= 3,
  assignee_id: (v) => v === null || (Number.isInteger(v) && v > 0),
};

// Writes wait here for the next group commit: every call that arrives before
// the event loop's next turn shares one transaction and one fsync.
let pending = [];

function enqueue(job) {
  pending.push(job);
  if (pending.length === 1) setImmediate(flush);
}

// Each call in a savepoint of its own (better-sqlite3 nests transactions that
// way), so one that fails takes nothing else in its group with it.
const applyOne = db.transaction(apply);
const commit = db.transaction((jobs) => {
  for (const job of jobs) {
    const before = seq;
    try {
      job.result = applyOne(job);
    } catch (e) {
      seq = before;
      job.result = { error: { code: 'bad_request', message: String(e.message) } };
    }
  }
});

function flush() {
  const jobs = pending;
  pending = [];
  const before = seq;
  try {
    commit(jobs);
  } catch (e) {
    seq = before;
    for (const job of jobs) reply(job.ws, job.ref, { ok: false, error: { code: 'unavailable', message: String(e.message) } });
    return;
  }
  // Only after COMMIT (and its fsync) does anyone hear of a change.
  for (const job of jobs) {
    const r = job.result;
    if (r.error) {
      reply(job.ws, job.ref, { ok: false, error: r.error });
      continue;
    }
    const seqField = r.frame ? `"seq":${r.seq},` : '';
    job.ws.send(`{"type":"reply","ref":${JSON.stringify(job.ref)},"ok":true,${seqField}"data":${r.data}}`);
    if (!r.frame) continue;
    // Encoded once: ws would otherwise turn the text into bytes per socket.
    const bytes = Buffer.from(r.frame);
    for (const s of subscribers) if (s.readyState === 1) s.send(bytes, { binary: false });
  }
}

// One call inside the group's transaction: the row, its change and its seq.
function apply({ method, params }) {
  const now = new Date().toISOString();
  let task;
  let event;
  let changed;
  const given = method === 'task.create' ? params : params.patch;
  if (!given || typeof given !== 'object') return { error: { code: 'bad_request', message: 'no fields' } };
  const bad = FIELDS.find((f) => given[f] !== undefined && !VALID[f](given[f]));
  if (bad) return { error: { code: 'invalid', message: `bad ${bad}` } };
  if (method === 'task.create') {
    if (given.title === undefined) return { error: { code: 'invalid', message: 'title is required' } };
    const row = { description: '', status: 'todo', priority: 0, assignee_id: null, created_at: now, updated_at: now };
    for (const f of FIELDS) if (given[f] !== undefined) row[f] = given[f];
    const id = q.insert.run(row).lastInsertRowid;
    task = q.task.get(id);
    event = 'task.created';
    changed = Object.keys(task).filter((k) => k !== 'version' && k !== 'updated_at');
  } else {
    if (!Number.isInteger(params.id) || params.id < 1) return { error: { code: 'bad_request', message: '`id` must be a positive integer' } };
    task = q.task.get(params.id);
    if (!task) return { error: { code: 'not_found', message: `no task ${params.id}` } };
    // As taskwire: `changed` leaves out what every change sets.
    changed = FIELDS.filter((f) => given[f] !== undefined && given[f] !== task[f]);
    if (changed.length === 0) return { data: JSON.stringify(task) };
    for (const f of changed) task[f] = given[f];
    task.version += 1;
    task.updated_at = now;
    q.update.run(task);
    event = 'task.updated';
  }
  seq += 1;
  const data = JSON.stringify(task);
  const frame =
    `{"type":"event","topic":"tasks","seq":${seq},"event":"${event}",` +
    `"changed":${JSON.stringify(changed)},"data":${data}}`;
  q.log.run(seq, 'tasks', frame);
  return { seq, data, frame };
}

function reply(ws, ref, body) {
  ws.send(JSON.stringify({ type: 'reply', ref, ...body }));
}

function onFrame(ws, text) {
  let f;
  try {
    f = JSON.parse(text);
  } catch {
    f = null;
  }
  if (!f || typeof f !== 'object' || Array.isArray(f)) {
    ws.send(JSON.stringify({ type: 'error', error: { code: 'bad_frame', message: 'not a JSON object' } }));
    return;
  }
  const ref = f.ref;
  switch (f.type) {
    case 'ping':
      return reply(ws, ref, { ok: true, data: {} });
    case 'unsubscribe':
      subscribers.delete(ws);
      return reply(ws, ref, { ok: true, data: {} });
    case 'subscribe': {
      if (f.topic !== 'tasks') return reply(ws, ref, { ok: false, error: { code: 'bad_request', message: 'only tasks' } });
      // One thread: nothing commits between this read and joining the set.
      subscribers.add(ws);
      if (f.epoch === epoch && Number.isInteger(f.since) && f.since <= seq) {
        const frames = q.since.all('tasks', f.since).map((r) => r.frame);
        return ws.send(
          `{"type":"reply","ref":${JSON.stringify(ref)},"ok":true,"data":{"topic":"tasks","epoch":"${epoch}",` +
            `"seq":${seq},"events":[${frames.join(',')}]}}`
        );
      }
      return reply(ws, ref, { ok: true, data: { topic: 'tasks', epoch, seq, snapshot: q.tasks.all() } });
    }
    case 'call':
      if (f.method === 'task.create' || f.method === 'task.update') {
        return enqueue({ ws, ref, method: f.method, params: f.params || {} });
      }
      return reply(ws, ref, { ok: false, error: { code: 'bad_request', message: 'not in the seed reference' } });
    default:
      return reply(ws, ref, { ok: false, error: { code: 'bad_request', message: 'unknown type' } });
  }
}

const app = express();
app.get('/healthz', (_req, res) => res.json({ ok: true }));
const server = http.createServer(app);
const wss = new WebSocketServer({ noServer: true, maxPayload: 1 << 20 });
server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname !== '/ws' || (token && req.headers.authorization !== `Bearer ${token}`)) {
    socket.end('HTTP/1.1 401 Unauthorized\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.send(JSON.stringify({ type: 'hello', server: 'seed-node', epoch, seq }));
    ws.on('message', (data) => onFrame(ws, data.toString()));
    ws.on('close', () => subscribers.delete(ws));
    ws.on('error', () => subscribers.delete(ws));
  });
});
// Thousands of clients connect at once in the benchmarks; Node's default
// backlog is 511.
server.listen({ host, port, backlog: 4096 }, () => {
  console.error(`seed-node listening on ${host}:${port}`);
});
