// The dashboard shell: sign-in, navigation between the four pages, sign-out.
// Pages are modules exporting `render(main)`, returning an optional cleanup function.

import { login, logout, resume, whenSignedOut } from './api.js';
import * as overview from './overview.js';
import * as keys from './keys.js';
import * as logs from './logs.js';
import * as status from './status.js';

const pages = { overview, keys, logs, status };
const $ = (id) => document.getElementById(id);
let cleanup = null;

function showLogin(message = '', info = false) {
  if (cleanup) cleanup();
  cleanup = null;
  $('app').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message;
  $('login-error').classList.toggle('info', info);
  $('login-key').focus();
}

function showApp() {
  $('login').hidden = true;
  $('app').hidden = false;
  route();
}

function route() {
  if ($('app').hidden) return;
  const name = (location.hash || '#overview').slice(1);
  const page = pages[name] ? name : 'overview';
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.page === page);
  if (cleanup) cleanup();
  const main = $('page');
  main.replaceChildren();
  main.dataset.page = page;
  document.title = `rotor · ${page[0].toUpperCase()}${page.slice(1)}`;
  cleanup = pages[page].render(main) || null;
}

$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const key = $('login-key').value.trim();
  const user = $('login-user').value.trim();
  const password = $('login-password').value;
  const credentials = key ? { key } : { user, password };
  $('login-submit').disabled = true;
  try {
    await login(credentials);
    // The key leaves the page: nothing script-readable keeps it.
    $('login-form').reset();
    showApp();
  } catch (e) {
    $('login-error').classList.remove('info');
    $('login-error').textContent = e.message;
  } finally {
    $('login-submit').disabled = false;
  }
});

$('logout').addEventListener('click', async () => {
  try {
    await logout();
  } finally {
    showLogin('You are signed out.', true);
  }
});

whenSignedOut(() => showLogin('Your session has ended; sign in again.'));
window.addEventListener('hashchange', route);

resume().then((ok) => (ok ? showApp() : showLogin()));
