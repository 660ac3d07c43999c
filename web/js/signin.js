// Signing in. After five wrong passwords in a row the desk makes the next attempt wait, and this
// screen counts the wait down.

import { ApiError, api } from './api.js';
import { $ } from './dom.js';
import { t } from './i18n.js';

let countdown = null;
let notice = null;

function showNotice(key) {
  notice = key;
  const node = $('signin-notice');
  node.hidden = !key;
  node.textContent = key ? t(key) : '';
}

function wait(seconds) {
  clearInterval(countdown);
  const error = $('signin-error');
  const submit = $('signin-submit');
  let left = seconds;
  const tick = () => {
    if (left <= 0) {
      clearInterval(countdown);
      submit.disabled = false;
      error.textContent = t('signin.retry_now');
      error.dataset.kind = 'info';
      return;
    }
    submit.disabled = true;
    error.dataset.kind = 'error';
    error.textContent = t('signin.throttled', { seconds: left });
    left -= 1;
  };
  tick();
  countdown = setInterval(tick, 1000);
}

export function showSignIn(reason = null) {
  showNotice(reason === 'expired' ? 'signin.expired' : reason === 'signed_out' ? 'signin.signed_out' : null);
  $('signin-password').value = '';
  $('signin-error').textContent = '';
  $('signin-name').focus();
}

export function initSignIn(onSignedIn) {
  $('signin-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const name = $('signin-name').value.trim();
    const password = $('signin-password').value;
    const error = $('signin-error');
    error.dataset.kind = 'error';
    error.textContent = '';
    if (!name || !password) {
      error.textContent = t('signin.missing');
      return;
    }
    $('signin-submit').disabled = true;
    try {
      const session = await api('POST', '/session', { name, password });
      error.textContent = '';
      showNotice(null);
      $('signin-password').value = '';
      $('signin-submit').disabled = false;
      await onSignedIn(session);
    } catch (e) {
      $('signin-submit').disabled = false;
      $('signin-password').value = '';
      $('signin-password').focus();
      const retry = e instanceof ApiError && e.body ? Number(e.body.retry_after) : 0;
      if (e instanceof ApiError && e.code === 'throttled' && retry > 0) wait(retry);
      else if (e instanceof ApiError && e.code === 'bad_password') {
        error.textContent = t('signin.wrong');
        if (retry > 0) setTimeout(() => wait(retry), 1500);
      } else if (e instanceof ApiError && e.code === 'network') error.textContent = t('error.network');
      else error.textContent = t('error.generic', { message: e.message || e.code });
    }
  });
  document.addEventListener('languagechange', () => { if (notice) showNotice(notice); });
}
