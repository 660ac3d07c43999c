// The upload report: the ILS's answer to every scan, filterable, exportable as CSV.

import { ApiError, get, post } from '../api.js';
import { kindName } from '../describe.js';
import { $, clear, debounce, el } from '../dom.js';
import { fmt, t } from '../i18n.js';
import { onEvent } from '../live.js';

const CSV_FIELDS = ['event', 'kind', 'desk', 'at', 'patron', 'item', 'amount', 'status', 'message', 'ils_at'];
let rows = [];
let active = false;

function query() {
  const params = new URLSearchParams();
  const status = $('uploads-status').value;
  const q = $('uploads-q').value.trim();
  if (status) params.set('status', status);
  if (q) params.set('q', q);
  const text = params.toString();
  return text ? `?${text}` : '';
}

// A row whose time the ILS got corrected (the desk's clock was off, or it would have preceded the scan
// before it on the same item or patron) is marked with the time sent.
function corrected(row) {
  if (typeof row.ils_at !== 'number') return null;
  const how = t(`uploads.corrected_by.${row.at_corrected_by || 'order'}`, { offset: fmt.duration(row.at_corrected_ms || 0) });
  return el('span', { class: 'tag warn corrected', title: how, 'aria-label': how,
    text: t('uploads.corrected', { time: fmt.dateTime(row.ils_at) }) });
}

function render(total) {
  const body = clear($('uploads-body'));
  for (const row of rows) {
    body.append(el('tr', { class: `outcome-${row.status}` },
      el('td', {}, fmt.dateTime(row.at), corrected(row)),
      el('td', { text: row.desk || '' }),
      el('td', { text: kindName(row.kind) }),
      el('td', { class: 'barcode', text: row.patron || '' }),
      el('td', { class: 'barcode', text: row.item || '' }),
      el('td', {}, el('span', { class: `tag outcome ${row.status}`, text: t(`outcome.${row.status}`) })),
      el('td', { text: row.message || '' })));
  }
  $('uploads-message').textContent = rows.length ? t('uploads.count', { count: total ?? rows.length }) : t('uploads.none');
}

export async function loadUploads() {
  try {
    const data = await get(`/outcomes${query()}`);
    rows = data.outcomes;
    render(data.total);
  } catch (e) {
    rows = [];
    render(0);
    $('uploads-message').textContent = e instanceof ApiError && (e.status === 404 || e.status === 405)
      ? t('uploads.not_available') : t('error.generic', { message: e.message || e.code });
  }
}

function csvCell(value) {
  const text = value === null || value === undefined ? '' : String(value);
  // A leading =, +, - or @ would be a formula to a spreadsheet: quote it as text.
  const safe = /^[=+\-@\t\r]/.test(text) ? `'${text}` : text;
  return /[",\n\r;]/.test(safe) || safe !== text ? `"${safe.replace(/"/g, '""')}"` : safe;
}

export function toCsv(list) {
  const lines = [CSV_FIELDS.join(',')];
  for (const row of list) {
    lines.push(CSV_FIELDS.map((f) => csvCell((f === 'at' || f === 'ils_at') && row[f] ? new Date(row[f]).toISOString() : row[f])).join(','));
  }
  return `${lines.join('\r\n')}\r\n`;
}

function exportCsv() {
  const blob = new Blob([toCsv(rows)], { type: 'text/csv;charset=utf-8' });
  const link = el('a', { href: URL.createObjectURL(blob), download: `circmesh-upload-report-${new Date().toISOString().slice(0, 10)}.csv` });
  document.body.append(link);
  link.click();
  setTimeout(() => { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
}

const reloadSoon = debounce(() => { if (active) loadUploads(); }, 300);

export function showUploads(on) {
  active = on;
  if (on) loadUploads();
}

// Staff changed patrons at the ILS (a block lifted, a card renewed): the bridge reads them all again now.
async function refreshSnapshot() {
  const message = $('uploads-message');
  try {
    await post('/snapshot/refresh', {});
    message.textContent = t('uploads.snapshot_started');
  } catch (e) {
    message.textContent = e instanceof ApiError && e.code === 'not_the_bridge' ? t('uploads.snapshot_not_bridge')
      : (e.message || String(e));
  }
}

export function initUploads() {
  $('snapshot-refresh').addEventListener('click', refreshSnapshot);
  $('uploads-filter').addEventListener('submit', (e) => { e.preventDefault(); loadUploads(); });
  $('uploads-status').addEventListener('change', loadUploads);
  $('uploads-q').addEventListener('input', debounce(loadUploads, 250));
  $('uploads-csv').addEventListener('click', exportCsv);
  onEvent(() => reloadSoon());
  document.addEventListener('languagechange', () => { if (active) render(rows.length); });
}
