// The account: profile, signed-in devices (tokens), the authentication log, the
// data export and deleting the account.

import { clearToken, download, errorText } from './api.js';
import { clear, formatTime, h, timeEl } from './dom.js';

const DELETE_CONFIRMATION = 'delete my account';
const EXPORT_POLL_MS = 1000;
const PAGE = 50;

const OUTCOMES = {
  success: 'Signed in',
  account_created: 'Account created',
  phone_changed: 'Mobile number changed',
  wrong_code: 'Wrong code',
  expired: 'Code expired',
  too_many_attempts: 'Too many wrong codes',
  already_used: 'Code already used',
  suspended: 'Account suspended',
  number_taken: 'Number belongs to another account',
};
const METHODS = { sms_code: 'Code by SMS', phone_change: 'New mobile number' };
const EXPORT_STATES = {
  pending: 'Being prepared…',
  ready: 'Ready to download',
  failed: 'Failed',
  expired: 'Expired',
};

function section(id, title, ...children) {
  return h('section', { 'aria-labelledby': id, class: 'account-part' },
    h('h2', { id }, title), ...children);
}

function humanSize(bytes) {
  if (bytes === null || bytes === undefined) return '';
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

export async function render(root, ctx) {
  const timers = new Set();
  let gone = false;
  const later = (fn, ms) => {
    const t = setTimeout(() => { timers.delete(t); if (!gone) fn(); }, ms);
    timers.add(t);
  };

  root.appendChild(h('h1', {}, 'Account'));
  const [account, tokens, log, exports] = await Promise.all([
    ctx.api('/account'),
    ctx.api(`/tokens?limit=${PAGE}`),
    ctx.api(`/account/auth-log?limit=${PAGE}`),
    ctx.api('/exports?limit=10'),
  ]);

  const profile = section('profile-title', 'Profile');
  const devices = section('devices-title', 'Signed-in devices');
  const authLog = section('log-title', 'Sign-in history');
  const exportPart = section('export-title', 'Export my data');
  const deletePart = section('delete-title', 'Delete my account');
  root.append(profile, devices, authLog, exportPart, deletePart);

  // --- profile -------------------------------------------------------------------

  function showProfile(user) {
    const error = h('p', { class: 'error', role: 'alert' });
    const first = h('input', { id: 'profile-first', type: 'text', value: user.first_name, autocomplete: 'given-name', maxlength: '100' });
    const last = h('input', { id: 'profile-last', type: 'text', value: user.last_name, autocomplete: 'family-name', maxlength: '100' });
    const dob = h('input', { id: 'profile-dob', type: 'date', value: user.date_of_birth, autocomplete: 'bday' });
    const form = h('form', { class: 'profile-form', novalidate: true },
      h('div', { class: 'field' }, h('label', { for: 'profile-first' }, 'First name'), first),
      h('div', { class: 'field' }, h('label', { for: 'profile-last' }, 'Last name'), last),
      h('div', { class: 'field' }, h('label', { for: 'profile-dob' }, 'Date of birth'), dob),
      error,
      h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Save profile')));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      error.textContent = '';
      try {
        const saved = await ctx.api('/account', {
          method: 'PATCH',
          json: { first_name: first.value, last_name: last.value, date_of_birth: dob.value },
        });
        showProfile(saved);
        ctx.toast('Profile saved.');
      } catch (err) {
        error.textContent = errorText(err);
      }
    });
    const addresses = user.addresses.length
      ? h('ul', { class: 'plain' }, user.addresses.map((a) => h('li', {}, a)))
      : h('span', { class: 'muted' }, 'None yet: the operator assigns them.');
    profile.replaceChildren(profile.firstChild,
      h('dl', { class: 'profile' },
        h('dt', {}, 'Name'), h('dd', {}, `${user.first_name} ${user.last_name}`),
        h('dt', {}, 'Date of birth'), h('dd', {}, user.date_of_birth),
        h('dt', {}, 'Mobile number'), h('dd', {}, user.phone),
        h('dt', {}, 'OptMsg numbers and addresses'), h('dd', {}, addresses),
        h('dt', {}, 'Member since'),
        h('dd', {}, h('time', { datetime: user.created_at }, new Date(user.created_at).toLocaleDateString()))),
      h('h3', {}, 'Change your profile'),
      form,
      h('h3', {}, 'Change your mobile number'),
      phoneChange());
  }

  // A new number is proved like the first one: a code sent to it by SMS.
  function phoneChange() {
    const box = h('div', { class: 'phone-change' });
    const error = h('p', { class: 'error', role: 'alert' });
    const number = h('input', { id: 'new-phone', type: 'tel', autocomplete: 'tel', inputmode: 'tel' });
    const askForm = h('form', { novalidate: true },
      h('div', { class: 'field' },
        h('label', { for: 'new-phone' }, 'New mobile number'), number,
        h('p', { class: 'hint' }, 'We send a code to the new number; your number changes once you enter it.')),
      error,
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'secondary' }, 'Send code to the new number')));
    askForm.addEventListener('submit', async (event) => {
      event.preventDefault();
      error.textContent = '';
      try {
        const started = await ctx.api('/account/phone', { method: 'POST', json: { phone: number.value } });
        showCode(started.verification_id, number.value);
      } catch (err) {
        error.textContent = errorText(err);
      }
    });

    function showCode(verificationId, typed) {
      const code = h('input', {
        id: 'new-phone-code', type: 'text', inputmode: 'numeric', autocomplete: 'one-time-code', maxlength: '6',
      });
      const codeForm = h('form', { novalidate: true },
        h('div', { class: 'field' },
          h('label', { for: 'new-phone-code' }, 'Code sent to the new number'), code,
          h('p', { class: 'hint' }, `Sent by SMS to ${typed}.`)),
        error,
        h('div', { class: 'actions' },
          h('button', { type: 'submit' }, 'Change number'),
          h('button', { type: 'button', class: 'secondary', onclick: () => { box.replaceChildren(askForm); number.focus(); } }, 'Cancel')));
      codeForm.addEventListener('submit', async (event) => {
        event.preventDefault();
        error.textContent = '';
        try {
          const saved = await ctx.api('/account/phone/verify', {
            method: 'POST', json: { verification_id: verificationId, code: code.value.replace(/\D/g, '') },
          });
          showProfile(saved);
          ctx.toast(`Your mobile number is now ${saved.phone}.`);
        } catch (err) {
          error.textContent = errorText(err);
          code.focus();
        }
      });
      error.textContent = '';
      box.replaceChildren(codeForm);
      code.focus();
    }

    box.appendChild(askForm);
    return box;
  }

  showProfile(account);

  // --- devices -------------------------------------------------------------------

  const deviceList = h('ul', { class: 'list', 'aria-label': 'Devices' });
  const deviceMore = h('div', { class: 'actions' });
  devices.append(
    h('p', { class: 'hint' }, 'Every browser or app signed in to your account. Sign out any you do not recognise.'),
    deviceList, deviceMore);

  function deviceItem(token) {
    const name = token.device || 'unnamed device';
    const used = token.last_used_at ? ['last used ', timeEl(token.last_used_at)] : ['not used yet'];
    const status = h('div', { class: 'actions' });
    const item = h('li', { 'data-token': token.id },
      h('div', { class: 'row' },
        h('div', { class: 'grow' },
          h('strong', {}, name), token.current ? h('span', { class: 'tag' }, ' (this device)') : null,
          h('div', { class: 'muted' }, 'signed in ', timeEl(token.created_at), ', ', ...used)),
        status));

    async function revoke() {
      try {
        await ctx.api(`/tokens/${encodeURIComponent(token.id)}`, { method: 'DELETE' });
      } catch (err) {
        ctx.toast(`Could not sign out ${name}: ${errorText(err)}`);
        return;
      }
      if (token.current) {
        signedOut('You are signed out.');
        return;
      }
      item.remove();
      ctx.toast(`${name} is signed out.`);
    }

    function ask() {
      status.replaceChildren(
        h('span', { role: 'alert' }, 'This signs you out of this browser. Continue?'),
        h('button', { type: 'button', class: 'danger', onclick: revoke }, 'Yes, sign out here'),
        h('button', { type: 'button', class: 'secondary', onclick: () => { idle(); status.querySelector('button').focus(); } }, 'Cancel'));
      status.querySelector('button.danger').focus();
    }

    function idle() {
      status.replaceChildren(h('button', {
        type: 'button',
        class: token.current ? 'secondary' : 'danger',
        'aria-label': `Revoke ${name}${token.current ? ' (this device)' : ''}, signed in ${formatTime(token.created_at)}`,
        onclick: token.current ? ask : revoke,
      }, 'Revoke'));
    }
    idle();
    return item;
  }

  function showTokens(page) {
    for (const token of page.items) deviceList.appendChild(deviceItem(token));
    clear(deviceMore);
    if (page.next) {
      deviceMore.appendChild(h('button', {
        type: 'button',
        class: 'secondary',
        onclick: async () => {
          try {
            showTokens(await ctx.api(`/tokens?limit=${PAGE}&cursor=${encodeURIComponent(page.next)}`));
          } catch (err) {
            ctx.toast(errorText(err));
          }
        },
      }, 'Show more devices'));
    }
  }
  showTokens(tokens);

  // --- authentication log --------------------------------------------------------

  const logBody = h('tbody');
  const logMore = h('div', { class: 'actions' });
  authLog.append(
    h('p', { class: 'hint' }, 'Every attempt to sign in to your account. IP addresses are kept only for a few days.'),
    h('div', { class: 'table-wrap' },
      h('table', { class: 'stack' },
        h('caption', { class: 'visually-hidden' }, 'Sign-in attempts, newest first'),
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, 'When'), h('th', { scope: 'col' }, 'What'),
          h('th', { scope: 'col' }, 'Result'), h('th', { scope: 'col' }, 'Device'),
          h('th', { scope: 'col' }, 'IP address'))),
        logBody)),
    logMore);

  function showLog(page) {
    if (!page.items.length && !logBody.firstChild) {
      logBody.appendChild(h('tr', {}, h('td', { colspan: '5' }, 'No sign-in attempts yet.')));
    }
    for (const entry of page.items) {
      const failed = !['success', 'account_created', 'phone_changed'].includes(entry.outcome);
      logBody.appendChild(h('tr', {},
        h('td', { 'data-label': 'When' }, timeEl(entry.created_at)),
        h('td', { 'data-label': 'What' }, METHODS[entry.method] || entry.method),
        h('td', { 'data-label': 'Result', class: failed ? 'error' : 'ok' },
          OUTCOMES[entry.outcome] || entry.outcome),
        h('td', { 'data-label': 'Device' }, entry.device || '—'),
        h('td', { 'data-label': 'IP address' }, entry.ip || 'erased')));
    }
    clear(logMore);
    if (page.next) {
      logMore.appendChild(h('button', {
        type: 'button',
        class: 'secondary',
        onclick: async () => {
          try {
            showLog(await ctx.api(`/account/auth-log?limit=${PAGE}&cursor=${encodeURIComponent(page.next)}`));
          } catch (err) {
            ctx.toast(errorText(err));
          }
        },
      }, 'Show older attempts'));
    }
  }
  showLog(log);

  // --- export --------------------------------------------------------------------

  const exportStatus = h('p', { role: 'status', 'aria-live': 'polite', class: 'export-status' });
  const exportList = h('ul', { class: 'list', 'aria-label': 'Exports' });
  const exportButton = h('button', { type: 'button', onclick: requestExport }, 'Export my data');
  exportPart.append(
    h('p', {}, 'Download everything OptMsg keeps about you as one zip file: your profile, ',
      'messages (with emails as .eml files and their attachments), trusted senders and contacts (vCard), ',
      'in JSON and other open formats. Preparing it can take a moment; it can be downloaded for a limited time.'),
    h('div', { class: 'actions' }, exportButton),
    exportStatus,
    exportList);

  function exportItem(record) {
    const state = EXPORT_STATES[record.state] || record.state;
    const parts = [h('strong', {}, 'Export of ', timeEl(record.created_at)), ': ', state];
    if (record.state === 'ready') {
      if (record.size !== null) parts.push(` (${humanSize(record.size)})`);
      if (record.expires_at) parts.push(', until ', timeEl(record.expires_at));
    }
    if (record.state === 'failed' && record.error) parts.push(` (${record.error})`);
    const actions = h('div', { class: 'actions' });
    if (record.state === 'ready') {
      actions.appendChild(h('button', {
        type: 'button',
        onclick: async () => {
          try {
            await download(`/exports/${encodeURIComponent(record.id)}/download`);
          } catch (err) {
            ctx.toast(`Download failed: ${errorText(err)}`);
          }
        },
      }, 'Download export'));
    }
    return h('li', { 'data-export': record.id }, h('div', {}, ...parts), actions);
  }

  function showExports(items) {
    exportList.replaceChildren(...items.map(exportItem));
  }

  async function refreshExports() {
    const page = await ctx.api('/exports?limit=10');
    showExports(page.items);
    return page.items;
  }

  function watch(id) {
    later(async () => {
      let record;
      try {
        record = await ctx.api(`/exports/${encodeURIComponent(id)}`);
      } catch (err) {
        exportStatus.textContent = `Could not check the export: ${errorText(err)}`;
        return;
      }
      if (record.state === 'pending') {
        watch(id);
        return;
      }
      exportStatus.textContent = record.state === 'ready'
        ? 'Your export is ready to download.'
        : `The export ${EXPORT_STATES[record.state].toLowerCase()}${record.error ? `: ${record.error}` : ''}.`;
      exportButton.disabled = false;
      try {
        await refreshExports();
      } catch (err) {
        ctx.toast(errorText(err));
      }
    }, EXPORT_POLL_MS);
  }

  async function requestExport() {
    exportButton.disabled = true;
    exportStatus.textContent = 'Preparing your export…';
    try {
      const record = await ctx.api('/exports', { method: 'POST' });
      await refreshExports();
      if (record.state === 'pending') watch(record.id);
      else exportButton.disabled = false;
    } catch (err) {
      exportStatus.textContent = `No export: ${errorText(err)}`;
      exportButton.disabled = false;
    }
  }

  showExports(exports.items);
  const pendingExport = exports.items.find((e) => e.state === 'pending');
  if (pendingExport) {
    exportButton.disabled = true;
    exportStatus.textContent = 'Preparing your export…';
    watch(pendingExport.id);
  }

  // --- deletion ------------------------------------------------------------------

  const confirmInput = h('input', {
    id: 'delete-confirm', type: 'text', autocomplete: 'off', spellcheck: 'false',
    'aria-describedby': 'delete-hint',
  });
  const deleteError = h('p', { class: 'error', role: 'alert' });
  const deleteButton = h('button', { type: 'submit', class: 'danger', disabled: true }, 'Delete my account');
  confirmInput.addEventListener('input', () => {
    deleteButton.disabled = confirmInput.value.trim().toLowerCase() !== DELETE_CONFIRMATION;
  });
  const deleteForm = h('form', { novalidate: true },
    h('p', {}, 'This deletes your account and everything in it at once and for good: messages, ',
      'attachments, drafts, trusted senders, contacts, exports and sign-ins. It cannot be undone. ',
      'Export your data first if you want to keep it.'),
    h('div', { class: 'field' },
      h('label', { for: 'delete-confirm' }, `Type "${DELETE_CONFIRMATION}" to confirm`),
      confirmInput,
      h('p', { class: 'hint', id: 'delete-hint' }, 'The button works once the words match.')),
    deleteError,
    h('div', { class: 'actions' }, deleteButton));
  deleteForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    deleteError.textContent = '';
    if (confirmInput.value.trim().toLowerCase() !== DELETE_CONFIRMATION) {
      deleteError.textContent = `Type "${DELETE_CONFIRMATION}" to confirm.`;
      return;
    }
    deleteButton.disabled = true;
    try {
      await ctx.api('/account', { method: 'DELETE', json: { confirm: DELETE_CONFIRMATION } });
    } catch (err) {
      deleteError.textContent = errorText(err);
      deleteButton.disabled = false;
      return;
    }
    signedOut('Your account and all its data have been deleted.');
  });
  deletePart.append(deleteForm);

  function signedOut(message) {
    clearToken();
    window.dispatchEvent(new CustomEvent('optmsg:signed-out', { detail: { message } }));
  }

  return () => {
    gone = true;
    for (const t of timers) clearTimeout(t);
    timers.clear();
  };
}
