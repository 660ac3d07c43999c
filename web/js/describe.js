// Events and conflicts in plain words, in the chosen language, from the API's own data.

import { fmt, has, t } from './i18n.js';

/** `lookup(id)` finds another event (the one a void refers to), if the caller has it. */
export function describeEvent(event, { withDue = true, lookup = null } = {}) {
  // an unreadable event's kind and body may be anything: only its reason is shown
  if (event.problem) return t('event.unreadable', { reason: event.problem });
  const b = event.body || {};
  const values = { item: b.item, patron: b.patron, name: b.name, event: b.event, amount: fmt.money(b.amount) };
  let text;
  switch (event.kind) {
    case 'checkout':
      text = t(b.override ? 'event.checkout_override' : 'event.checkout', values);
      break;
    case 'void': {
      const original = lookup ? lookup(b.event) : null;
      text = original ? t('event.void_of', { what: describeEvent(original, { withDue: false }) }) : t('event.void');
      break;
    }
    case 'resolve': {
      const named = b.event && lookup ? lookup(b.event) : null;
      text = named
        ? t('event.resolve_of', { action: t(`conflicts.action_name.${b.action}`), what: describeEvent(named, { withDue: false }) })
        : t('event.resolve', { action: t(`conflicts.action_name.${b.action}`) });
      break;
    }
    case 'applied':
      text = t('event.applied', { status: t(`outcome.${b.status}`), message: b.message || '' });
      break;
    default:
      text = has(`event.${event.kind}`) ? t(`event.${event.kind}`, values) : event.kind;
  }
  if (withDue && b.due && (event.kind === 'checkout' || event.kind === 'renew')) {
    text += ` · ${t('event.due', { due: fmt.date(b.due) })}`;
  }
  return text;
}

export function kindName(kind) {
  return has(`kind.${kind}`) ? t(`kind.${kind}`) : kind;
}

/** Title and explanation of a conflict. */
export function describeConflict(conflict) {
  const key = has(`conflicts.kind.${conflict.kind}.title`) ? conflict.kind : 'other';
  const first = (conflict.detail || [])[0] || {};
  const values = {
    item: conflict.item || '',
    patron: (conflict.patrons || [])[0] || '',
    kind: conflict.kind,
    desk: conflict.desk || first.desk || '',
    reason: conflict.reason || '',
    offset: typeof conflict.offset_ms === 'number' ? fmt.duration(conflict.offset_ms) : '',
    others: (conflict.compared_with || []).join(', '),
  };
  return {
    title: t(`conflicts.kind.${key}.title`, values),
    explain: t(`conflicts.kind.${key}.explain`, values),
  };
}

/** The ways to settle a conflict, each {action, event?, label, hint?}. */
export function settlements(conflict) {
  // answers that disagree are settled by answering the conflict they are about, after both
  if (conflict.kind === 'resolutions_disagree' && conflict.about_conflict) return settlements(conflict.about_conflict);
  const detail = conflict.detail || [];
  const options = [];
  if (conflict.kind === 'clock_ahead') {
    // Nothing to void or upload differently: the scans stand, their ILS times are corrected.
    return [{ action: 'acknowledge', label: t('conflicts.action.acknowledge'), hint: t('conflicts.action_hint.acknowledge') }];
  }
  if (conflict.kind === 'registration_refused') {
    // Only the admin knows whether the patron exists at the ILS now: until then their scans wait.
    return [{ action: 'apply', label: t('conflicts.action.apply_registration'), hint: t('conflicts.action_hint.apply_registration') }];
  }
  if (conflict.kind === 'unreadable_event') {
    for (const e of detail) {
      options.push({ action: 'void', event: e.id, label: t('conflicts.action.void', { what: kindName(String(e.kind)), desk: e.desk }) });
    }
    options.push({ action: 'accept_ils', label: t('conflicts.action.accept_ils'), hint: t('conflicts.action_hint.accept_ils') });
    return options;
  }
  if (detail.length > 1 && detail.every((e) => e.kind === 'checkout')) {
    for (const e of detail) {
      options.push({ action: 'keep', event: e.id, label: t('conflicts.action.keep', { patron: e.body.patron, desk: e.desk }),
        hint: t('conflicts.action_hint.keep') });
    }
  } else if (detail.length > 1 && detail.every((e) => e.kind === 'patron_register')) {
    for (const e of detail) {
      options.push({ action: 'keep', event: e.id, label: t('conflicts.action.keep_registration', { desk: e.desk, name: e.body.name }),
        hint: t('conflicts.action_hint.keep') });
    }
  } else if (detail.length) {
    const last = detail[detail.length - 1];
    const key = has(`conflicts.action.void_${last.kind}`) ? `conflicts.action.void_${last.kind}` : 'conflicts.action.void';
    options.push({ action: 'void', event: last.id, label: t(key, { what: kindName(last.kind), desk: last.desk }) });
  }
  options.push({ action: 'accept_ils', label: t('conflicts.action.accept_ils'), hint: t('conflicts.action_hint.accept_ils') });
  options.push({ action: 'apply', label: t('conflicts.action.apply'), hint: t('conflicts.action_hint.apply') });
  return options;
}
