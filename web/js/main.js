// Starts the desk's web UI: language, sign-in, the screens and the keys that switch between them.

import { renderSoundToggle, setSound, soundOn } from './announce.js';
import { api, get, setCsrf, whenSignedOut } from './api.js';
import { onStatus, render as renderBar, refreshSoon as refreshBarSoon, setLiveState, startClusterBar, stopClusterBar } from './clusterbar.js';
import { clearPatron, configureDesk, focusScan, initDesk, loadFeed, MODES, setMode } from './desk.js';
import { $, clear, el } from './dom.js';
import { applyTo, fmt, language, languages, loadLanguageList, preferredLanguage, setCurrency, setLanguage, t } from './i18n.js';
import { onEvent, onState, startLive, stopLive } from './live.js';
import { initConflicts, showConflicts } from './admin/conflicts.js';
import { initDesks, showDesks } from './admin/desks.js';
import { initFiles } from './admin/files.js';
import { initUploads, showUploads } from './admin/uploads.js';
import { initSignIn, showSignIn } from './signin.js';

const VIEWS = ['signin', 'desk', 'conflicts', 'uploads', 'desks', 'files'];
const ADMIN_VIEWS = ['conflicts', 'uploads', 'desks', 'files'];
const KEYS = { F1: '#/desk/checkout', F2: '#/desk/checkin', F3: '#/desk/renew', F4: '#/desk/payment', F6: '#/desk/inhouse', F7: '#/desk/register', F8: '#/admin/conflicts', F9: '#/admin/uploads' };

const app = { config: null, session: null, view: null };

function showView(name) {
  app.view = name;
  for (const view of VIEWS) $(`view-${view}`).hidden = view !== name;
  for (const a of document.querySelectorAll('#admin-tabs a')) {
    if (a.dataset.view === name) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  if (name !== 'desk') for (const a of document.querySelectorAll('#desk-tabs a')) a.removeAttribute('aria-current');
  showConflicts(name === 'conflicts');
  showUploads(name === 'uploads');
  showDesks(name === 'desks');
  document.body.dataset.view = name;
}

function route() {
  if (!app.session) return showView('signin');
  const [, area, what] = (location.hash || '#/desk/checkout').split('/');
  if (area === 'admin' && ADMIN_VIEWS.includes(what)) {
    if (app.session.role !== 'admin') { location.hash = '#/desk/checkout'; return undefined; }
    return showView(what);
  }
  showView('desk');
  setMode(MODES.includes(what) ? what : 'checkout');
  return undefined;
}

/** Switches screens at once (a hashchange event would come later than the scanner's next keystrokes). */
function navigate(hash) {
  if (location.hash !== hash) history.pushState(null, '', hash);
  route();
}

function renderWho() {
  const who = $('who');
  who.hidden = !app.session;
  if (app.session) who.textContent = t('app.who', { name: app.session.name, role: t(`role.${app.session.role}`) });
  document.title = app.config ? t('app.title', { desk: app.config.desk }) : t('app.name');
  $('signin-desk').textContent = app.config ? t('signin.desk', { desk: app.config.desk }) : '';
}

async function signedIn(session) {
  app.session = session;
  setCsrf(session.csrf);
  document.body.classList.add('signed-in');
  $('nav').hidden = false;
  $('sign-out').hidden = false;
  $('admin-tabs').hidden = session.role !== 'admin';
  renderWho();
  startClusterBar();
  try {
    const page = await loadFeed();
    startLive(page.next, page.events);
  } catch {
    startLive(null);
  }
  if (!location.hash || location.hash === '#/signin') location.hash = '#/desk/checkout';
  route();
}

function signedOut(reason) {
  if (!app.session && reason === 'expired') return;
  app.session = null;
  setCsrf(null);
  stopLive();
  stopClusterBar();
  document.body.classList.remove('signed-in');
  $('nav').hidden = true;
  $('sign-out').hidden = true;
  renderWho();
  showView('signin');
  showSignIn(reason);
}

function fillLanguages() {
  const select = clear($('lang-select'));
  for (const l of languages()) select.append(el('option', { value: l.code, lang: l.code, text: l.name }));
  select.value = language();
}

function onKey(event) {
  if ($('override-dialog').open || !app.session) return;
  const target = KEYS[event.key];
  if (target && !event.altKey && !event.ctrlKey && !event.metaKey) {
    event.preventDefault();
    if (target.startsWith('#/admin') && app.session.role !== 'admin') return;
    navigate(target);
    return;
  }
  if (event.key === 'Escape' && app.view === 'desk') {
    event.preventDefault();
    clearPatron();
  }
}

async function boot() {
  await loadLanguageList();
  await setLanguage(preferredLanguage());
  fillLanguages();
  renderSoundToggle();
  app.config = await (await fetch('/api/v1/ui-config', { cache: 'no-store' })).json();
  setCurrency(app.config.currency);
  $('desk-name').textContent = app.config.desk;
  configureDesk({ patternText: app.config.patron_pattern, node: app.config.node });
  renderWho();

  initSignIn(signedIn);
  initDesk();
  initConflicts();
  initUploads();
  initDesks();
  initFiles();
  whenSignedOut(signedOut);
  onState(setLiveState);
  onStatus((status) => {
    const badge = $('conflict-badge');
    badge.hidden = !status.conflicts;
    badge.textContent = status.conflicts ? fmt.number(status.conflicts) : '';
  });
  onEvent(() => refreshBarSoon());

  $('lang-select').addEventListener('change', async (e) => {
    await setLanguage(e.target.value, { remember: true });
    focusScan();
  });
  $('sound-toggle').addEventListener('click', () => setSound(!soundOn()));
  $('sign-out').addEventListener('click', async () => {
    try { await api('DELETE', '/session'); } catch { /* signed out either way */ }
    signedOut('signed_out');
  });
  document.addEventListener('keydown', onKey);
  window.addEventListener('hashchange', route);
  document.addEventListener('languagechange', () => {
    renderWho();
    renderSoundToggle();
    renderBar();
    applyTo(document);
  });

  document.body.classList.remove('booting');
  try {
    const session = await get('/session');
    await signedIn(session);
  } catch {
    signedOut(null);
  }
}

boot();
