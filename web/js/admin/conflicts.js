// Conflicts, explained: what each desk did and when (in causal order), and the ways to settle them.
// Settling records an event; it replicates, and the conflict disappears on every desk.

import { announce } from '../announce.js';
import { ApiError, get, post } from '../api.js';
import { describeConflict, describeEvent, settlements } from '../describe.js';
import { $, clear, debounce, el } from '../dom.js';
import { fmt, t } from '../i18n.js';
import { onEvent } from '../live.js';

let conflicts = [];
let active = false;

function errorText(e) {
  if (e instanceof ApiError) {
    const key = `error.${e.code}`;
    return t(key) !== key ? t(key) : t('error.generic', { message: e.message || e.code });
  }
  return t('error.generic', { message: String(e) });
}

function card(conflict) {
  const words = describeConflict(conflict);
  const note = el('input', { class: 'note', id: `note-${conflict.id}`, maxlength: '500', autocomplete: 'off' });
  const about = conflict.about_conflict;
  const known = [...(conflict.detail || []), ...((about && about.detail) || [])];
  const lookup = (id) => known.find((e) => e.id === id) || null;
  const step = (event) => el('li', {},
    el('div', { class: 'step-head' }, t('conflicts.step', { time: fmt.dateTime(event.at), desk: event.desk, staff: event.staff })),
    el('div', { class: 'step-text' }, describeEvent(event, { lookup })));
  // a disagreement shows what happened (the conflict it is about), then the admins' answers
  const steps = ((about && about.detail) || conflict.detail || []).map(step);
  const answers = about ? [el('h3', { text: t('conflicts.answers') }), el('ol', { class: 'steps answers' }, (conflict.detail || []).map(step))] : [];
  const buttons = settlements(conflict).map((option) => el('div', { class: 'settle-option' },
    el('button', {
      type: 'button',
      class: option.action === 'apply' ? 'secondary' : option.action === 'accept_ils' ? 'secondary' : 'primary',
      dataset: { action: option.action, event: option.event || '' },
      onclick: (e) => settle(conflict, option, note.value, e.currentTarget),
    }, option.label),
    option.hint ? el('p', { class: 'hint', text: option.hint }) : null));
  return el('article', { class: `conflict card${conflict.needs_admin ? ' needs-admin' : ''}`, dataset: { conflict: conflict.id } },
    el('header', {},
      el('h2', { text: words.title }),
      el('span', { class: `tag ${conflict.needs_admin ? 'bad' : 'warn'}`,
        text: conflict.needs_admin ? t('conflicts.needs_admin')
          : conflict.kind === 'clock_ahead' ? t('conflicts.warning_clock') : t('conflicts.warning_only') })),
    el('p', { class: 'explain', text: words.explain }),
    el('h3', { text: t('conflicts.happened') }),
    el('ol', { class: 'steps' }, steps),
    ...answers,
    el('div', { class: 'settle' },
      el('label', { for: note.id, text: t('conflicts.note') }), note,
      el('div', { class: 'settle-options' }, buttons)));
}

function render() {
  const list = clear($('conflict-list'));
  for (const conflict of conflicts) list.append(card(conflict));
  $('conflicts-empty').hidden = conflicts.length > 0;
}

export async function loadConflicts() {
  try {
    conflicts = (await get('/conflicts')).conflicts;
    // admins first settle what needs them
    conflicts.sort((a, b) => Number(b.needs_admin) - Number(a.needs_admin));
    render();
  } catch (e) {
    $('conflicts-message').textContent = errorText(e);
  }
}

const reloadSoon = debounce(() => { if (active) loadConflicts(); }, 200);

async function settle(conflict, option, note, button) {
  button.disabled = true;
  const body = { action: option.action };
  if (option.event) body.event = option.event;
  if (note.trim()) body.note = note.trim();
  try {
    await post(`/conflicts/${encodeURIComponent(conflict.id)}/resolution`, body);
    $('conflicts-message').textContent = t('conflicts.settled');
    announce('ok', t('conflicts.settled'));
  } catch (e) {
    $('conflicts-message').textContent = errorText(e);
    announce('error', errorText(e));
    button.disabled = false;
  }
  await loadConflicts();
}

export function showConflicts(on) {
  active = on;
  if (on) {
    $('conflicts-message').textContent = '';
    loadConflicts();
  }
}

export function initConflicts() {
  onEvent((event) => {
    // an unreadable event is a conflict of its own, whatever kind it claims to be
    if (event.problem || ['checkout', 'checkin', 'renew', 'patron_register', 'void', 'resolve'].includes(event.kind)) reloadSoon();
  });
  document.addEventListener('languagechange', () => { if (active) render(); });
}
