// The live feed from this desk's node: one WebSocket, reconnecting with backoff. After a reconnect the
// events missed meanwhile are fetched from /events (whose cursor is this node's arrival position), so
// listeners see every event once, in the order the node learnt of them.

import { get } from './api.js';

const listeners = new Set();
const stateListeners = new Set();
const seen = new Set();
const SEEN_MAX = 5000;
let socket = null;
let cursor = null;
let delay = 500;
let timer = null;
let running = false;

export function onEvent(listener) { listeners.add(listener); return () => listeners.delete(listener); }
export function onState(listener) { stateListeners.add(listener); return () => stateListeners.delete(listener); }

function deliver(event, fresh) {
  if (seen.has(event.id)) return;
  seen.add(event.id);
  if (seen.size > SEEN_MAX) seen.delete(seen.values().next().value);
  for (const listener of listeners) {
    try { listener(event, fresh); } catch (e) { console.error(e); }
  }
}

function setState(state) {
  for (const listener of stateListeners) listener(state);
}

/** The latest `count` events (oldest first), and the cursor after them. */
export async function recent(count) {
  const head = await get('/events?after=0&limit=1');
  const after = Math.max(0, head.total - count);
  const page = await get(`/events?after=${after}&limit=${count}`);
  return page;
}

async function catchUp() {
  if (cursor === null) return;
  for (let i = 0; i < 50; i += 1) {
    const page = await get(`/events?after=${cursor}&limit=1000`);
    for (const event of page.events) deliver(event, false);
    if (page.next === cursor) return;
    cursor = page.next;
  }
}

function open() {
  clearTimeout(timer);
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  socket = new WebSocket(`${scheme}//${location.host}/api/v1/live`);
  socket.addEventListener('open', () => {
    delay = 500;
    setState('open');
    catchUp().catch(() => {});
  });
  socket.addEventListener('message', (message) => {
    let data;
    try { data = JSON.parse(message.data); } catch { return; }
    if (data.type !== 'event') return;
    if (typeof data.pos === 'number') cursor = Math.max(cursor ?? 0, data.pos);
    deliver(data.event, true);
  });
  socket.addEventListener('close', () => {
    setState('closed');
    if (!running) return;
    const wait = delay + Math.random() * delay * 0.3;
    delay = Math.min(delay * 2, 10000);
    timer = setTimeout(open, wait);
  });
}

export function startLive(initialCursor, initialEvents = []) {
  for (const event of initialEvents) seen.add(event.id);
  cursor = initialCursor;
  running = true;
  open();
}

export function stopLive() {
  running = false;
  clearTimeout(timer);
  if (socket) socket.close();
  socket = null;
}
