// Sign in (or create an account) with a mobile number and the code sent to it by SMS:
// POST /auth/login or /auth/signup, then POST /auth/verify, which answers the token.

import { ApiError, errorText, setToken } from './api.js';
import { h } from './dom.js';

const MAX_DEVICE_CHARS = 100;

/** A name for this browser in the account's device list ("Chrome on Linux"). */
function deviceName() {
  const ua = navigator.userAgent;
  const browser = /Edg\//.test(ua) ? 'Edge'
    : /Firefox\//.test(ua) ? 'Firefox'
    : /Chrom(e|ium)\//.test(ua) ? 'Chrome'
    : /Safari\//.test(ua) ? 'Safari' : 'Browser';
  const system = /Android/.test(ua) ? 'Android'
    : /iPhone|iPad/.test(ua) ? 'iOS'
    : /Windows/.test(ua) ? 'Windows'
    : /Mac OS X/.test(ua) ? 'macOS'
    : /Linux/.test(ua) ? 'Linux' : 'unknown system';
  return `Web: ${browser} on ${system}`.slice(0, MAX_DEVICE_CHARS);
}

/** The message for a failed request, with the wait when the server asked for one. */
function problemText(err) {
  if (err instanceof ApiError && err.status === 429 && err.retryAfter !== null
      && !/\d+ seconds/.test(err.detail)) {
    return `${err.detail} (try again in ${err.retryAfter} seconds)`;
  }
  return errorText(err);
}

function field(id, label, input, hint) {
  const hintId = hint ? `${id}-hint` : null;
  if (hintId) input.setAttribute('aria-describedby', hintId);
  return h('div', { class: 'field' },
    h('label', { for: id }, label),
    input,
    hint ? h('p', { class: 'hint', id: hintId }, hint) : null);
}

function busy(form, on) {
  for (const el of form.querySelectorAll('button, input')) el.disabled = on;
  form.setAttribute('aria-busy', on ? 'true' : 'false');
}

export async function render(root, ctx) {
  let mode = 'login'; // or 'signup'
  let pending = null; // { verificationId, phone, request }

  const heading = h('h1', {}, 'Sign in');
  const error = h('p', { class: 'error', role: 'alert', id: 'signin-error' });
  const section = h('section', { class: 'signin', 'aria-labelledby': 'signin-title' });
  heading.id = 'signin-title';
  root.appendChild(section);

  function showError(err) {
    error.textContent = problemText(err);
  }

  function showPhoneStep() {
    pending = null;
    error.textContent = '';
    heading.textContent = mode === 'login' ? 'Sign in' : 'Create an account';
    const phone = h('input', {
      id: 'signin-phone', type: 'tel', name: 'phone', autocomplete: 'tel', required: true,
      inputmode: 'tel',
    });
    const extra = [];
    if (mode === 'signup') {
      extra.push(
        field('signup-first', 'First name',
          h('input', { id: 'signup-first', type: 'text', autocomplete: 'given-name', required: true, maxlength: '100' })),
        field('signup-last', 'Last name',
          h('input', { id: 'signup-last', type: 'text', autocomplete: 'family-name', required: true, maxlength: '100' })),
        field('signup-dob', 'Date of birth',
          h('input', { id: 'signup-dob', type: 'date', autocomplete: 'bday', required: true })),
      );
    }
    const form = h('form', { novalidate: true },
      extra,
      field('signin-phone', 'Phone number', phone,
        'Your mobile number, in any spelling, e.g. (415) 555-0100 or +44 20 7946 0958. We send a 6-digit code to it by SMS.'),
      error,
      h('div', { class: 'actions' },
        h('button', { type: 'submit' }, 'Send code')));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      error.textContent = '';
      const number = phone.value.trim();
      if (!number) {
        error.textContent = 'Enter your mobile number.';
        phone.focus();
        return;
      }
      let path = '/auth/login';
      let json = { phone: number };
      if (mode === 'signup') {
        path = '/auth/signup';
        json = {
          phone: number,
          first_name: form.querySelector('#signup-first').value,
          last_name: form.querySelector('#signup-last').value,
          date_of_birth: form.querySelector('#signup-dob').value,
        };
      }
      busy(form, true);
      try {
        const started = await ctx.api(path, { method: 'POST', json });
        showCodeStep({ verificationId: started.verification_id, phone: number, request: { path, json } });
      } catch (err) {
        busy(form, false);
        showError(err);
        phone.focus();
      }
    });
    const switcher = mode === 'login'
      ? h('p', {}, 'New to OptMsg? ',
        h('button', { type: 'button', class: 'link', onclick: () => { mode = 'signup'; showPhoneStep(); focusFirst(); } },
          'Create an account'))
      : h('p', {}, 'Already have an account? ',
        h('button', { type: 'button', class: 'link', onclick: () => { mode = 'login'; showPhoneStep(); focusFirst(); } },
          'Sign in instead'));
    section.replaceChildren(heading, form, switcher);
  }

  function showCodeStep(started) {
    pending = started;
    error.textContent = '';
    heading.textContent = 'Enter your code';
    const code = h('input', {
      id: 'signin-code', type: 'text', name: 'code', inputmode: 'numeric',
      autocomplete: 'one-time-code', pattern: '[0-9]*', maxlength: '6', required: true,
    });
    const form = h('form', { novalidate: true },
      h('p', {}, 'We sent a 6-digit code by SMS to ', h('strong', {}, started.phone),
        '. It is valid for a few minutes.'),
      field('signin-code', 'Code', code,
        mode === 'login' ? 'No code? If this number has no account yet, create one instead.' : null),
      error,
      h('div', { class: 'actions' },
        h('button', { type: 'submit' }, mode === 'login' ? 'Sign in' : 'Create account'),
        h('button', { type: 'button', class: 'secondary', onclick: resend }, 'Send a new code'),
        h('button', { type: 'button', class: 'secondary', onclick: () => { showPhoneStep(); focusFirst(); } },
          'Use another number')));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      error.textContent = '';
      const digits = code.value.replace(/\D/g, '');
      if (digits.length !== 6) {
        error.textContent = 'The code has 6 digits.';
        code.focus();
        return;
      }
      busy(form, true);
      try {
        const done = await ctx.api('/auth/verify', {
          method: 'POST',
          json: { verification_id: pending.verificationId, code: digits, device: deviceName() },
        });
        setToken(done.token);
        ctx.toast(done.created ? `Welcome, ${done.user.first_name}! Your account is ready.`
          : `Signed in as ${done.user.first_name} ${done.user.last_name}.`);
        ctx.navigate('#/inbox');
      } catch (err) {
        busy(form, false);
        showError(err);
        code.select();
        code.focus();
      }
    });
    section.replaceChildren(heading, form);
    code.focus();
  }

  async function resend() {
    if (!pending) return;
    error.textContent = '';
    try {
      const started = await ctx.api(pending.request.path, { method: 'POST', json: pending.request.json });
      pending = { ...pending, verificationId: started.verification_id };
      ctx.toast('A new code is on its way.');
    } catch (err) {
      showError(err);
    }
  }

  function focusFirst() {
    const input = section.querySelector('input');
    if (input) input.focus();
  }

  showPhoneStep();
}
