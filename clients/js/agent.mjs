// An agent: takes free tasks one at a time, reports progress, finishes them.
//   TASKWIRE_URL=ws://127.0.0.1:8080/ws TASKWIRE_TOKEN=tw_... node --experimental-websocket agent.mjs
// (Node 22 and later have WebSocket without the flag.)
import { Client } from '../../static/js/client.js';

const token = process.env.TASKWIRE_TOKEN;
const client = new Client({
  url: process.env.TASKWIRE_URL,
  createSocket: (url) => new WebSocket(url, { headers: { Authorization: `Bearer ${token}` } }),
});
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let me = null; // our agent's id, from hello
let current = null; // the task we are on
let timer = null;
const beat = () =>
  client.call('agent.heartbeat', { id: me, status: current ? 'busy' : 'idle', current_task_id: current });
client.on('hello', (hello) => {
  me = hello.agent_id;
  beat().catch(console.error);
  clearInterval(timer);
  timer = setInterval(() => beat().catch(console.error), hello.agent_timeout_ms / 3);
});

async function work(task) {
  await client.call('task.claim', { id: task.id }); // ours now, in_progress
  current = task.id;
  await beat();
  for (const pct of [25, 50, 75]) {
    await sleep(1000); // the actual work goes here
    await client.call('task.note', { id: task.id, text: `step ${pct / 25} of 4 done`, progress: pct });
  }
  await client.call('task.update', { id: task.id, patch: { status: 'done', progress: 100 } });
  current = null;
  await beat();
}

const board = new Map(); // task id -> task, kept live
let busy = false;
async function next() {
  const free = [...board.values()].find((t) => t.status === 'todo' && t.assignee_id === null);
  if (busy || !free) return;
  busy = true;
  try {
    await work(free);
  } catch (err) {
    if (err.code !== 'conflict' && err.code !== 'not_found') throw err; // another agent was first
  } finally {
    busy = false;
  }
  next();
}

client.subscribe('tasks', {
  snapshot(list) {
    board.clear(); // at start, or after a resync
    for (const t of list) board.set(t.id, t);
    next();
  },
  event(ev) {
    if (ev.event === 'task.deleted') board.delete(ev.data.id);
    else board.set(ev.data.id, ev.data);
    next();
  },
});
client.connect();
