// Webhooks, subscription counts, the watchlist and authorized connections on one node
// (e2e/webhooks_test.go TestWebhooks). Real pusher-js clients act; herald posts its
// webhooks to a receiver this file runs (lib.mjs WebhookReceiver), which verifies every
// request with the `pusher` SDK's webhook() helper and with an HMAC of its own, and
// checks Pusher's body and each event's fields.
//
// The apps (see webhookApps in e2e/webhooks_test.go):
//   APP_*        every event type to /all; member events of presence-…-vip to /vip
//   APP_RETRY_*  every type to /retry; client events also to E2E_HANG_PORT, which never answers
//   APP_COUNTS_* "subscription_count": true; the subscription_count webhook to /counts
//   APP_AUTH_*   "user_authentication_timeout": "2s"
//
// channel_vacated and member_removed wait Pusher's 3 s grace, which the command line
// cannot shorten: the tests that check it wait it out, and print what they measure
// ("measured: ...").
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { connect, cleanup, uniq, sleep, eventually, admin, metric, metricSum, env, envApp, expectNone, webhookReceiver, HangServer, maxBatch } from './lib.mjs';

const retryApp = envApp('APP_RETRY');
const countsApp = envApp('APP_COUNTS');
const authApp = envApp('APP_AUTH');
const authTimeout = Number(process.env.E2E_AUTH_TIMEOUT_MS);
const GRACE = 3000; // the departure grace of channel_vacated and member_removed

let hooks;
let hang;
before(async () => {
  hooks = await webhookReceiver({ '/all': env.app, '/vip': env.app, '/retry': retryApp, '/counts': countsApp });
  hang = await new HangServer(Number(process.env.E2E_HANG_PORT)).listen();
});
after(async () => {
  await hang?.close();
  await hooks?.close();
});
afterEach(async () => {
  await cleanup();
  hooks.check();
});

function measured(what, value, unit = 'ms') {
  console.log(`measured: ${what}: ${value}${unit ? ' ' + unit : ''}`);
}

const range = (n) => [...Array(n).keys()];

// once asserts that path got exactly one event equal to want.
function once(path, want) {
  const got = hooks.got(path, want);
  assert.equal(got.length, 1, `${path}: want exactly one ${JSON.stringify(want)}, got ${got.length}\n${hooks.dump()}`);
  assert.deepEqual(got[0].ev, want);
  return got[0];
}

// marker subscribes a fresh public channel of the main app and waits for its
// channel_occupied on /all: a hook delivers in order, so what was sent before it has
// arrived when it has.
async function marker() {
  const ch = uniq('marker-');
  const m = await connect({ name: 'marker' });
  await m.subscribed(ch);
  await hooks.wait('/all', { name: 'channel_occupied', channel: ch });
  m.disconnect();
}

async function metrics() {
  const r = await admin('/metrics');
  assert.equal(r.status, 200);
  return (name, app, event) => metric(r.text, name, `app="${app}",event="${event}"`) ?? 0;
}

test('every event type from pusher-js activity reaches the receiver, signed, in Pusher\'s format; vacated and removed after the grace', { timeout: 20000 }, async () => {
  const vip = uniq('presence-room-') + '-vip';
  const lobby = uniq('presence-lobby-');
  const priv = uniq('private-chat-');
  const cache = uniq('cache-news-');
  const alice = await connect({ name: 'alice', user: { user_id: 'alice', user_info: { name: 'Alice' } } });
  const bob = await connect({ name: 'bob', user: { user_id: 'bob' } });
  const chVip = await alice.subscribed(vip);
  await alice.subscribed(lobby);
  const chPriv = await alice.subscribed(priv);
  await bob.subscribed(vip);
  await bob.subscribed(priv);
  await alice.subscribed(cache);
  await alice.waitEvent(cache, 'pusher:cache_miss');

  for (const ch of [vip, lobby, priv, cache]) await hooks.wait('/all', { name: 'channel_occupied', channel: ch });
  for (const [ch, u] of [[vip, 'alice'], [vip, 'bob'], [lobby, 'alice']]) await hooks.wait('/all', { name: 'member_added', channel: ch, user_id: u });
  await hooks.wait('/all', { name: 'cache_miss', channel: cache });

  // Client events: a string's data is the string, an object's its JSON text; user_id
  // on presence channels only.
  assert.equal(chVip.trigger('client-typing', { text: 'hi', n: 1 }), true);
  assert.equal(chVip.trigger('client-note', 'plain text'), true);
  assert.equal(chPriv.trigger('client-private', { secret: true }), true);
  await bob.waitEvent(priv, 'client-private');
  const typing = await hooks.wait('/all', { name: 'client_event', channel: vip, event: 'client-typing' });
  assert.deepEqual(typing.ev, { name: 'client_event', channel: vip, event: 'client-typing', data: JSON.stringify({ text: 'hi', n: 1 }), socket_id: alice.socketId, user_id: 'alice' });
  const note = await hooks.wait('/all', { name: 'client_event', channel: vip, event: 'client-note' });
  assert.deepEqual(note.ev, { name: 'client_event', channel: vip, event: 'client-note', data: 'plain text', socket_id: alice.socketId, user_id: 'alice' });
  const pc = await hooks.wait('/all', { name: 'client_event', channel: priv });
  assert.deepEqual(pc.ev, { name: 'client_event', channel: priv, event: 'client-private', data: '{"secret":true}', socket_id: alice.socketId });

  // Everybody leaves: after the grace, the vacancies and departures.
  const left = Date.now();
  bob.disconnect();
  alice.disconnect();
  const gone = [
    ...[vip, lobby, priv, cache].map((ch) => ({ name: 'channel_vacated', channel: ch })),
    ...[[vip, 'alice'], [vip, 'bob'], [lobby, 'alice']].map(([ch, u]) => ({ name: 'member_removed', channel: ch, user_id: u })),
  ];
  const arrivals = [];
  for (const want of gone) arrivals.push((await hooks.wait('/all', want, GRACE + 4000)).at - left);
  measured('channel_vacated and member_removed after the last leave (min..max of 7)', `${Math.min(...arrivals)}..${Math.max(...arrivals)}`);
  assert.ok(Math.min(...arrivals) >= GRACE - 100, `vacated/removed ${arrivals} ms after the leave: want at least the ${GRACE} ms grace`);
  assert.ok(Math.max(...arrivals) <= GRACE + 2000, `vacated/removed ${arrivals} ms after the leave: want within 2 s of the grace`);

  await marker();
  for (const ch of [vip, lobby, priv, cache]) {
    once('/all', { name: 'channel_occupied', channel: ch });
    once('/all', { name: 'channel_vacated', channel: ch });
  }
  for (const [ch, u] of [[vip, 'alice'], [vip, 'bob'], [lobby, 'alice']]) {
    once('/all', { name: 'member_added', channel: ch, user_id: u });
    once('/all', { name: 'member_removed', channel: ch, user_id: u });
  }
  once('/all', { name: 'cache_miss', channel: cache });
  assert.equal(hooks.got('/all', { name: 'client_event' }).filter((e) => [vip, priv].includes(e.ev.channel)).length, 3, 'three client_events');

  // /vip: only member events, only of presence-…-vip channels, with its own header.
  assert.deepEqual(
    hooks.got('/vip').map((e) => `${e.ev.name} ${e.ev.channel} ${e.ev.user_id}`).sort(),
    [`member_added ${vip} alice`, `member_added ${vip} bob`, `member_removed ${vip} alice`, `member_removed ${vip} bob`],
  );
  for (const r of hooks.requests) {
    assert.equal(r.headers['x-e2e-hook'], r.path === '/vip' ? 'vip' : undefined, `request #${r.n} to ${r.path}: X-E2E-Hook`);
  }
});

test('a burst of client events arrives in requests of at most 20, in order', { timeout: 10000 }, async () => {
  const ch = uniq('private-burst-');
  const s = await connect({ name: 'sender' });
  const l = await connect({ name: 'listener' });
  const chS = await s.subscribed(ch);
  await l.subscribed(ch);
  await hooks.wait('/all', { name: 'channel_occupied', channel: ch });
  const N = 45;
  const sent = Date.now();
  for (let i = 0; i < N; i++) chS.trigger('client-burst', { i });
  await hooks.wait('/all', (ev) => ev.name === 'client_event' && ev.channel === ch && ev.data === JSON.stringify({ i: N - 1 }));
  const got = hooks.got('/all', { name: 'client_event', channel: ch });
  measured(`${N} client events: the last webhook after the first was sent`, Math.max(...got.map((e) => e.at)) - sent);
  assert.deepEqual(got.map((e) => JSON.parse(e.ev.data).i), range(N), 'each event once, in order');
  assert.ok(got.every((e) => e.ev.socket_id === s.socketId));
  const reqs = [...new Set(got.map((e) => e.req))].map((n) => hooks.requests[n]);
  const sizes = reqs.map((r) => r.events.length);
  measured('requests carrying the burst (events per request)', JSON.stringify(sizes), 'events');
  assert.ok(sizes.every((n) => n <= maxBatch), `requests of ${sizes} events: want at most ${maxBatch} each`);
  assert.equal(Math.max(...sizes), maxBatch, `requests of ${sizes} events: a burst of ${N} should fill a batch of ${maxBatch}`);
  assert.ok(reqs.length <= 5, `the burst took ${reqs.length} requests (${sizes}): not batched`);
  await l.waitEvent(ch, 'client-burst', 5000, (e) => e.data.i === N - 1);
  assert.equal(l.received(ch, 'client-burst').length, N);
});

test('a client back within the grace causes no webhook; one that stays away causes exactly one of each', { timeout: 20000 }, async () => {
  const stayPub = uniq('reload-');
  const stayPres = uniq('presence-reload-');
  const goPub = uniq('leave-');
  const goPres = uniq('presence-leave-');
  const r = await connect({ name: 'reloader', user: { user_id: 'reloader' } });
  await r.subscribed(stayPub);
  await r.subscribed(stayPres);
  const l = await connect({ name: 'leaver', user: { user_id: 'leaver' } });
  await l.subscribed(goPub);
  await l.subscribed(goPres);
  for (const ch of [stayPub, stayPres, goPub, goPres]) await hooks.wait('/all', { name: 'channel_occupied', channel: ch });
  await hooks.wait('/all', { name: 'member_added', channel: stayPres, user_id: 'reloader' });
  await hooks.wait('/all', { name: 'member_added', channel: goPres, user_id: 'leaver' });

  // The reloader drops its socket and, a second later (as a page reload might, and
  // long enough for the node to report the channel empty), pusher-js connects again
  // with a new socket id and resubscribes; the leaver stays away.
  const first = r.socketId;
  const t0 = Date.now();
  l.disconnect();
  r.disconnect();
  await r.waitState('disconnected');
  await sleep(1000);
  r.pusher.connect();
  for (const ch of [stayPub, stayPres]) {
    await r.frames.wait((f) => f.dir === 'in' && f.sock === 1 && f.event === 'pusher_internal:subscription_succeeded' && f.channel === ch, `reloader: ${ch} again on the new socket`);
  }
  const back = Date.now() - t0;
  measured('reloader back on both channels with a new socket after', back);
  assert.notEqual(r.socketId, first, 'a new socket id');
  assert.ok(back < GRACE - 500, `the reloader took ${back} ms to come back, want well within the grace`);

  const vacated = await hooks.wait('/all', { name: 'channel_vacated', channel: goPub }, GRACE + 4000);
  await hooks.wait('/all', { name: 'channel_vacated', channel: goPres }, 3000);
  await hooks.wait('/all', { name: 'member_removed', channel: goPres, user_id: 'leaver' }, 3000);
  measured("the leaver's channel_vacated after its leave", vacated.at - t0);
  // The reloader's grace ended with the leaver's; a marker sent after it.
  await sleep(300);
  await marker();
  for (const ch of [goPub, goPres]) {
    once('/all', { name: 'channel_occupied', channel: ch });
    once('/all', { name: 'channel_vacated', channel: ch });
  }
  once('/all', { name: 'member_added', channel: goPres, user_id: 'leaver' });
  once('/all', { name: 'member_removed', channel: goPres, user_id: 'leaver' });
  for (const ch of [stayPub, stayPres]) {
    once('/all', { name: 'channel_occupied', channel: ch });
    assert.equal(hooks.got('/all', { name: 'channel_vacated', channel: ch }).length, 0, `channel_vacated for ${ch}, whose subscriber came back within the grace\n${hooks.dump()}`);
  }
  once('/all', { name: 'member_added', channel: stayPres, user_id: 'reloader' });
  assert.equal(hooks.got('/all', { name: 'member_removed', channel: stayPres }).length, 0, `member_removed for the reloader\n${hooks.dump()}`);
});

test('retries: a hook answering 500 twice gets the batch once, after the failures; /metrics counts both', { timeout: 20000 }, async () => {
  const ch = uniq('retry-');
  const ours = (evs) => evs.some((e) => e.name === 'channel_occupied' && e.channel === ch);
  hooks.failNext('/retry', 2, ours, 500);
  const m0 = await metrics();
  const failed0 = m0('herald_webhooks_failed_total', retryApp.id, 'channel_occupied');
  const sent0 = m0('herald_webhooks_sent_total', retryApp.id, 'channel_occupied');

  const c = await connect({ name: 'c', app: retryApp });
  const t0 = Date.now();
  await c.subscribed(ch);
  const ok = await hooks.wait('/retry', { name: 'channel_occupied', channel: ch }, 8000);
  const attempts = hooks.requests.filter((r) => r.path === '/retry' && ours(r.events));
  assert.deepEqual(attempts.map((r) => r.status), [500, 500, 200], `attempts\n${hooks.dump()}`);
  assert.equal(ok.req, attempts[2].n, 'delivered by the third attempt');
  for (const a of attempts) assert.deepEqual(a.events, attempts[0].events, 'a retry sends the same events');
  const gaps = [attempts[1].at - attempts[0].at, attempts[2].at - attempts[1].at];
  measured('retry: first attempt after subscribe, then the gaps between attempts', `${attempts[0].at - t0}, ${gaps.join(', ')}`);
  // Backoff 1 s then 2 s, each drawn from ±50 %.
  assert.ok(gaps[0] >= 400 && gaps[0] <= 2000, `first retry ${gaps[0]} ms after the failure, want 0.5..1.5 s`);
  assert.ok(gaps[1] >= 900 && gaps[1] <= 3500, `second retry ${gaps[1]} ms after the failure, want 1..3 s`);
  assert.ok(attempts[2].timeMs > attempts[0].timeMs, 'a retry has a fresh time_ms');

  // The 200 is counted once herald has read it.
  let m;
  await eventually(async () => (m = await metrics())('herald_webhooks_sent_total', retryApp.id, 'channel_occupied') === sent0 + 1, 'herald_webhooks_sent_total +1');
  assert.equal(m('herald_webhooks_failed_total', retryApp.id, 'channel_occupied') - failed0, 2, 'herald_webhooks_failed_total: two failed attempts of one event');
  for (const reason of ['queue_full', 'retries_exhausted', 'shutdown']) {
    assert.equal(metric((await admin('/metrics')).text, 'herald_webhooks_dropped_total', `app="${retryApp.id}",event="channel_occupied",reason="${reason}"`), 0, `dropped (${reason})`);
  }

  // Delivered once: a later event on the same hook arrives, the batch does not again.
  const next = uniq('retry-marker-');
  await c.subscribed(next);
  await hooks.wait('/retry', { name: 'channel_occupied', channel: next });
  assert.equal(hooks.got('/retry', { name: 'channel_occupied', channel: ch }).length, 1, 'delivered once');
});

// The hang test's channel and what it measured, for the last test.
const hung = { channel: null, events: 0, firstAt: 0, sent0: 0 };

test('an endpoint that never answers does not delay the working one', { timeout: 10000 }, async () => {
  const ch = uniq('private-hang-');
  const a = await connect({ name: 'a', app: retryApp });
  const b = await connect({ name: 'b', app: retryApp });
  const chA = await a.subscribed(ch);
  await b.subscribed(ch);
  hung.channel = ch;
  hung.sent0 = (await metrics())('herald_webhooks_sent_total', retryApp.id, 'client_event');
  const lat = [];
  for (let k = 0; k < 3; k++) {
    const t = Date.now();
    chA.trigger('client-ping', { k });
    const e = await hooks.wait('/retry', (ev) => ev.name === 'client_event' && ev.channel === ch && ev.data === JSON.stringify({ k }), 3000);
    lat.push(e.at - t);
    await sleep(500);
  }
  hung.events = 3;
  measured('client_event to the working hook while the other hangs (3 events)', JSON.stringify(lat));
  assert.ok(lat.every((x) => x < 1000), `latencies ${lat} ms: the working hook waited for the hanging one`);
  // The hanging endpoint has the first request, still unanswered: one in flight per hook.
  assert.equal(hang.requests.length, 1, `the hanging endpoint got ${hang.requests.length} requests, want 1 (held) by now`);
  hung.firstAt = hang.requests[0].at;
});

test('pusher:subscription_count follows joins and leaves, and so does the subscription_count webhook', { timeout: 15000 }, async () => {
  const ch = uniq('counted-');
  const seen = {};
  const join = async (name) => {
    const c = await connect({ name, app: countsApp });
    seen[name] = [];
    const chan = c.subscribe(ch);
    chan.bind('pusher:subscription_count', (d) => seen[name].push(d.subscription_count));
    await c.subscribed(ch);
    return { c, chan };
  };
  const sees = (names, n) => Promise.all(names.map((x) => eventually(() => seen[x].at(-1) === n, `${x} to see subscription_count ${n} (saw ${JSON.stringify(seen[x])})`)));
  const a = await join('a');
  await sees(['a'], 1);
  const b = await join('b');
  await sees(['a', 'b'], 2);
  const c = await join('c');
  await sees(['a', 'b', 'c'], 3);
  b.c.pusher.unsubscribe(ch);
  await sees(['a', 'c'], 2);
  c.c.disconnect();
  await sees(['a'], 1);
  assert.equal(a.chan.subscriptionCount, 1, "pusher-js's channel.subscriptionCount");

  // The last one leaves: no count of 0 (nobody is left to hear it; channel_vacated
  // tells the app after the grace).
  a.c.disconnect();

  // Presence channels have member events instead: no count, to the client or the hook.
  const pres = uniq('presence-counted-');
  const p = await connect({ name: 'p', app: countsApp, user: { user_id: 'p' } });
  await p.subscribed(pres);
  const q = await connect({ name: 'q', app: countsApp, user: { user_id: 'q' } });
  await q.subscribed(pres);
  await p.waitEvent(pres, 'pusher:member_added');
  // A marker on both paths: a count for p on a public channel, and its webhook.
  const mk = uniq('counted-marker-');
  await p.subscribed(mk);
  await p.waitEvent(mk, 'pusher:subscription_count');
  await hooks.wait('/counts', { channel: mk, subscription_count: 1 });
  expectNone(p.frames, (f) => f.dir === 'in' && f.event === 'pusher_internal:subscription_count' && f.channel === pres, 'subscription_count on a presence channel');
  assert.equal(hooks.got('/counts', { channel: pres }).length, 0, `subscription_count webhook for a presence channel\n${hooks.dump()}`);

  assert.deepEqual(seen.a, [1, 2, 3, 2, 1], 'a saw each count once, in order');
  assert.deepEqual(seen.b, [2, 3], 'b saw each count once, in order, until it left');
  const counts = hooks.got('/counts', { channel: ch }).map((e) => e.ev.subscription_count);
  assert.deepEqual(counts, [1, 2, 3, 2, 1], 'the subscription_count webhooks, in order, none for 0');
});

test('watchlist: the online set at sign-in, then online and offline as the watched users come and go', { timeout: 15000 }, async () => {
  const [u1, u2, u3] = ['u1-', 'u2-', 'u3-'].map(uniq);
  const signedIn = async (id, name = id) => {
    const c = await connect({ name, userData: { id } });
    await c.signin();
    return c;
  };
  const c1 = await signedIn(u1);
  const w = await connect({ name: 'watcher', userData: { id: uniq('watcher-'), watchlist: [u1, u2, u3] } });
  const online = [];
  const offline = [];
  w.pusher.user.watchlist.bind('online', (e) => online.push({ ids: e.user_ids, at: Date.now() }));
  w.pusher.user.watchlist.bind('offline', (e) => offline.push({ ids: e.user_ids, at: Date.now() }));
  await w.signin();
  await eventually(() => online.length === 1, 'the online set at sign-in');
  assert.deepEqual(online[0].ids, [u1], 'online at sign-in: u1');

  const c2 = await signedIn(u2);
  await eventually(() => online.length === 2, 'u2 online');
  assert.deepEqual(online[1].ids, [u2]);
  const c3a = await signedIn(u3, 'u3#1');
  await eventually(() => online.length === 3, 'u3 online');
  assert.deepEqual(online[2].ids, [u3]);
  const c3b = await signedIn(u3, 'u3#2'); // a second connection: still one user online

  let t = Date.now();
  c1.disconnect();
  await eventually(() => offline.length === 1, 'u1 offline');
  measured('watchlist offline after the last connection left', offline[0].at - t);
  assert.deepEqual(offline[0].ids, [u1]);
  c3a.disconnect(); // u3 is still online through c3b
  await sleep(200);
  c2.disconnect();
  await eventually(() => offline.length === 2, 'u2 offline');
  assert.deepEqual(offline[1].ids, [u2], 'u2 offline, not u3 (still on its second connection)');
  t = Date.now();
  c3b.disconnect();
  await eventually(() => offline.length === 3, 'u3 offline');
  assert.deepEqual(offline[2].ids, [u3]);
  await sleep(200);
  assert.deepEqual(online.map((e) => e.ids), [[u1], [u2], [u3]], 'online events');
  assert.deepEqual(offline.map((e) => e.ids), [[u1], [u2], [u3]], 'offline events');
  assert.equal(w.inbound('pusher:error').length, 0);
});

test('watchlist: over 100 ids is pusher:error 4302, and the first 100 are watched', { timeout: 10000 }, async () => {
  const tag = uniq('');
  const ids = range(101).map((i) => `w${i}-${tag}`);
  const w = await connect({ name: 'watcher', userData: { id: `watcher-${tag}`, watchlist: ids } });
  const online = [];
  w.pusher.user.watchlist.bind('online', (e) => online.push(...e.user_ids));
  await w.signin();
  const err = await w.waitFrame('pusher:error');
  assert.equal(err.parsedData.code, 4302, err.raw);
  // The 101st comes online, then the 100th: only the 100th is told.
  const last = await connect({ name: 'w100', userData: { id: ids[100] } });
  await last.signin();
  const kept = await connect({ name: 'w99', userData: { id: ids[99] } });
  await kept.signin();
  await eventually(() => online.includes(ids[99]), 'the 100th id online');
  await sleep(300);
  assert.deepEqual(online, [ids[99]], 'online events: the 100th id only, not the 101st');
  assert.equal(w.state, 'connected');
  await w.ping();
});

test('authorized connections: closed with 4009 after the timeout unless signed in or on a private channel', { timeout: 10000 }, async () => {
  const opts = { app: authApp };
  const [idle, pub, badAuth, signed, priv, pres] = await Promise.all([
    connect({ ...opts, name: 'idle' }),
    connect({ ...opts, name: 'public only' }),
    connect({ ...opts, name: 'private, refused', sdkOptions: { secret: 'wrong-secret' } }),
    connect({ ...opts, name: 'signed in', userData: { id: uniq('user-') } }),
    connect({ ...opts, name: 'private' }),
    connect({ ...opts, name: 'presence', user: { user_id: 'p' } }),
  ]);
  const refused = uniq('private-y-');
  badAuth.subscribe(refused);
  await Promise.all([
    pub.subscribed(uniq('news-')),
    signed.signin(),
    priv.subscribed(uniq('private-x-')),
    pres.subscribed(uniq('presence-x-')),
    badAuth.waitEvent(refused, 'pusher:subscription_error'),
  ]);
  const closed = [];
  for (const c of [idle, pub, badAuth]) {
    const err = await c.waitFrame('pusher:error', undefined, authTimeout + 3000);
    assert.equal(err.parsedData.code, 4009, `${c.name}: ${err.raw}`);
    const close = await c.waitClose(0, 2000);
    assert.equal(close.code, 4009, `${c.name}: close code`);
    const opened = c.frames.find((f) => f.dir === 'in' && f.event === 'pusher:connection_established');
    const at = c.frames.find((f) => f.dir === 'close').at;
    closed.push(at - opened.at);
  }
  measured(`unauthorized connections closed after (timeout ${authTimeout} ms)`, JSON.stringify(closed));
  for (const ms of closed) assert.ok(ms >= authTimeout - 100 && ms <= authTimeout + 1000, `closed ${ms} ms after connecting, want about ${authTimeout}`);
  // The others are past their deadline too by now (they connected at the same time).
  await sleep(600);
  for (const c of [signed, priv, pres]) {
    await c.ping();
    assert.equal(c.state, 'connected', `${c.name} is still connected`);
    assert.equal(c.tap.sockets.length, 1, `${c.name}: one socket`);
    expectNone(c.frames, (f) => f.dir === 'close' || (f.dir === 'in' && f.event === 'pusher:error'), `close or pusher:error at ${c.name}`);
  }
  for (const c of [idle, pub, badAuth]) assert.equal(c.tap.sockets.length, 1, `${c.name}: pusher-js does not reconnect after 4009`);
});

test('the endpoint that hung gets its events once it answers, and every queue drains', { timeout: 15000 }, async () => {
  assert.ok(hung.channel, 'the hang test ran');
  hang.answer();
  const want = hung.sent0 + 2 * hung.events; // to /retry, and now to the endpoint that hung
  let m;
  await eventually(async () => (m = await metrics())('herald_webhooks_sent_total', retryApp.id, 'client_event') === want, `herald_webhooks_sent_total{app="${retryApp.id}",event="client_event"} to reach ${want}`, 8000);
  assert.ok(m('herald_webhooks_failed_total', retryApp.id, 'client_event') >= 1, 'the timed-out attempts are counted as failed');
  const gaps = hang.requests.map((r) => r.at - hung.firstAt);
  measured('requests to the hanging endpoint, after its first', JSON.stringify(gaps));
  if (gaps.length > 1) assert.ok(gaps[1] >= 4000, `second attempt ${gaps[1]} ms after the first: want the 4 s timeout first`);
  // The hang channel's subscribers left with the hang test: its vacancy reached /retry.
  await hooks.wait('/retry', { name: 'channel_vacated', channel: hung.channel }, GRACE + 2000);
  await eventually(async () => {
    const r = await admin('/metrics');
    return [env.app, retryApp, countsApp].every((a) => metric(r.text, 'herald_webhooks_queued', `app="${a.id}"`) === 0);
  }, 'every webhook queue to be empty');
  // What each app's hooks delivered is what the receiver got, and nothing was dropped.
  const delivered = { [env.app.id]: hooks.got('/all').length + hooks.got('/vip').length, [retryApp.id]: hooks.got('/retry').length + hung.events, [countsApp.id]: hooks.got('/counts').length };
  await eventually(async () => {
    const t = (await admin('/metrics')).text;
    return Object.entries(delivered).every(([id, n]) => metricSum(t, 'herald_webhooks_sent_total', `app="${id}"`) === n);
  }, `herald_webhooks_sent_total per app to be ${JSON.stringify(delivered)}`);
  const t = (await admin('/metrics')).text;
  for (const a of [env.app, countsApp]) assert.equal(metricSum(t, 'herald_webhooks_failed_total', `app="${a.id}"`), 0, `app ${a.id}: herald_webhooks_failed_total`);
  for (const a of [env.app, retryApp, countsApp]) assert.equal(metricSum(t, 'herald_webhooks_dropped_total', `app="${a.id}"`), 0, `app ${a.id}: herald_webhooks_dropped_total`);
  measured('webhook events delivered, by app', JSON.stringify(delivered), '');
});
