// Export the log as an ILS's offline file (.koc, OffCirc.dat, pending.xacts); import such a file with
// a line-by-line report.

import { ApiError, api } from '../api.js';
import { $, clear, el } from '../dom.js';
import { t } from '../i18n.js';

const DEFAULT_NAMES = { koc: 'circmesh.koc', offcirc: 'OffCirc.dat', evergreen: 'pending.xacts' };

function errorText(e) {
  if (e instanceof ApiError) {
    if (e.status === 404 || e.status === 405) return t('files.not_available');
    const key = `error.${e.code}`;
    return t(key) !== key ? t(key) : t('error.generic', { message: e.message || e.code });
  }
  return t('error.generic', { message: String(e) });
}

function fileName(response, format) {
  const header = response.headers.get('Content-Disposition') || '';
  const star = /filename\*=UTF-8''([^;]+)/i.exec(header);
  if (star) return decodeURIComponent(star[1]);
  const plain = /filename="?([^";]+)"?/i.exec(header);
  return plain ? plain[1] : DEFAULT_NAMES[format];
}

async function exportLog(format) {
  const message = $('export-message');
  message.textContent = '';
  try {
    const response = await api('GET', `/export?format=${encodeURIComponent(format)}`, undefined, { raw: true });
    const blob = await response.blob();
    const name = fileName(response, format);
    const link = el('a', { href: URL.createObjectURL(blob), download: name });
    document.body.append(link);
    link.click();
    setTimeout(() => { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
    message.textContent = t('files.downloaded', { name });
  } catch (e) {
    message.textContent = errorText(e);
  }
}

async function importFile(event) {
  event.preventDefault();
  const message = $('import-message');
  const file = $('import-file').files[0];
  clear($('import-errors'));
  $('import-report').hidden = true;
  if (!file) {
    message.textContent = t('files.choose_file');
    return;
  }
  const format = $('import-format').value;
  const skip = $('import-skip').checked;
  try {
    const result = await api('POST', `/imports?format=${encodeURIComponent(format)}&skip_errors=${skip}`, file,
      { contentType: 'application/octet-stream' });
    report(result);
  } catch (e) {
    if (e instanceof ApiError && e.body && Array.isArray(e.body.errors)) report({ recorded: e.body.recorded || 0, errors: e.body.errors });
    else message.textContent = errorText(e);
  }
}

function report(result) {
  const errors = result.errors || [];
  $('import-message').textContent = [
    t('files.recorded', { count: result.recorded || 0 }),
    errors.length ? t('files.errors', { count: errors.length }) : '',
  ].join(' ').trim();
  const body = clear($('import-errors'));
  for (const error of errors) {
    body.append(el('tr', {}, el('td', { text: String(error.line) }), el('td', { text: error.reason || '' }),
      el('td', { class: 'mono', text: error.text || '' })));
  }
  $('import-report').hidden = errors.length === 0;
}

export function initFiles() {
  for (const button of document.querySelectorAll('[data-export]')) {
    button.addEventListener('click', () => exportLog(button.dataset.export));
  }
  $('import-form').addEventListener('submit', importFile);
}
