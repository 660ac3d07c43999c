// Translations and the locale's formats. Every visible string comes from web/i18n/<language>.json:
// markup names keys with data-i18n / data-i18n-attr, scripts call t(key, values).

const STORE_KEY = 'circmesh.language';
const FALLBACK = 'en';

let strings = {};
let fallback = {};
let current = FALLBACK;
let available = [];
const formats = {};

async function fetchStrings(code) {
  const response = await fetch(`/i18n/${encodeURIComponent(code)}.json`, { cache: 'no-cache' });
  if (!response.ok) throw new Error(`language ${code}: HTTP ${response.status}`);
  return response.json();
}

export async function loadLanguageList() {
  const response = await fetch('/i18n/index.json', { cache: 'no-cache' });
  available = (await response.json()).languages;
  return available;
}

export function languages() { return available; }
export function language() { return current; }

/** The stored choice, else the first of the browser's languages we have (exactly, then by base). */
export function preferredLanguage() {
  const codes = available.map((l) => l.code);
  const stored = localStorage.getItem(STORE_KEY);
  if (stored && codes.includes(stored)) return stored;
  const wanted = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language];
  for (const tag of wanted) {
    if (!tag) continue;
    const exact = codes.find((c) => c.toLowerCase() === tag.toLowerCase());
    if (exact) return exact;
    const base = tag.split('-')[0].toLowerCase();
    const byBase = codes.find((c) => c.split('-')[0].toLowerCase() === base);
    if (byBase) return byBase;
  }
  return codes.includes(FALLBACK) ? FALLBACK : codes[0];
}

export async function setLanguage(code, { remember = false } = {}) {
  if (!Object.keys(fallback).length) fallback = await fetchStrings(FALLBACK);
  strings = code === FALLBACK ? fallback : await fetchStrings(code);
  current = code;
  for (const key of Object.keys(formats)) delete formats[key];
  if (remember) localStorage.setItem(STORE_KEY, code);
  document.documentElement.lang = code;
  applyTo(document);
  document.dispatchEvent(new CustomEvent('languagechange', { detail: { code } }));
}

function lookup(table, key) {
  let node = table;
  for (const part of key.split('.')) {
    if (node === null || typeof node !== 'object' || !(part in node)) return undefined;
    node = node[part];
  }
  return node;
}

export function has(key) {
  return lookup(strings, key) !== undefined || lookup(fallback, key) !== undefined;
}

/** The string for `key` with {name} replaced by values; plural forms are chosen by values.count. */
export function t(key, values = {}) {
  let found = lookup(strings, key);
  if (found === undefined) found = lookup(fallback, key);
  if (found === undefined) return key;
  if (typeof found === 'object') {
    const form = new Intl.PluralRules(current).select(Number(values.count ?? 0));
    found = found[form] ?? found.other ?? '';
  }
  return String(found).replace(/\{(\w+)\}/g, (whole, name) => (name in values ? String(values[name]) : whole));
}

/** Fills every element under root that names a key: data-i18n (text), data-i18n-attr ("attr:key;…"). */
export function applyTo(root) {
  for (const node of root.querySelectorAll('[data-i18n]')) node.textContent = t(node.dataset.i18n);
  for (const node of root.querySelectorAll('[data-i18n-attr]')) {
    for (const pair of node.dataset.i18nAttr.split(';')) {
      const [attr, key] = pair.split(':');
      if (attr && key) node.setAttribute(attr.trim(), t(key.trim()));
    }
  }
}

function format(name, make) {
  if (!formats[name]) formats[name] = make();
  return formats[name];
}

let currency = null;
export function setCurrency(code) { currency = code || null; delete formats.money; }

const MAX_DATE_MS = 8.64e15; // the farthest a JavaScript Date reaches either side of 1970

/** A time in milliseconds as `name` formats it. Anything else is shown as it is, never thrown on: an
 * unreadable event (a buggy or newer desk's) may carry any value as its time. */
function when(name, options, ms) {
  if (!ms) return '';
  if (typeof ms !== 'number' || !Number.isFinite(ms) || Math.abs(ms) > MAX_DATE_MS) return String(ms);
  return format(name, () => new Intl.DateTimeFormat(current, options)).format(ms);
}

export const fmt = {
  date: (ms) => when('date', { dateStyle: 'medium' }, ms),
  time: (ms) => when('time', { timeStyle: 'medium' }, ms),
  dateTime: (ms) => when('dateTime', { dateStyle: 'short', timeStyle: 'medium' }, ms),
  shortDate: (ms) => when('shortDate', { dateStyle: 'short' }, ms),
  shortDateTime: (ms) => when('shortDateTime', { dateStyle: 'short', timeStyle: 'short' }, ms),
  number: (n) => format('number', () => new Intl.NumberFormat(current)).format(n),
  percent: (ratio) => format('percent', () => new Intl.NumberFormat(current, { style: 'percent' })).format(ratio),
  money: (text) => {
    const value = Number(text);
    if (!Number.isFinite(value)) return String(text ?? '');
    return format('money', () => new Intl.NumberFormat(current, currency
      ? { style: 'currency', currency }
      : { minimumFractionDigits: 2, maximumFractionDigits: 2 })).format(value);
  },
  duration: (ms) => {
    const s = Math.round(Math.abs(ms) / 1000);
    if (s < 120) return t('unit.seconds', { n: fmt.number(s) });
    const minutes = Math.round(s / 60);
    if (minutes < 60) return t('unit.minutes', { n: fmt.number(minutes) });
    return t('unit.hours', { n: fmt.number(Math.round(s / 360) / 10) });
  },
};

/** Reads money typed in the locale's way ("2,50" in German, "2.50" in English) as a decimal string. */
export function parseMoney(text) {
  const parts = new Intl.NumberFormat(current).formatToParts(12345.6);
  const group = parts.find((p) => p.type === 'group')?.value ?? ',';
  const decimal = parts.find((p) => p.type === 'decimal')?.value ?? '.';
  let cleaned = String(text).trim().replace(/[\s\u00a0\u202f]/g, '');
  if (decimal !== '.' && !cleaned.includes(decimal) && /^\d+\.\d{1,2}$/.test(cleaned)) {
    // A dot typed on a keypad in a comma locale: still the decimal point.
  } else {
    cleaned = cleaned.split(group).join('').replace(decimal, '.');
  }
  if (!/^\d+(\.\d{1,2})?$/.test(cleaned)) return null;
  const value = Number(cleaned);
  if (!(value > 0)) return null;
  return value.toFixed(2);
}
