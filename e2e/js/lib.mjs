// Helpers shared by the end-to-end tests: real pusher-js clients (its Node build) and
// the real `pusher` server SDK, pointed at the herald started by e2e/e2e_test.go.
//
// Every client gets a wire tap: the raw frames it received and sent and the close code
// of each WebSocket it opened, so that a failing assertion can print what was on the
// wire and so that tests can check what pusher-js itself hides (close codes, exact
// bytes, reconnect attempts).

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import Pusher from 'pusher-js';
import PusherServer from 'pusher';

export { sleep };

function need(name) {
  const v = process.env[name];
  if (!v) {
    throw new Error(`${name} is not set: run these tests through "go test ./e2e" (or "make test"), which starts herald and sets HERALD_HOST, HERALD_PORT, HERALD_ADMIN and APP_*`);
  }
  return v;
}

// env describes the herald under test. With a cluster (HERALD_NODES), host, port, admin
// and pid are node 1's, and env.nodes lists every node: env.nodes[n - 1] is node n.
export const env = {
  host: process.env.HERALD_HOST || '127.0.0.1',
  port: Number(need('HERALD_PORT')),
  admin: need('HERALD_ADMIN'), // host:port of the admin server
  pid: Number(process.env.HERALD_PID || 0),
  app: { id: need('APP_ID'), key: need('APP_KEY'), secret: need('APP_SECRET') },
  app2: process.env.APP2_ID
    ? { id: process.env.APP2_ID, key: process.env.APP2_KEY, secret: process.env.APP2_SECRET, maxPresenceMembers: Number(process.env.APP2_MAX_PRESENCE_MEMBERS || 0) }
    : null,
  app3: process.env.APP3_ID
    ? { id: process.env.APP3_ID, key: process.env.APP3_KEY, secret: process.env.APP3_SECRET, maxConnections: Number(process.env.APP3_MAX_CONNECTIONS || 0) }
    : null,
  maxConnections: Number(process.env.E2E_MAX_CONNECTIONS || 0),
  activityTimeout: Number(process.env.E2E_ACTIVITY_TIMEOUT || 0),
  // The cluster instances (e2e/cluster_test.go) add these.
  control: process.env.E2E_CONTROL || null, // host:port of the control server
  nodeLease: Number(process.env.E2E_NODE_LEASE_MS || 0), // --node-lease, ms
};
// The HAProxy instance (e2e/haproxy_test.go) adds the load balancer in front of its
// nodes: its TLS and plain ports and its stats page. Its nodes take connections only
// through it (they run with --proxy-protocol and trust only HAProxy's address, from
// which they require a PROXY header), so its files connect and publish with
// {via: 'tls'} or {via: 'plain'}. Node trusts the test CA through NODE_EXTRA_CA_CERTS.
env.lb = process.env.E2E_LB_PORT
  ? { host: process.env.E2E_LB_HOST || '127.0.0.1', port: Number(process.env.E2E_LB_PORT), tlsPort: Number(process.env.E2E_LB_TLS_PORT), stats: process.env.E2E_LB_STATS }
  : null;

// via returns where a client reaches herald through the load balancer: 'tls' (wss://,
// https://) or 'plain'.
export function via(how) {
  if (!env.lb) throw new Error('E2E_LB_PORT is not set: {via} needs the HAProxy instance of e2e/haproxy_test.go');
  if (how !== 'tls' && how !== 'plain') throw new Error(`via: want 'tls' or 'plain', got ${how}`);
  return { host: env.lb.host, port: how === 'tls' ? env.lb.tlsPort : env.lb.port, tls: how === 'tls' };
}

env.nodes = (process.env.HERALD_NODES ? JSON.parse(process.env.HERALD_NODES) : [{ host: env.host, port: env.port, admin: env.admin, pid: env.pid }]).map((x, i) => ({ ...x, n: i + 1 }));

// node returns node n (1-based) of env.nodes.
export function node(n = 1) {
  const x = env.nodes[n - 1];
  if (!x) throw new Error(`no node ${n}: herald runs ${env.nodes.length} node(s) here (HERALD_NODES)`);
  return x;
}

if (process.env.E2E_DEBUG) {
  Pusher.logToConsole = true;
}

// uniq returns a channel-name-safe unique name with the given prefix.
export function uniq(prefix) {
  return `${prefix}${randomBytes(5).toString('hex')}`;
}

// sdk returns a `pusher` server SDK client for app (the main app by default) that talks
// to node opts.node (1 by default), or through the load balancer with opts.via ('tls':
// https, or 'plain'). The other opts are merged into the SDK options (e.g.
// {secret: 'wrong'} or {encryptionMasterKeyBase64}).
export function sdk(opts = {}) {
  const app = opts.app || env.app;
  const n = opts.via ? via(opts.via) : node(opts.node || 1);
  const o = { appId: app.id, key: app.key, secret: app.secret, host: n.host, port: String(n.port), useTLS: Boolean(n.tls), timeout: 5000, ...opts };
  delete o.app;
  delete o.node;
  delete o.via;
  return new PusherServer(o);
}

// --- the wire tap -----------------------------------------------------------------------

// A Log keeps entries and lets tests wait for one that matches.
export class Log {
  constructor(describe) {
    this.entries = [];
    this.waiters = new Set();
    this.describe = describe || (() => '');
  }
  push(e) {
    this.entries.push(e);
    for (const w of [...this.waiters]) {
      if (w.pred(e)) {
        this.waiters.delete(w);
        clearTimeout(w.timer);
        w.resolve(e);
      }
    }
  }
  find(pred) {
    return this.entries.find(pred);
  }
  filter(pred) {
    return this.entries.filter(pred);
  }
  // wait resolves with the first entry (past or future) matching pred, or rejects after
  // ms. The promise has cancel(), which drops the waiter and its timer.
  wait(pred, what, ms = 5000) {
    const hit = this.entries.find(pred);
    if (hit !== undefined) {
      const p = Promise.resolve(hit);
      p.cancel = () => {};
      return p;
    }
    let w;
    const p = new Promise((resolve, reject) => {
      w = { pred, resolve };
      w.timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new Error(`timed out after ${ms} ms waiting for ${what}\n${this.describe()}`));
      }, ms);
      this.waiters.add(w);
    });
    p.cancel = () => {
      clearTimeout(w.timer);
      this.waiters.delete(w);
    };
    return p;
  }
}

// One tap per pusher-js instance, keyed by its timeline (each Pusher has its own and
// hands it to every transport it creates).
const taps = new WeakMap();
function tapFor(timeline) {
  let t = taps.get(timeline);
  if (!t) {
    t = { sockets: [], frames: null };
    taps.set(timeline, t);
  }
  return t;
}

const initTransport = Pusher.Runtime.transportConnectionInitializer;
Pusher.Runtime.transportConnectionInitializer = function tappedInitializer() {
  const tap = tapFor(this.timeline);
  const sock = { n: tap.sockets.length, opened: false, close: null };
  tap.sockets.push(sock);
  const record = (dir, raw) => {
    if (tap.frames) tap.frames.push({ sock: sock.n, dir, raw, at: Date.now() });
  };
  this.bind('open', () => {
    sock.opened = true;
    record('open', '');
  });
  this.bind('message', (m) => record('in', String(m.data)));
  this.bind('closed', (ev) => {
    sock.close = { code: ev && ev.code, reason: ev && ev.reason };
    record('close', JSON.stringify(sock.close));
  });
  const send = this.send;
  this.send = (data) => {
    record('out', String(data));
    return send.call(this, data);
  };
  return initTransport.call(this);
};

// --- clients ----------------------------------------------------------------------------

const clients = new Set();

// cleanup disconnects every client made by connect; call it from afterEach.
export async function cleanup() {
  for (const c of clients) c.disconnect();
  clients.clear();
}

function parse(raw) {
  try {
    const f = JSON.parse(raw);
    let data = f.data;
    if (typeof data === 'string') {
      try {
        data = JSON.parse(data);
      } catch {
        // not JSON: keep the string
      }
    }
    return { ...f, parsedData: data };
  } catch {
    return { event: undefined, raw };
  }
}

// Client wraps one pusher-js instance and its wire tap.
export class Client {
  constructor(name, pusher) {
    this.name = name;
    this.pusher = pusher;
    this.tap = tapFor(pusher.timeline);
    // A timeout shows this client's wire first, then every other live client's.
    const describe = () => [this, ...[...clients].filter((c) => c !== this)].map((c) => c.dump()).join('\n');
    // frames: {sock, dir: 'in'|'out'|'open'|'close', raw, at, ...parsed}
    this.frames = new Log(describe);
    this.tap.frames = { push: (f) => this.frames.push(f.dir === 'in' || f.dir === 'out' ? { ...parse(f.raw), ...f } : f) };
    // states: every connection state pusher-js went through.
    this.states = new Log(describe);
    this.states.push({ state: pusher.connection.state });
    pusher.connection.bind('state_change', ({ current }) => this.states.push({ state: current }));
    // errors: what pusher-js reports on connection 'error', reduced to {code, message, type}.
    this.errors = new Log(describe);
    pusher.connection.bind('error', (e) => {
      const inner = e && e.error && e.error.data ? e.error.data : e && e.data ? e.data : {};
      this.errors.push({ code: inner.code, message: inner.message, type: e && e.type, raw: e });
    });
    // events: channel events as pusher-js hands them to the app (after decryption),
    // {channel, event, data, metadata}.
    this.events = new Log(describe);
    // userEvents: events pusher-js hands to pusher.user.bind (server-to-user messages).
    this.userEvents = new Log(describe);
    pusher.user.bind_global((event, data) => this.userEvents.push({ event, data }));
  }

  get socketId() {
    return this.pusher.connection.socket_id;
  }
  get state() {
    return this.pusher.connection.state;
  }

  // inbound returns the parsed frames received with the given event name (and channel).
  inbound(event, channel) {
    return this.frames.filter((f) => f.dir === 'in' && f.event === event && (channel === undefined || f.channel === channel));
  }
  outbound(event, channel) {
    return this.frames.filter((f) => f.dir === 'out' && f.event === event && (channel === undefined || f.channel === channel));
  }
  // waitFrame waits for an inbound frame with that event (and channel).
  waitFrame(event, channel, ms = 5000) {
    return this.frames.wait(
      (f) => f.dir === 'in' && f.event === event && (channel === undefined || f.channel === channel),
      `${this.name}: frame ${event}${channel ? ' on ' + channel : ''}`,
      ms,
    );
  }
  waitState(state, ms = 5000) {
    return this.states.wait((s) => s.state === state, `${this.name}: state ${state}`, ms);
  }
  waitError(code, ms = 5000) {
    return this.errors.wait((e) => e.code === code, `${this.name}: pusher-js error with code ${code}`, ms);
  }
  // waitClose waits until the n-th WebSocket (0: the first) is closed and returns {code, reason}.
  waitClose(n = 0, ms = 5000) {
    return this.frames.wait((f) => f.dir === 'close' && f.sock === n, `${this.name}: close of socket #${n}`, ms).then(() => this.tap.sockets[n].close);
  }
  // waitEvent waits for a channel event delivered by pusher-js.
  waitEvent(channel, event, ms = 5000, pred = () => true) {
    return this.events.wait((e) => e.channel === channel && e.event === event && pred(e), `${this.name}: event ${event} on ${channel}`, ms);
  }
  received(channel, event) {
    return this.events.filter((e) => e.channel === channel && (event === undefined || e.event === event));
  }

  // subscribe subscribes and records every event pusher-js emits on the channel.
  subscribe(name) {
    const ch = this.pusher.subscribe(name);
    if (!ch.__e2eTapped) {
      // Record what pusher-js hands to the app's bind() callbacks, metadata included.
      ch.__e2eTapped = true;
      const emit = ch.emit;
      ch.emit = (event, data, metadata) => {
        this.events.push({ channel: name, event, data, metadata });
        return emit.call(ch, event, data, metadata);
      };
    }
    return ch;
  }

  // subscribed subscribes and waits for pusher:subscription_succeeded; it throws with the
  // frames seen if pusher:subscription_error comes instead.
  async subscribed(name, ms = 5000) {
    const ch = this.subscribe(name);
    const ok = this.waitEvent(name, 'pusher:subscription_succeeded', ms);
    const err = this.waitEvent(name, 'pusher:subscription_error', ms + 1000);
    const bad = err.then(
      (e) => {
        throw new Error(`${this.name}: subscription to ${name} failed: ${JSON.stringify(e.data)}\n${this.dump()}`);
      },
      () => new Promise(() => {}),
    );
    try {
      await Promise.race([ok, bad]);
    } finally {
      ok.cancel();
      err.cancel();
    }
    return ch;
  }

  // signin asks pusher-js to sign in and waits for pusher:signin_success and for the
  // #server-to-user-<id> subscription pusher-js makes afterwards.
  async signin(ms = 5000) {
    this.pusher.signin();
    await this.waitFrame('pusher:signin_success', undefined, ms);
    const id = this.userData.id;
    await this.waitFrame('pusher_internal:subscription_succeeded', `#server-to-user-${id}`, ms);
  }

  // ping sends pusher:ping on the current socket and waits for a pusher:pong that
  // arrives after it; it resolves with the round trip in ms.
  async ping(ms = 5000) {
    const sock = this.tap.sockets.length - 1;
    const sent = Date.now();
    const n = this.frames.entries.length;
    this.pusher.send_event('pusher:ping', {});
    const pong = await this.frames.wait(
      (f) => f.dir === 'in' && f.event === 'pusher:pong' && f.sock === sock && this.frames.entries.indexOf(f) >= n,
      `${this.name}: pusher:pong`,
      ms,
    );
    return pong.at - sent;
  }

  disconnect() {
    this.pusher.disconnect();
  }

  // dump renders the wire for error messages.
  dump(limit = 40) {
    const all = this.frames.entries;
    const lines = all.slice(-limit).map((f) => {
      const t = new Date(f.at).toISOString().slice(17, 23);
      return `    ${t} #${f.sock} ${f.dir.padEnd(5)} ${f.raw.length > 300 ? f.raw.slice(0, 300) + '…' : f.raw}`;
    });
    const errs = this.errors.entries.map((e) => `    error ${e.type} code=${e.code} ${e.message ?? ''}`);
    return [`  ${this.name} (state ${this.state}, socket ${this.socketId}) wire${all.length > limit ? ` (last ${limit} of ${all.length})` : ''}:`, ...lines, ...errs].join('\n');
  }
}

// connect makes a pusher-js client and (by default) waits until it is connected.
//
// opts: name (for messages), node (the herald node to connect to, 1-based; default 1),
// via ('tls' or 'plain': through the load balancer instead, wss:// with forceTLS for
// 'tls'),
// key (app key), app (credentials the auth handlers sign with), user ({user_id,
// user_info} for presence channel_data), userData ({id, ...} for sign-in),
// authorize(socketId, channel, sign) to override channel auth, activityTimeout (ms),
// wait (default true).
export async function connect(opts = {}) {
  const app = opts.app || env.app;
  const target = opts.via ? via(opts.via) : node(opts.node || 1);
  const signer = sdk({ app, ...(opts.sdkOptions || {}) });
  const user = opts.user;
  const userData = opts.userData || (user ? { id: String(user.user_id), user_info: user.user_info } : undefined);
  const sign = (socketId, channel) => signer.authorizeChannel(socketId, channel, channel.startsWith('presence-') ? user : undefined);
  const options = {
    wsHost: target.host,
    wsPort: target.port,
    forceTLS: Boolean(target.tls),
    enabledTransports: ['ws'],
    disableStats: true,
    cluster: '',
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => {
        try {
          cb(null, opts.authorize ? opts.authorize(socketId, channelName, sign) : sign(socketId, channelName));
        } catch (e) {
          cb(e, null);
        }
      },
    },
    userAuthentication: {
      customHandler: ({ socketId }, cb) => {
        try {
          cb(null, signer.authenticateUser(socketId, userData));
        } catch (e) {
          cb(e, null);
        }
      },
    },
  };
  if (opts.activityTimeout) options.activityTimeout = opts.activityTimeout;
  if (target.tls) options.wssPort = target.port;
  const pusher = new Pusher(opts.key || app.key, options);
  const c = new Client(opts.name || 'client', pusher);
  c.userData = userData;
  c.node = target.n; // undefined through the load balancer: see nodeOf
  clients.add(c);
  if (opts.wait !== false) {
    await c.waitState('connected', opts.timeout || 5000);
  }
  return c;
}

// expectNone asserts that nothing matching pred was recorded in log; use it after a
// marker event has been seen so that "not received" means something.
export function expectNone(log, pred, what) {
  const hit = log.find(pred);
  if (hit !== undefined) {
    throw new Error(`unexpected ${what}: ${JSON.stringify(hit.raw ?? hit)}\n${log.describe()}`);
  }
}

// --- HTTP -------------------------------------------------------------------------------

// apiError runs an SDK call that must fail and returns {status, body}: the HTTP status
// and the parsed JSON error body.
export async function apiError(promise) {
  let err;
  try {
    const res = await promise;
    const text = await res.text();
    throw new Error(`request succeeded with ${res.status} ${text}, want an error`);
  } catch (e) {
    err = e;
  }
  if (err.status === undefined) throw err;
  let body;
  try {
    body = JSON.parse(err.body);
  } catch {
    throw new Error(`error body is not JSON (status ${err.status}): ${JSON.stringify(err.body)}`);
  }
  return { status: err.status, body, text: err.body };
}

// json reads an SDK response.
export async function json(res) {
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`response is not JSON (status ${res.status}): ${JSON.stringify(text)}`);
  }
}

// admin GETs a path on the admin server of node n (default 1).
export async function admin(path, n = 1) {
  const res = await fetch(`http://${node(n).admin}${path}`);
  return { status: res.status, text: await res.text(), type: res.headers.get('content-type') };
}

// stats is node n's /stats.
export async function stats(n = 1) {
  const r = await admin('/stats', n);
  if (r.status !== 200) throw new Error(`/stats of node ${n} answered ${r.status}: ${r.text}`);
  return JSON.parse(r.text);
}

// metric returns the value of one Prometheus sample in a /metrics text, or undefined.
export function metric(text, name, labels) {
  const want = labels ? `${name}{${labels}}` : name;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    if (line.slice(0, i) === want) return Number(line.slice(i + 1));
  }
  return undefined;
}

// metricSum sums the samples of one Prometheus metric in a /metrics text whose labels
// contain every one of the given label pairs (e.g. 'app="21"'); 0 if there is none.
export function metricSum(text, name, ...pairs) {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{')) continue;
    const i = line.lastIndexOf(' ');
    const labels = line.slice(name.length + 1, line.lastIndexOf('}', i)).split(',');
    if (pairs.every((p) => labels.includes(p))) sum += Number(line.slice(i + 1));
  }
  return sum;
}

// control asks the Go harness to act on a process it owns (cluster instances only; see
// serveControl in e2e/cluster_test.go): 'nodes/3/kill', 'redis/kill', 'redis/restart',
// 'redis/freeze', 'redis/thaw', 'redis/kill-pubsub'. It returns the JSON answer.
export async function control(action) {
  if (!env.control) throw new Error('E2E_CONTROL is not set: control() needs a cluster instance of e2e/cluster_test.go');
  const res = await fetch(`http://${env.control}/${action}`, { method: 'POST' });
  const body = await res.json().catch(() => ({}));
  if (res.status !== 200) throw new Error(`control ${action} answered ${res.status}: ${JSON.stringify(body)}`);
  return body;
}

// eventually polls fn until it returns a truthy value, or throws with the last value.
export async function eventually(fn, what, ms = 5000, every = 50) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}; last value ${JSON.stringify(last)}`);
    await sleep(every);
  }
}

// nodeConnections is /stats node.connections of node n (default 1).
export async function nodeConnections(n = 1) {
  return (await stats(n)).node.connections;
}

// nodeOf is the node (1-based, as in env.nodes) that holds client c, found from the
// node part of its socket_id ("<node id>.<conn>"; the HAProxy instance gives its nodes
// the ids in E2E_NODE_IDS, in order).
export function nodeOf(c) {
  const ids = (process.env.E2E_NODE_IDS || '').split(',').filter(Boolean);
  if (!ids.length) throw new Error('E2E_NODE_IDS is not set: nodeOf needs nodes started with --node-id');
  const i = ids.indexOf(String(c.socketId).split('.')[0]);
  if (i < 0) throw new Error(`${c.name}: socket_id ${c.socketId} is from none of the nodes ${ids}`);
  return i + 1;
}

// lbStats returns HAProxy's stats (its CSV, as on the stats page's ;csv) as one object
// per proxy and server: {pxname, svname, status, scur, stot, check_status, …}.
export async function lbStats() {
  if (!env.lb || !env.lb.stats) throw new Error('E2E_LB_STATS is not set: lbStats needs the HAProxy instance');
  const res = await fetch(`http://${env.lb.stats}/;csv`);
  const text = await res.text();
  if (res.status !== 200) throw new Error(`HAProxy stats answered ${res.status}: ${text}`);
  const [head, ...rows] = text.trim().split('\n');
  const cols = head.replace(/^# /, '').split(',');
  return rows.map((r) => Object.fromEntries(r.split(',').map((v, i) => [cols[i], v])));
}

// lbSessions is the total sessions (stot) HAProxy counted on proxy px (a frontend or
// backend name, e.g. 'herald_tls'), svname 'FRONTEND', 'BACKEND' or a server.
export async function lbSessions(px, sv = 'FRONTEND') {
  const row = (await lbStats()).find((r) => r.pxname === px && r.svname === sv);
  if (!row) throw new Error(`HAProxy has no ${px}/${sv}`);
  return Number(row.stot);
}

// quiesce waits until herald node n (default 1) counts no open connection (clients of
// earlier tests are gone), so that tests that count connections start from zero.
export async function quiesce(ms = 5000, n = 1) {
  let count;
  await eventually(async () => (count = await nodeConnections(n)) === 0, `herald node ${n} to count 0 connections`, ms).catch((e) => {
    throw new Error(`${e.message} (it counts ${count})`);
  });
}

// --- webhooks ---------------------------------------------------------------------------

// envApp is the app whose credentials the Go side passed as <prefix>_ID, <prefix>_KEY and
// <prefix>_SECRET (e2e/webhooks_test.go), or null.
export function envApp(prefix) {
  const id = process.env[`${prefix}_ID`];
  return id ? { id, key: process.env[`${prefix}_KEY`], secret: process.env[`${prefix}_SECRET`] } : null;
}

// hookFields are the fields of each webhook event type (PUSHER.md §3): exactly these,
// and user_id besides on a client_event of a presence channel.
const hookFields = {
  channel_occupied: ['name', 'channel'],
  channel_vacated: ['name', 'channel'],
  member_added: ['name', 'channel', 'user_id'],
  member_removed: ['name', 'channel', 'user_id'],
  client_event: ['name', 'channel', 'event', 'data', 'socket_id'],
  cache_miss: ['name', 'channel'],
  subscription_count: ['name', 'channel', 'subscription_count'],
};

// maxBatch is the most events a webhook request may carry (Pusher's batching).
export const maxBatch = 20;

// WebhookReceiver is an HTTP endpoint for herald's webhooks on 127.0.0.1:port (the port
// the Go side wrote into apps.json, E2E_WEBHOOK_PORT). paths maps each request path to
// the app whose hook posts there, e.g. {'/all': env.app}.
//
// It checks every request twice: with the `pusher` SDK's webhook() helper (isValid():
// X-Pusher-Key and X-Pusher-Signature; it also refuses a body one byte longer and a wrong
// secret, so that the helper's yes means something) and with an HMAC-SHA256 of its own
// over the raw body; and it checks Pusher's body ({time_ms, events[1..20]}) and each
// event's fields. What fails a check is kept in problems (check() throws with them); the
// events of requests answered 2xx are in events, a Log of {path, req, at, ev}, where ev
// is the event as posted. requests keeps every request, answered 2xx or not:
// {n, path, at, status, timeMs, events, headers}.
//
// Requests are answered 200 unless a rule from failNext says otherwise.
export class WebhookReceiver {
  constructor(port, paths) {
    this.port = port;
    this.paths = paths;
    this.requests = [];
    this.problems = [];
    this.rules = [];
    this.events = new Log(() => this.dump());
    this.verifiers = {};
    for (const [path, app] of Object.entries(paths)) {
      this.verifiers[path] = { app, good: sdk({ app }), bad: sdk({ app, secret: `not-${app.secret}` }) };
    }
    this.server = http.createServer((req, res) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => this.handle(req, Buffer.concat(chunks).toString('utf8'), res));
    });
    // herald keeps its connections alive up to 90 s; node's default 5 s would race
    // herald's next request on an idle connection (a spurious failure and a retry).
    this.server.keepAliveTimeout = 120_000;
  }

  listen() {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.port, '127.0.0.1', () => resolve(this));
    });
  }

  close() {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  // failNext answers the next n requests to path whose events match pred with status.
  failNext(path, n, pred = () => true, status = 500) {
    this.rules.push({ path, n, pred, status });
  }

  handle(req, body, res) {
    const url = new URL(req.url, 'http://x');
    const r = { n: this.requests.length, path: url.pathname, at: Date.now(), status: 200, timeMs: undefined, events: [], headers: req.headers };
    this.requests.push(r);
    const bad = (why) => this.problems.push(`request #${r.n} to ${r.path}: ${why}\n      headers ${JSON.stringify(req.headers)}\n      body ${body.slice(0, 500)}`);
    const v = this.verifiers[r.path];
    if (req.method !== 'POST') bad(`method ${req.method}, want POST`);
    if (!v) {
      bad('no hook posts to this path');
      res.writeHead(404).end();
      return;
    }
    if (req.headers['content-type'] !== 'application/json') bad(`Content-Type ${req.headers['content-type']}, want application/json`);
    if (req.headers['x-pusher-key'] !== v.app.key) bad(`X-Pusher-Key ${req.headers['x-pusher-key']}, want ${v.app.key}`);
    // The SDK's helper, and two requests it must refuse.
    const wh = (pusher, rawBody) => pusher.webhook({ headers: req.headers, rawBody });
    if (!wh(v.good, body).isValid()) bad("pusher.webhook(req).isValid() is false");
    if (wh(v.good, body + ' ').isValid()) bad('pusher.webhook() accepts the body with a byte appended: its check means nothing');
    if (wh(v.bad, body).isValid()) bad('pusher.webhook() accepts the signature under a wrong secret');
    // Our own check: lowercase hex HMAC-SHA256 of the raw body under the app secret.
    const sig = req.headers['x-pusher-signature'] || '';
    const want = createHmac('sha256', v.app.secret).update(body, 'utf8').digest();
    if (!/^[0-9a-f]{64}$/.test(sig)) bad(`X-Pusher-Signature ${JSON.stringify(sig)} is not 64 lowercase hex digits`);
    else if (!timingSafeEqual(Buffer.from(sig, 'hex'), want)) bad(`X-Pusher-Signature ${sig}, want ${want.toString('hex')}`);
    let doc;
    try {
      doc = JSON.parse(body);
    } catch (e) {
      bad(`body is not JSON: ${e.message}`);
    }
    if (doc) {
      r.timeMs = doc.time_ms;
      r.events = Array.isArray(doc.events) ? doc.events : [];
      const keys = Object.keys(doc).sort().join();
      if (keys !== 'events,time_ms') bad(`body has keys ${keys}, want events,time_ms`);
      if (!Number.isInteger(doc.time_ms) || doc.time_ms > r.at + 1000 || doc.time_ms < r.at - 30_000) bad(`time_ms ${doc.time_ms} is not a unix time in ms of the last 30 s (now ${r.at})`);
      if (!Array.isArray(doc.events) || doc.events.length === 0 || doc.events.length > maxBatch) bad(`events is not an array of 1..${maxBatch} events`);
      for (const ev of r.events) {
        const why = checkHookEvent(ev);
        if (why) bad(`event ${JSON.stringify(ev)}: ${why}`);
      }
    }
    const rule = this.rules.find((x) => x.path === r.path && x.n > 0 && x.pred(r.events));
    if (rule) {
      rule.n--;
      r.status = rule.status;
    }
    res.writeHead(r.status, { 'Content-Type': 'text/plain' }).end(r.status === 200 ? 'ok' : 'failing on purpose');
    if (r.status >= 200 && r.status < 300) {
      for (const ev of r.events) this.events.push({ path: r.path, req: r.n, at: r.at, ev });
    }
  }

  // check throws if a request failed a check since the last call (so that the test
  // during which it came fails, not every later one).
  check() {
    const p = this.problems.splice(0);
    if (p.length) throw new Error(`webhook requests that fail the checks:\n  ${p.join('\n  ')}`);
  }

  // got is the delivered events on path matching pred (an object of fields to equal, or a
  // function of the event).
  got(path, pred = {}) {
    const match = typeof pred === 'function' ? pred : (ev) => Object.entries(pred).every(([k, x]) => ev[k] === x);
    return this.events.filter((e) => e.path === path && match(e.ev));
  }

  // wait waits for a delivered event on path matching pred (as in got) and returns
  // its entry {path, req, at, ev}.
  wait(path, pred, ms = 5000) {
    const match = typeof pred === 'function' ? pred : (ev) => Object.entries(pred).every(([k, x]) => ev[k] === x);
    return this.events.wait((e) => e.path === path && match(e.ev), `webhook on ${path}: ${typeof pred === 'function' ? pred.toString() : JSON.stringify(pred)}`, ms);
  }

  // dump renders the last requests for error messages.
  dump(limit = 40) {
    const lines = this.requests.slice(-limit).map((r) => {
      const t = new Date(r.at).toISOString().slice(17, 23);
      const evs = r.events.map((e) => [e.name, e.channel, e.user_id ?? e.event ?? e.subscription_count ?? ''].join(' ').trim()).join(' | ');
      return `    ${t} #${r.n} ${r.path} → ${r.status} (${r.events.length}): ${evs.length > 400 ? evs.slice(0, 400) + '…' : evs}`;
    });
    return [`  webhook receiver on :${this.port}${this.requests.length > limit ? ` (last ${limit} of ${this.requests.length} requests)` : ''}:`, ...lines].join('\n');
  }
}

// checkHookEvent says what is wrong with one webhook event, or returns ''.
function checkHookEvent(ev) {
  const fields = hookFields[ev && ev.name];
  if (!fields) return 'unknown event name';
  const want = [...fields];
  if (ev.name === 'client_event' && 'user_id' in ev) want.push('user_id');
  const keys = Object.keys(ev).sort().join();
  if (keys !== want.sort().join()) return `fields ${keys}, want ${want.join()}`;
  if (typeof ev.channel !== 'string' || ev.channel === '') return 'no channel';
  if (ev.channel.startsWith('#')) return "herald's own channel told to the app";
  for (const k of ['user_id', 'event', 'data', 'socket_id']) {
    if (k in ev && typeof ev[k] !== 'string') return `${k} is not a string`;
  }
  if ('socket_id' in ev && !/^\d+\.\d+$/.test(ev.socket_id)) return 'socket_id is not a socket id';
  if (ev.name === 'client_event' && ev.user_id !== undefined && !ev.channel.startsWith('presence-')) return 'user_id on a client event of a channel that is not presence';
  if ('subscription_count' in ev && !(Number.isInteger(ev.subscription_count) && ev.subscription_count >= 0)) return 'subscription_count is not a count';
  return '';
}

// webhookReceiver starts a WebhookReceiver on E2E_WEBHOOK_PORT.
export async function webhookReceiver(paths) {
  const port = Number(process.env.E2E_WEBHOOK_PORT || 0);
  if (!port) throw new Error('E2E_WEBHOOK_PORT is not set: run this file through the webhook instances of e2e/webhooks_test.go');
  return new WebhookReceiver(port, paths).listen();
}

// HangServer accepts TCP connections on 127.0.0.1:port, reads what comes and never
// answers: a webhook endpoint that hangs, until answer() makes it answer 200 to the
// requests it holds and to every later one. requests lists when each request began.
export class HangServer {
  constructor(port) {
    this.port = port;
    this.requests = [];
    this.sockets = new Set();
    this.held = new Set(); // sockets with a request not answered
    this.answering = false;
    this.server = net.createServer((s) => {
      this.sockets.add(s);
      let buf = '';
      let at = 0;
      s.on('data', (d) => {
        if (buf === '') at = Date.now();
        buf += d.toString('latin1');
        // A whole request: its head and Content-Length bytes of body.
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const m = /\r\ncontent-length:\s*(\d+)/i.exec(buf.slice(0, end));
        if (buf.length < end + 4 + (m ? Number(m[1]) : 0)) return;
        buf = '';
        this.requests.push({ at });
        if (this.answering) this.ok(s);
        else this.held.add(s);
      });
      s.on('error', () => {});
      s.on('close', () => {
        this.sockets.delete(s);
        this.held.delete(s);
      });
    });
  }
  ok(s) {
    this.held.delete(s);
    s.end('HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
  }
  answer() {
    this.answering = true;
    for (const s of [...this.held]) this.ok(s);
  }
  listen() {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.port, '127.0.0.1', () => resolve(this));
    });
  }
  close() {
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
