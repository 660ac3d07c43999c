// The desks of the cluster: who is enrolled (and linked, behind, how far its clock is off), desks asking
// to join (approve with the code the joining desk shows, or reject), one-time join codes, revoke, mark away.

import { ApiError, get, post } from '../api.js';
import { lastStatus, onStatus } from '../clusterbar.js';
import { $, clear, el } from '../dom.js';
import { fmt, t } from '../i18n.js';

let active = false;
let data = null;
let languageChanged = false;

function errorText(e) {
  if (e instanceof ApiError) {
    if (e.status === 404 && e.code === 'not_found') return t('error.not_available');
    const key = `error.${e.code}`;
    return t(key) !== key ? t(key) : t('error.generic', { message: e.message || e.code });
  }
  return t('error.generic', { message: String(e) });
}

async function run(action) {
  try {
    await action();
    $('desks-message').textContent = t('desks.done');
  } catch (e) {
    $('desks-message').textContent = errorText(e);
  }
  await loadDesks();
}

function revoke(desk) {
  if (!window.confirm(t('desks.confirm_revoke', { desk: desk.desk }))) return;
  run(() => post(`/desks/${encodeURIComponent(desk.node)}/revocation`, {}));
}

function markAway(desk) {
  run(() => post(`/desks/${encodeURIComponent(desk.node)}/away`, {}));
}

function stateOf(desk) {
  if (desk.revoked) return 'revoked';
  if (desk.away) return 'away';
  return 'enrolled';
}

let shownDesks = null;

function renderDesks() {
  const peers = new Map(((lastStatus() || {}).peers || []).map((p) => [p.node, p]));
  // Redraw only on a change: a row rebuilt under the pointer would swallow the admin's click.
  const shown = JSON.stringify([data.desks, [...peers.values()].map((p) => [p.node, p.connected, p.lag,
    Math.round((p.clock_offset_ms || 0) / 1000)]), document.documentElement.lang]);
  if (shown === shownDesks) return;
  shownDesks = shown;
  const body = clear($('desks-body'));
  for (const desk of data.desks) {
    const peer = peers.get(desk.node) || {};
    const state = stateOf(desk);
    const actions = [];
    if (!desk.me && state !== 'revoked') {
      if (state !== 'away') actions.push(el('button', { type: 'button', class: 'secondary small', onclick: () => markAway(desk) }, t('desks.away')));
      actions.push(el('button', { type: 'button', class: 'danger small', onclick: () => revoke(desk) }, t('desks.revoke')));
    }
    const link = desk.me ? el('span', { class: 'tag', text: t('desks.this_desk') })
      : el('span', { class: `tag ${desk.connected ? 'good' : 'bad'}`, text: desk.connected ? t('desks.linked') : t('desks.not_linked') });
    body.append(el('tr', { class: desk.me ? 'mine' : state === 'revoked' ? 'revoked' : '', dataset: { node: desk.node } },
      el('td', {}, el('strong', { text: desk.desk || '?' })),
      el('td', { class: 'mono', title: desk.node, text: (desk.node || '').slice(0, 12) }),
      el('td', { text: t(`desks.role.${desk.role}`) }),
      el('td', {}, el('span', { class: `tag ${state === 'revoked' ? 'bad' : state === 'away' ? 'warn' : 'good'}`, text: t(`desks.state.${state}`) })),
      el('td', {}, link),
      el('td', { text: typeof peer.lag === 'number' ? t('unit.events', { count: peer.lag }) : '—' }),
      el('td', { text: typeof peer.clock_offset_ms === 'number' ? fmt.duration(peer.clock_offset_ms) : '—' }),
      el('td', { class: 'actions' }, actions)));
  }
}

let shownPending = null;

function renderPending() {
  const section = $('pending-section');
  section.hidden = !Array.isArray(data.pending);
  if (section.hidden) return;
  // Redraw only when the requests change, or a refresh would wipe the code the admin is typing.
  const ids = data.pending.map((p) => p.id).join(' ');
  if (ids === shownPending && !languageChanged) return;
  shownPending = ids;
  languageChanged = false;
  const body = clear($('pending-body'));
  for (const p of data.pending) {
    const code = el('input', { class: 'code-input mono', autocomplete: 'off', spellcheck: 'false', 'aria-label': t('col.code') });
    const role = el('select', { 'aria-label': t('col.role') },
      el('option', { value: 'desk', text: t('desks.role.desk') }), el('option', { value: 'admin', text: t('desks.role.admin') }));
    body.append(el('tr', { dataset: { request: p.id } },
      el('td', {}, el('strong', { text: p.desk })),
      el('td', { class: 'mono', title: p.node, text: p.node.slice(0, 12) }),
      el('td', { class: 'mono', text: p.remote || '' }),
      el('td', { text: fmt.time(Date.parse(p.expires)) }),
      el('td', {}, code),
      el('td', {}, role),
      el('td', { class: 'actions' },
        el('button', { type: 'button', class: 'primary small',
          onclick: () => run(() => post(`/enrolment/pending/${encodeURIComponent(p.id)}/approve`, { code: code.value.trim(), role: role.value })) },
        t('desks.approve')),
        el('button', { type: 'button', class: 'secondary small',
          onclick: () => run(() => post(`/enrolment/pending/${encodeURIComponent(p.id)}/reject`, {})) }, t('desks.reject')))));
  }
  $('pending-empty').hidden = data.pending.length > 0;
}

function renderCodes() {
  const section = $('codes-section');
  section.hidden = !Array.isArray(data.codes);
  $('not-ca-note').hidden = !section.hidden;
  if (section.hidden) return;
  const list = clear($('codes-list'));
  for (const c of data.codes) {
    list.append(el('li', {}, el('span', { class: 'code mono', text: c.code }),
      el('span', { class: 'muted', text: t('desks.code_for', { role: t(`desks.role.${c.role}`), time: fmt.time(Date.parse(c.expires)) }) })));
  }
}

function render() {
  if (!data) return;
  renderDesks();
  renderPending();
  renderCodes();
}

export async function loadDesks() {
  try {
    data = await get('/desks');
    render();
  } catch (e) {
    $('desks-message').textContent = errorText(e);
  }
}

export function showDesks(on) {
  active = on;
  if (on) {
    $('desks-message').textContent = '';
    loadDesks();
  }
}

export function initDesks() {
  $('code-desk').addEventListener('click', () => run(() => post('/enrolment/codes', { role: 'desk' })));
  $('code-admin').addEventListener('click', () => run(() => post('/enrolment/codes', { role: 'admin' })));
  // New desks and join requests appear by themselves: the list is fetched again with every status poll.
  onStatus(() => { if (active) loadDesks(); });
  document.addEventListener('languagechange', () => { languageChanged = true; if (active) render(); });
}
