// The cluster bar on every screen: the ILS, linked desks, the bridge, uploads (with a progress bar
// while uploading), this desk's clock and storage. Polled every few seconds and after live events.

import { get } from './api.js';
import { $, debounce } from './dom.js';
import { fmt, t } from './i18n.js';

const POLL_MS = 3000;
let timer = null;
let last = null;
let liveState = 'closed';
const listeners = new Set();

export function onStatus(listener) { listeners.add(listener); }
export function lastStatus() { return last; }

function pill(id, tone, text, title = '') {
  const node = $(id);
  node.dataset.tone = tone;
  node.querySelector('.pill-text').textContent = text;
  if (title) node.title = title; else node.removeAttribute('title');
}

function clockText(suspect) {
  const offset = fmt.duration(suspect.offset_ms);
  if (suspect.undecided) return t('cluster.clock_pair', { desk: suspect.desk, offset });
  const way = suspect.offset_ms >= 0 ? 'ahead' : 'behind';
  return suspect.this_desk
    ? t(`cluster.clock_self_${way}`, { offset })
    : t(`cluster.clock_other_${way}`, { desk: suspect.desk, offset });
}

// Desks whose clocks are off, as /status names them: against the cluster's median clock (this desk counted
// at offset 0), so with three desks and one an hour ahead the two right ones name it and it names itself;
// with two desks only that they differ. The log's own evidence counts too (a desk not linked to this one).
function renderClock(suspects) {
  const clock = $('cb-clock');
  clock.hidden = suspects.length === 0;
  if (clock.hidden) return;
  const how = (s) => s.sources.map((source) => t(`cluster.clock_source.${source}`)).join(', ');
  pill('cb-clock', 'warn', suspects.map(clockText).join(' · '),
    [...suspects.map((s) => `${clockText(s)} (${how(s)})`), t('cluster.clock_hint')].join('\n'));
}

const SNAPSHOT_STALE_MS = 2 * 86_400_000; // older than two days: staff should know the ILS data may be out of date

// How old the ILS's patron and item data at this desk is (none yet: the pill stays hidden).
function renderSnapshot(snapshot) {
  const node = $('cb-snapshot');
  const fetch = snapshot && snapshot.fetch;
  const fetching = fetch && fetch.state === 'fetching' && fetch.needed;
  node.hidden = !(snapshot && (snapshot.version || fetching));
  if (node.hidden) return;
  if (fetching && !snapshot.version) { // a new desk getting its first snapshot from its peers
    pill('cb-snapshot', 'warn', t('cluster.snapshot_fetching', { have: fmt.number(fetch.have), needed: fmt.number(fetch.needed) }));
    return;
  }
  const age = Date.now() - snapshot.ils_time;
  const refresh = snapshot.refresh;
  const detail = [t('cluster.snapshot_counts', { patrons: fmt.number(snapshot.patrons), items: fmt.number(snapshot.items) })];
  if (refresh && refresh.state === 'failed' && refresh.last_error) detail.push(refresh.last_error);
  if (fetching) detail.push(t('cluster.snapshot_fetching', { have: fmt.number(fetch.have), needed: fmt.number(fetch.needed) }));
  if (fetch && fetch.state === 'failed' && fetch.last_error) detail.push(fetch.last_error);
  pill('cb-snapshot', age > SNAPSHOT_STALE_MS ? 'warn' : 'good',
    t('cluster.snapshot', { time: fmt.dateTime(snapshot.ils_time) }), detail.join('\n'));
}

export function render(status = last) {
  renderLive();
  if (!status) return;
  const ils = status.ils;
  if (!ils) pill('cb-ils', 'unknown', t('cluster.ils_unknown'));
  else {
    const probe = ils.last_probe ? t('cluster.ils_probe', { time: fmt.time(ils.last_probe) }) : '';
    pill('cb-ils', ils.reachable ? 'good' : 'bad', ils.reachable ? t('cluster.ils_online') : t('cluster.ils_offline'), probe);
  }

  const peers = status.peers || [];
  const connected = peers.filter((p) => p.connected).length;
  if (!peers.length) pill('cb-peers', 'unknown', t('cluster.peers_none'));
  else {
    pill('cb-peers', connected === peers.length ? 'good' : connected ? 'warn' : 'bad',
      t('cluster.peers', { connected: fmt.number(connected), count: peers.length }),
      peers.map((p) => `${p.desk}: ${p.connected ? t('desks.linked') : t('desks.not_linked')}`).join('\n'));
  }

  const bridge = status.bridge;
  if (!bridge) pill('cb-bridge', 'unknown', t('cluster.bridge_none'));
  else pill('cb-bridge', 'good', bridge.is_me ? t('cluster.bridge_me') : t('cluster.bridge', { desk: bridge.desk }));

  renderUpload(status.upload || { pending: 0, applied: 0, failed: 0, uploading: false });

  renderSnapshot(status.snapshot);

  renderClock(status.clock_suspects || []);

  const storage = $('cb-storage');
  storage.hidden = !(status.node && status.node.storage === 'failed');
  if (!storage.hidden) pill('cb-storage', 'bad', t('cluster.storage'), status.node.failure || '');

  // events that verify but this desk cannot read: admins put them aside on the Conflicts screen
  const quarantined = status.quarantined || { count: 0, recent: [] };
  const unreadable = $('cb-unreadable');
  unreadable.hidden = !quarantined.count;
  if (!unreadable.hidden) {
    pill('cb-unreadable', 'bad', t('cluster.unreadable', { count: quarantined.count }),
      (quarantined.recent || []).map((q) => `${q.desk || '?'}: ${q.reason}`).join('\n'));
    if ($('admin-tabs').hidden) unreadable.removeAttribute('href');
    else unreadable.setAttribute('href', '#/admin/conflicts');
  }
}

function renderUpload(upload) {
  const done = (upload.applied || 0) + (upload.failed || 0);
  const pending = upload.pending || 0;
  const total = done + pending;
  const percent = total ? Math.floor((done / total) * 100) : 100;
  const text = pending === 0
    ? t('cluster.upload_done')
    : upload.uploading
      ? t('cluster.upload_uploading', { count: pending })
      : t('cluster.upload_pending', { count: pending });
  pill('cb-upload', pending === 0 ? 'good' : upload.uploading ? 'busy' : 'warn', text);
  const bar = $('cb-progress');
  bar.hidden = total === 0;
  $('cb-progress-label').hidden = total === 0;
  bar.setAttribute('aria-valuenow', String(percent));
  bar.dataset.active = String(Boolean(upload.uploading) || pending > 0);
  $('cb-progress-fill').style.width = `${percent}%`;
  $('cb-progress-label').textContent = fmt.percent(percent / 100);
}

function renderLive() {
  pill('cb-live', liveState === 'open' ? 'good' : 'warn', liveState === 'open' ? t('cluster.live_on') : t('cluster.live_off'));
}

export function setLiveState(state) {
  liveState = state;
  renderLive();
}

export async function refresh() {
  try {
    last = await get('/status');
    render(last);
    for (const listener of listeners) listener(last);
  } catch (e) {
    // The bar keeps its last picture; the live pill shows the desk is unreachable.
    console.warn('cluster status', e);
  }
}

export const refreshSoon = debounce(refresh, 150);

export function startClusterBar() {
  $('cluster-bar').hidden = false;
  refresh();
  clearInterval(timer);
  timer = setInterval(refresh, POLL_MS);
}

export function stopClusterBar() {
  clearInterval(timer);
  $('cluster-bar').hidden = true;
}
