// The desk screen: one big scan field for a barcode scanner (it types the barcode and presses Enter),
// the patron panel, this desk's recent scans and every desk's live feed.

import { announce, resetResult } from './announce.js';
import { ApiError, get, post } from './api.js';
import { describeEvent } from './describe.js';
import { $, clear, debounce, el } from './dom.js';
import { fmt, has, parseMoney, t } from './i18n.js';
import { onEvent, recent } from './live.js';

export const MODES = ['checkout', 'checkin', 'renew', 'payment', 'inhouse', 'register'];
const FEED_MAX = 200;
const VISIT_MAX = 100;

const state = {
  mode: 'checkout',
  patron: null,
  patronData: null,
  card: null, // register mode: the new card waiting for a name
  pattern: null,
  node: null,
  queue: Promise.resolve(),
  visit: [],
};

const enc = encodeURIComponent;

export function configureDesk({ patternText, node }) {
  state.node = node;
  try {
    state.pattern = patternText ? new RegExp(patternText) : null;
  } catch {
    state.pattern = null;
  }
}

// ---- focus: the scan field always gets it back

export function focusScan() {
  const view = $('view-desk');
  if (view.hidden || $('override-dialog').open) return;
  const target = state.mode === 'payment' && state.patron && document.activeElement === $('amount') ? $('amount')
    : state.mode === 'register' && state.card && document.activeElement === $('reg-name') ? $('reg-name')
      : $('scan');
  target.focus();
}

function isPatronCard(text) {
  return state.pattern !== null && state.pattern.test(text);
}

// ---- modes

export function setMode(mode) {
  if (!MODES.includes(mode)) mode = 'checkout';
  state.mode = mode;
  state.card = null;
  for (const a of document.querySelectorAll('#desk-tabs a')) {
    if (a.dataset.mode === mode) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  $('extra-amount').hidden = mode !== 'payment';
  $('extra-name').hidden = mode !== 'register';
  $('reg-name').value = '';
  $('amount').value = '';
  resetResult();
  renderMode();
  focusScan();
}

export function renderMode() {
  const mode = state.mode;
  $('mode-title').textContent = t(`mode.${mode}.title`);
  $('mode-hint').textContent = t(`mode.${mode}.hint`);
  const usesPatron = mode === 'checkout' || mode === 'payment' || mode === 'renew';
  $('patron-strip').hidden = !usesPatron;
  let label;
  if (mode === 'checkout') label = state.patron ? t('mode.checkout.scan_item') : t('mode.checkout.scan_patron');
  else if (mode === 'payment') label = t('mode.payment.scan_patron');
  else label = t(`mode.${mode}.scan`);
  $('scan-label').textContent = label;
  renderStrip();
}

function renderStrip() {
  const strip = $('strip-patron');
  clear(strip);
  if (!state.patron) {
    strip.append(el('span', { class: 'muted', text: t('desk.no_patron') }));
    return;
  }
  strip.append(el('strong', { class: 'barcode', text: state.patron }));
  const name = state.patronData && state.patronData.name;
  if (name) strip.append(el('span', { class: 'strip-name', text: name }));
}

// ---- the patron

async function loadPatron(barcode) {
  return get(`/patrons/${enc(barcode)}`);
}

async function setPatron(barcode) {
  state.patron = barcode;
  state.patronData = null;
  state.panelOnly = null;
  renderMode();
  try {
    state.patronData = await loadPatron(barcode);
  } catch (e) {
    showError(e);
  }
  renderMode();
  renderPatronPanel();
}

export function clearPatron() {
  state.patron = null;
  state.patronData = null;
  state.card = null;
  $('amount').value = '';
  $('reg-name').value = '';
  $('scan').value = '';
  renderMode();
  renderPatronPanel();
  announce('info', t('result.patron_cleared'));
  focusScan();
}

/** Finds patrons by name (the ILS snapshot and offline registrations; accents and case ignored). */
async function searchPatrons() {
  const q = $('patron-q').value.trim();
  const list = clear($('patron-hits'));
  list.hidden = !q;
  if (!q) return;
  let hits = [];
  try {
    hits = (await get(`/patrons?q=${enc(q)}`)).patrons;
  } catch (e) {
    showError(e);
    return;
  }
  if ($('patron-q').value.trim() !== q) return; // typed on meanwhile
  if (!hits.length) list.append(el('li', { class: 'muted', text: t('patron.search_none') }));
  for (const hit of hits.slice(0, 20)) {
    const button = el('button', { type: 'button', class: 'ghost hit' },
      el('span', { text: hit.name }), ' ', el('span', { class: 'barcode muted', text: hit.barcode }));
    if (hit.ils && hit.ils.block) button.append(' ', el('span', { class: 'tag bad', text: t('patron.blocked') }));
    button.addEventListener('click', () => {
      $('patron-q').value = '';
      clear($('patron-hits')).hidden = true;
      enqueue(() => setPatron(hit.barcode));
      focusScan();
    });
    list.append(el('li', {}, button));
  }
}

/** Shows a patron in the panel without making them the desk's current patron (after a checkin). */
async function showBorrower(barcode) {
  try {
    state.panelOnly = await loadPatron(barcode);
    renderPatronPanel(state.panelOnly);
  } catch {
    // the scan itself is what matters
  }
}

/** Reloads the patron shown in the panel: at once after this desk's own scan, a little later after
live events (they come in bursts when desks reconnect). */
async function refreshPatron() {
  const barcode = state.patron || (state.panelOnly && state.panelOnly.barcode);
  if (!barcode) return;
  try {
    const data = await loadPatron(barcode);
    if (state.patron === barcode) state.patronData = data;
    else if (state.panelOnly && state.panelOnly.barcode === barcode) state.panelOnly = data;
    else return; // another patron was scanned meanwhile
    renderStrip();
    renderPatronPanel(data);
  } catch {
    // keep what is shown
  }
}

const refreshPatronSoon = debounce(refreshPatron, 120);

function fact(label, value, tone = '') {
  return [el('dt', { text: label }), el('dd', { class: tone }, value)];
}

function renderPatronPanel(data = state.patronData) {
  const body = clear($('patron-body'));
  if (!state.patron && !data) {
    state.panelOnly = null;
    body.append(el('p', { class: 'empty', text: t('patron.none') }));
    return;
  }
  if (!data) {
    body.append(el('p', { class: 'barcode big', text: state.patron }));
    return;
  }
  const ils = data.ils; // what the ILS snapshot says (null: not in it, or no snapshot on this desk)
  const today = new Date().toISOString().slice(0, 10);
  const status = !ils ? null : !ils.expiry ? t('patron.valid')
    : ils.expiry < today ? t('patron.expired_on', { date: ils.expiry }) : t('patron.valid_until', { date: ils.expiry });
  const blocks = ils ? (ils.block ? [ils.block] : []) : undefined;
  const fines = ils ? ils.owes : undefined;
  const notKnown = el('span', { class: 'muted', text: t('patron.not_known') });
  const name = data.name ? el('span', { text: data.name }) : el('span', { class: 'muted', text: t('patron.name_unknown') });
  const facts = el('dl', { class: 'facts' },
    fact(t('patron.card'), el('span', { class: 'barcode', text: data.barcode })),
    fact(t('patron.name'), name),
    fact(t('patron.status'), status ? el('span', { text: status }) : notKnown.cloneNode(true)),
    fact(t('patron.blocks'), Array.isArray(blocks)
      ? el('span', { text: blocks.length ? blocks.join(', ') : t('patron.blocks_none') })
      : notKnown.cloneNode(true), Array.isArray(blocks) && blocks.length ? 'bad' : ''),
    fact(t('patron.fines'), fines !== undefined && fines !== null
      ? el('span', { text: fmt.money(fines) }) : notKnown.cloneNode(true)),
    fact(t('patron.paid'), el('span', { text: fmt.money(data.paid_offline || '0') })),
  );
  body.append(facts);
  const tags = el('p', { class: 'tags' });
  if (data.registered_offline) tags.append(el('span', { class: 'tag', text: t('patron.registered_offline') }));
  if (data.conflicts && data.conflicts.length) {
    tags.append(el('span', { class: 'tag bad', text: t('patron.conflicts', { count: data.conflicts.length }) }));
  }
  if (tags.childNodes.length) body.append(tags);

  const loans = [...(data.loans || [])].sort((a, b) => (b.at || 0) - (a.at || 0));
  const atIls = data.ils_loans || []; // lent online before the outage, not returned at a desk since
  const count = loans.length + atIls.length;
  body.append(el('h3', {}, t('patron.loans'), ' ', el('span', { class: 'count', text: fmt.number(count) })));
  if (!count) {
    body.append(el('p', { class: 'empty', text: t('patron.loans_none') }));
    return;
  }
  const rows = loans.map((loan) => el('tr', { class: loan.node === state.node ? 'mine' : 'other', dataset: { item: loan.item } },
    el('td', { class: 'barcode', text: loan.item }),
    el('td', { text: fmt.shortDateTime(loan.at) }),
    el('td', {}, el('span', { class: `desk-chip${loan.node === state.node ? ' mine' : ''}`,
      title: loan.node === state.node ? t('patron.this_desk') : null, text: loan.desk || '—' })),
    el('td', { text: fmt.shortDate(loan.due) }),
  )).concat(atIls.map((loan) => el('tr', { class: 'ils', dataset: { item: loan.item } },
    el('td', { class: 'barcode', text: loan.item }),
    el('td', { text: t('patron.before_outage') }),
    el('td', {}, el('span', { class: 'desk-chip', text: t('patron.at_ils') })),
    el('td', { text: loan.due ? fmt.shortDate(Date.parse(`${loan.due}T12:00:00`)) : '—' }), // a day, not an instant
  )));
  body.append(el('table', { class: 'loans' },
    el('thead', {}, el('tr', {},
      el('th', { text: t('patron.item') }), el('th', { text: t('patron.lent') }),
      el('th', { text: t('patron.desk') }), el('th', { text: t('patron.due') }))),
    el('tbody', {}, rows)));
}

// ---- results

/** What the desk said, kept as a key and values so that it can be said again in another language. */
function msg(key, values = {}) {
  return { key, values };
}

function words(said) {
  const values = { ...said.values };
  if (typeof values.due === 'number') values.due = fmt.date(values.due);
  if (values.amount !== undefined) values.amount = fmt.money(values.amount);
  return t(said.key, values);
}

function showError(e) {
  let said;
  if (e instanceof ApiError && has(`error.${e.code}`)) said = msg(`error.${e.code}`);
  else said = msg('error.generic', { message: e instanceof ApiError ? e.message || e.code : String(e) });
  announce('error', words(said));
  addVisit('error', said);
}

function addVisit(kind, said) {
  state.visit.unshift({ kind, said, at: Date.now() });
  state.visit.length = Math.min(state.visit.length, VISIT_MAX);
  renderVisit();
}

function renderVisit() {
  const list = clear($('visit-list'));
  $('visit-empty').hidden = state.visit.length > 0;
  for (const entry of state.visit) {
    list.append(el('li', { class: `visit-${entry.kind}` },
      el('span', { class: 'visit-mark', 'aria-hidden': 'true' }),
      el('time', { text: fmt.time(entry.at) }),
      el('span', { class: 'visit-text', text: words(entry.said) })));
  }
}

const SNAPSHOT_WARNINGS = ['unknown_patron', 'patron_blocked', 'card_expired', 'fines_over_limit',
  'loan_limit_reached', 'item_unknown', 'item_not_for_loan', 'item_on_hold', 'hold_found', 'item_on_ils_loan',
  'not_lent', 'in_transit', 'hold_in_transit'];

async function warningTexts(warnings, item) {
  const out = [];
  for (const w of warnings || []) {
    if (w.code === 'item_on_loan') {
      let loan = null;
      try { loan = (await get(`/items/${enc(item)}`)).loan; } catch { /* fall back below */ }
      out.push(loan ? t('warning.item_on_loan', { item, patron: loan.patron, desk: loan.desk || '—' })
        : t('warning.item_on_loan_plain', { item }));
    } else if (w.code === 'no_offline_loan') {
      out.push(t(state.mode === 'renew' ? 'warning.no_offline_loan_renew' : 'warning.no_offline_loan_checkin', { item }));
    } else if (['already_on_loan_to_patron', 'not_on_loan', 'already_registered'].includes(w.code)) {
      out.push(t(`warning.${w.code}`, { item, patron: state.card || state.patron }));
    } else if (SNAPSHOT_WARNINGS.includes(w.code)) { // what the ILS would have said (its snapshot)
      const reason = w.code === 'item_not_for_loan' ? t(`warning.not_lendable.${w.reason}`) : w.reason;
      out.push(t(`warning.${w.code}`, { ...w, item, reason, date: w.date ? fmt.date(Date.parse(`${w.date}T12:00:00`)) : '' }));
    } else {
      out.push(w.message || w.code);
    }
  }
  return out;
}

function askOverride(texts) {
  const dialog = $('override-dialog');
  const list = clear($('override-warnings'));
  for (const text of texts) list.append(el('li', { text }));
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      resolve(dialog.returnValue === 'override');
      setTimeout(focusScan, 0);
    }, { once: true });
    dialog.returnValue = '';
    dialog.showModal();
    $('override-cancel').focus();
  });
}

// ---- the scans

async function lend(item, override) {
  const patron = state.patron;
  try {
    const body = { patron, item };
    if (override) body.override = true;
    const res = await post('/checkouts', body);
    const notes = await warningTexts(res.warnings.filter((w) => !override || w.blocking !== 'yes'), item);
    const said = msg('result.checked_out', { item, patron, due: res.event.body.due });
    announce(notes.length || override ? 'warn' : 'ok', words(said), notes);
    addVisit(override ? 'warn' : 'ok', said);
    await refreshPatron();
  } catch (e) {
    if (e instanceof ApiError && e.code === 'needs_override' && !override) {
      const texts = await warningTexts(e.body.warnings, item);
      announce('warn', texts[0] || t('override.title'), texts.slice(1));
      if (await askOverride(texts)) return lend(item, true);
      const said = msg('result.not_lent', { item });
      announce('info', words(said), texts);
      addVisit('info', said);
      return undefined;
    }
    showError(e);
  }
  return undefined;
}

async function checkin(item) {
  let before = null;
  try { before = (await get(`/items/${enc(item)}`)).loan; } catch { /* the checkin still goes ahead */ }
  try {
    const res = await post('/checkins', { item });
    const notes = await warningTexts(res.warnings, item);
    const said = before && before.desk
      ? msg('result.checked_in_from', { item, patron: before.patron, desk: before.desk })
      : msg('result.checked_in', { item });
    announce(notes.length ? 'warn' : 'ok', words(said), notes);
    addVisit(notes.length ? 'warn' : 'ok', said);
    if (before) showBorrower(before.patron);
  } catch (e) {
    showError(e);
  }
}

async function renew(item) {
  try {
    const body = { item };
    if (state.patron) body.patron = state.patron;
    const res = await post('/renewals', body);
    const notes = await warningTexts(res.warnings, item);
    const said = msg('result.renewed', { item, due: res.event.body.due });
    announce(notes.length ? 'warn' : 'ok', words(said), notes);
    addVisit(notes.length ? 'warn' : 'ok', said);
    await refreshPatron();
  } catch (e) {
    showError(e);
  }
}

async function inHouse(item) {
  try {
    await post('/in-house-uses', { item });
    const said = msg('result.inhouse', { item });
    announce('ok', words(said));
    addVisit('ok', said);
  } catch (e) {
    showError(e);
  }
}

async function pay() {
  if (!state.patron) {
    announce('warn', t('result.need_patron'));
    return focusScan();
  }
  const typed = $('amount').value;
  const amount = parseMoney(typed);
  if (amount === null) {
    announce('error', typed.trim() ? t('result.bad_amount', { text: typed.trim() }) : t('result.need_amount'));
    $('amount').focus();
    return undefined;
  }
  try {
    await post('/payments', { patron: state.patron, amount });
    const said = msg('result.paid', { amount, patron: state.patron });
    announce('ok', words(said));
    addVisit('ok', said);
    $('amount').value = '';
    await refreshPatron();
  } catch (e) {
    showError(e);
  }
  $('scan').focus();
  return undefined;
}

async function register() {
  const name = $('reg-name').value.trim();
  if (!state.card) {
    announce('warn', t('mode.register.scan'));
    return focusScan();
  }
  if (!name) {
    announce('warn', t('result.need_name'));
    $('reg-name').focus();
    return undefined;
  }
  try {
    const card = state.card;
    const res = await post('/registrations', { patron: card, name });
    const notes = await warningTexts(res.warnings, null);
    const said = msg('result.registered', { patron: card, name });
    announce(notes.length ? 'warn' : 'ok', words(said), notes);
    addVisit(notes.length ? 'warn' : 'ok', said);
    state.card = null;
    $('reg-name').value = '';
  } catch (e) {
    showError(e);
  }
  $('scan').focus();
  return undefined;
}

async function handleScan(text) {
  const mode = state.mode;
  if (mode === 'checkout') {
    if (!state.patron || isPatronCard(text)) {
      await setPatron(text);
      announce('info', t('result.patron_set', { patron: text }));
      return;
    }
    await lend(text, false);
  } else if (mode === 'checkin') {
    await checkin(text);
  } else if (mode === 'renew') {
    if (isPatronCard(text)) {
      await setPatron(text);
      announce('info', t('result.patron_set_renew', { patron: text }));
      return;
    }
    await renew(text);
  } else if (mode === 'payment') {
    await setPatron(text);
    announce('info', t('result.patron_set_payment', { patron: text }));
    $('amount').focus();
    return;
  } else if (mode === 'inhouse') {
    await inHouse(text);
  } else if (mode === 'register') {
    state.card = text;
    announce('info', t('result.card_for_register', { patron: text }));
    $('reg-name').focus();
    return;
  }
  focusScan();
}

/** Scans are handled one after another, in the order scanned, even when the scanner is faster. */
function enqueue(work) {
  state.queue = state.queue.then(work).catch((e) => showError(e));
  return state.queue;
}

// ---- the live feed

function feedEntry(event, fresh) {
  const mine = event.node === state.node;
  return el('li', { class: `feed-entry kind-${event.kind}${fresh ? ' fresh' : ''}`, dataset: { event: event.id } },
    el('time', { text: fmt.time(event.at) }),
    el('span', { class: `desk-chip${mine ? ' mine' : ''}`, text: event.desk || '?' }),
    el('span', { class: 'feed-text' }, describeEvent(event, { lookup: (id) => feedEvents.find((e) => e.id === id) }),
      event.staff ? el('span', { class: 'feed-staff', text: t('feed.by', { staff: event.staff }) }) : null));
}

function addToFeed(event, fresh) {
  if (event.kind === 'applied') return; // the ILS's answers belong in the upload report
  const feed = $('feed');
  feed.prepend(feedEntry(event, fresh));
  while (feed.childElementCount > FEED_MAX) feed.lastElementChild.remove();
  $('feed-empty').hidden = true;
}

function affectsPanel(event) {
  const shown = state.patron ? state.patronData : state.panelOnly;
  const barcode = state.patron || (shown && shown.barcode);
  if (!barcode) return false;
  const b = event.body || {};
  if (b.patron === barcode) return true;
  if (event.kind === 'void' || event.kind === 'resolve') return true;
  return Boolean(shown && shown.loans && shown.loans.some((l) => l.item === b.item));
}

let feedEvents = [];

export async function loadFeed() {
  const page = await recent(50);
  feedEvents = page.events;
  renderFeed();
  return page;
}

function renderFeed() {
  const feed = clear($('feed'));
  const shown = feedEvents.filter((e) => e.kind !== 'applied');
  for (const event of shown) feed.prepend(feedEntry(event, false));
  $('feed-empty').hidden = shown.length > 0;
}

// ---- wiring

export function initDesk() {
  $('scan-form').addEventListener('submit', (e) => {
    e.preventDefault();
    if (document.activeElement === $('amount')) return enqueue(pay);
    if (document.activeElement === $('reg-name')) return enqueue(register);
    const text = $('scan').value.trim();
    $('scan').value = '';
    if (!text) {
      if (state.mode === 'payment' && state.patron) $('amount').focus();
      if (state.mode === 'register' && state.card) $('reg-name').focus();
      return undefined;
    }
    return enqueue(() => handleScan(text));
  });
  $('clear-patron').addEventListener('click', clearPatron);
  $('patron-search').addEventListener('submit', (e) => { e.preventDefault(); searchPatrons(); });
  $('patron-q').addEventListener('input', debounce(searchPatrons, 250));
  $('view-desk').addEventListener('click', (e) => {
    if (!e.target.closest('input, button, select, textarea, a, table, dl, label')) focusScan();
  });
  window.addEventListener('focus', focusScan);
  onEvent((event, fresh) => {
    feedEvents.push(event);
    if (feedEvents.length > FEED_MAX) feedEvents.shift();
    addToFeed(event, fresh);
    if (affectsPanel(event)) refreshPatronSoon();
  });
  document.addEventListener('languagechange', () => {
    renderMode();
    renderPatronPanel(state.patron ? state.patronData : state.panelOnly);
    renderVisit();
    renderFeed();
  });
  renderVisit();
}
