// The CloudSignal demo: a Supabase-style session (from the identity provider, a local stand-in
// in development) is exchanged for MQTT credentials by @cloudsignal/client, which connects to
// the broker over WSS, subscribes to the user's notifications and refreshes its token in place.
import { CloudSignalClient } from '@cloudsignal/client';

const params = new URLSearchParams(location.search);
// where the token exchange and the sign-in live (query parameters override, for tests)
const WORKER_URL = params.get('worker') ?? import.meta.env.VITE_WORKER_URL ?? 'http://127.0.0.1:8787';
const IDP_URL = params.get('idp') ?? import.meta.env.VITE_IDP_URL ?? '/idp/token';

const $ = (id) => document.getElementById(id);
// everything observed, for people in the console and for the end-to-end tests
const log = (window.log = { states: [], messages: [], tokens: [], fetched: [], tokenErrors: [], subscribed: [], subErrors: [], firstMessageMs: null });
let client;
let countdown;

function show(state, detail = {}) {
  $('state').dataset.state = state;
  $('state').textContent = state === 'fatal' ? `fatal: ${detail.reasonName}` : state;
  if (detail.reasonName || detail.reasonString) {
    // an MQTT reason code only when there is one (a failed token fetch has none)
    const code = typeof detail.reason === 'number' ? ` (0x${detail.reason.toString(16).padStart(2, '0')})` : '';
    const retry = detail.retryInMs ? `; retrying in ${Math.ceil(detail.retryInMs / 1000)} s` : '';
    $('reason').textContent = `${detail.reasonName ?? ''}${code}${detail.reasonString ? ` — ${detail.reasonString}` : ''}${retry}`;
  } else if (state === 'connected') {
    $('reason').textContent = '—';
  }
}

/** Back to the signed-out page: nothing of the last session stays on screen. */
function signedOut() {
  clearInterval(countdown);
  $('state').dataset.state = 'idle';
  $('state').textContent = 'signed out';
  for (const id of ['user', 'countdown', 'reason']) $(id).textContent = '—';
  $('refreshes').textContent = '0';
  $('suberror').textContent = '';
  $('messages').replaceChildren();
  $('signin').disabled = false;
  $('signout').disabled = true;
}

async function signIn() {
  const res = await fetch(`${IDP_URL}?sub=${encodeURIComponent(params.get('sub') ?? '')}`);
  if (!res.ok) throw new Error(`sign-in failed: HTTP ${res.status} from ${IDP_URL}`);
  const session = await res.json(); // { access_token, sub }
  log.sub = session.sub;
  $('user').textContent = session.sub;
  client = new CloudSignalClient({
    tokenUrl: `${WORKER_URL}/v1/token`,
    headers: async () => ({ authorization: `Bearer ${session.access_token}` }),
    clientId: `demo-${session.sub.slice(0, 8)}`,
  });
  window.client = client;
  const at = () => performance.now();
  client.on('state', (d) => {
    log.states.push({ ...d, at: at() });
    show(d.state, d);
  });
  client.on('message', (d) => {
    if (log.firstMessageMs === null) log.firstMessageMs = at();
    const text = new TextDecoder().decode(d.payload);
    log.messages.push({ topic: d.topic, text, qos: d.qos, retain: d.retain });
    const li = document.createElement('li');
    li.textContent = `${d.topic}  ${text}`;
    $('messages').prepend(li);
  });
  client.on('token', (d) => {
    log.tokens.push({ ...d, at: at() });
    $('refreshes').textContent = String(log.tokens.length);
  });
  client.on('token-fetched', (d) => log.fetched.push({ ...d, at: at() }));
  client.on('token-error', (d) => log.tokenErrors.push(d));
  client.on('subscribed', (d) => log.subscribed.push(d));
  client.on('subscribe-error', (d) => {
    log.subErrors.push(d);
    $('suberror').textContent = `refused: ${d.filter} — ${d.reasonName} (0x${d.reason.toString(16)})`;
  });
  client.subscribe(`users/${session.sub}/notifications`, { qos: 1 });
  if (params.get('other')) client.subscribe(`users/${params.get('other')}/notifications`, { qos: 1 });
  client.connect();
  countdown = setInterval(() => {
    const left = Math.max(0, Math.round((client.expiresAt - Date.now()) / 1000));
    $('countdown').textContent = client.expiresAt ? `${left} s` : '—';
  }, 250);
  $('signin').disabled = true;
  $('signout').disabled = false;
}

$('signin').addEventListener('click', () => signIn().catch((e) => show('fatal', { reasonName: e.message })));
$('signout').addEventListener('click', () => {
  client?.disconnect();
  client = undefined;
  signedOut();
});
$('peek').addEventListener('submit', (e) => {
  e.preventDefault();
  client?.subscribe(`users/${$('other').value.trim()}/notifications`, { qos: 1 });
});
if (params.has('autostart')) signIn().catch((e) => show('fatal', { reasonName: e.message }));
