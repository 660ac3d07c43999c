// How a scan's result reaches the person at the desk: a coloured banner that flashes, a short sound,
// and the words in an assertive ARIA live region for screen readers.

import { $, clear, el } from './dom.js';
import { t } from './i18n.js';

const SOUND_KEY = 'circmesh.sound';
let audio = null;

export function soundOn() { return localStorage.getItem(SOUND_KEY) !== 'off'; }

export function setSound(on) {
  localStorage.setItem(SOUND_KEY, on ? 'on' : 'off');
  renderSoundToggle();
}

export function renderSoundToggle() {
  const button = $('sound-toggle');
  button.setAttribute('aria-pressed', String(soundOn()));
  button.textContent = soundOn() ? t('app.sound_on') : t('app.sound_off');
}

const TONES = {
  ok: [[880, 0.09]],
  info: [[660, 0.07]],
  warn: [[660, 0.1], [520, 0.14]],
  error: [[220, 0.28]],
};

function beep(kind) {
  if (!soundOn()) return;
  try {
    audio = audio || new AudioContext();
    if (audio.state === 'suspended') audio.resume();
    let at = audio.currentTime + 0.01;
    for (const [frequency, length] of TONES[kind] || TONES.info) {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.type = kind === 'error' ? 'square' : 'sine';
      osc.frequency.value = frequency;
      gain.gain.setValueAtTime(0.0001, at);
      gain.gain.exponentialRampToValueAtTime(0.25, at + 0.01);
      gain.gain.exponentialRampToValueAtTime(0.0001, at + length);
      osc.connect(gain).connect(audio.destination);
      osc.start(at);
      osc.stop(at + length + 0.02);
      at += length + 0.05;
    }
  } catch {
    // No audio device: the banner and the live region still say it.
  }
}

/** kind: ok | info | warn | error. notes: further lines (warnings). */
export function announce(kind, text, notes = []) {
  const box = $('result');
  box.dataset.kind = kind;
  $('result-text').textContent = text;
  const list = clear($('result-notes'));
  for (const note of notes) list.append(el('li', { text: note }));
  box.classList.remove('flash');
  void box.offsetWidth; // restart the animation
  box.classList.add('flash');
  beep(kind);
  const live = $('announcer');
  live.textContent = '';
  setTimeout(() => { live.textContent = [text, ...notes].join(' '); }, 30);
}

export function resetResult() {
  $('result').dataset.kind = 'idle';
  $('result-text').textContent = '';
  clear($('result-notes'));
}
