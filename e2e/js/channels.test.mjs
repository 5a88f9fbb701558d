// Channels: public, private (good and bad auth), private-encrypted, cache, socket_id
// exclusion and app isolation, with pusher-js subscribing and the SDK publishing.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect, cleanup, sdk, uniq, json, env, expectNone, sleep } from './lib.mjs';

afterEach(cleanup);

test('public channel: SDK trigger reaches the subscriber with the exact data', { timeout: 10000 }, async () => {
  const a = await connect({ name: 'a' });
  const ch = uniq('public-');
  await a.subscribed(ch);
  const [ok] = a.inbound('pusher_internal:subscription_succeeded', ch);
  assert.ok(ok, 'subscription_succeeded frame');

  const payload = { text: 'héllo "wörld" ✓', n: [1, 2.5, -3], nested: { t: true, z: null } };
  const res = await sdk().trigger(ch, 'order-created', payload);
  assert.equal(res.status, 200);
  assert.deepEqual(await json(res), {});

  const ev = await a.waitEvent(ch, 'order-created');
  assert.deepEqual(ev.data, payload);
  // The HTTP API's data string is forwarded byte for byte (PUSHER.md 1.2).
  const [frame] = a.inbound('order-created', ch);
  assert.equal(frame.data, JSON.stringify(payload), `raw frame ${frame.raw}`);

  // A string that is not JSON arrives as that string.
  await sdk().trigger(ch, 'plain', 'just text, not JSON');
  const plain = await a.waitEvent(ch, 'plain');
  assert.equal(plain.data, 'just text, not JSON');
});

test('events from one publisher arrive in order, at every subscriber', { timeout: 10000 }, async () => {
  const ch = uniq('public-order-');
  const subs = [];
  for (let i = 0; i < 10; i++) {
    const c = await connect({ name: `s${i}` });
    await c.subscribed(ch);
    subs.push(c);
  }
  const s = sdk();
  for (let i = 0; i < 30; i++) {
    const res = await s.trigger(ch, 'seq', { i });
    assert.equal(res.status, 200);
  }
  for (const c of subs) {
    await c.waitEvent(ch, 'seq', 5000, (e) => e.data.i === 29);
    assert.deepEqual(c.received(ch, 'seq').map((e) => e.data.i), [...Array(30).keys()], `${c.name} order`);
  }
});

test('a 200-character channel name with every allowed character works end to end', { timeout: 10000 }, async () => {
  // The SDKs accept up to 200 characters of [A-Za-z0-9_\-=@,.;] (PUSHER.md 1.6).
  const base = `private-AZaz09_-=@,.;${uniq('')}`;
  const ch = base + 'x'.repeat(200 - base.length);
  assert.equal(ch.length, 200);
  const a = await connect({ name: 'a' });
  await a.subscribed(ch);
  await sdk().trigger(ch, 'long', { ok: 1 });
  const ev = await a.waitEvent(ch, 'long');
  assert.deepEqual(ev.data, { ok: 1 });
});

test('unsubscribe stops delivery', { timeout: 10000 }, async () => {
  const a = await connect({ name: 'a' });
  const ch = uniq('public-');
  const marker = uniq('marker-');
  await a.subscribed(ch);
  await a.subscribed(marker);
  a.pusher.unsubscribe(ch);
  // pusher:unsubscribe has no reply; the marker publish is ordered after it on the wire.
  await sleep(100);
  await sdk().trigger(ch, 'after-unsubscribe', {});
  await sdk().trigger(marker, 'marker', {});
  await a.waitFrame('marker', marker);
  await sleep(100);
  expectNone(a.frames, (f) => f.dir === 'in' && f.event === 'after-unsubscribe', 'event after unsubscribe');
});

test('private channel with a valid signature', { timeout: 10000 }, async () => {
  const a = await connect({ name: 'a' });
  const ch = uniq('private-');
  await a.subscribed(ch);
  const [sub] = a.outbound('pusher:subscribe');
  assert.match(sub.data.auth, new RegExp(`^${env.app.key}:[0-9a-f]{64}$`));
  await sdk().trigger(ch, 'secret-news', { id: 7 });
  const ev = await a.waitEvent(ch, 'secret-news');
  assert.deepEqual(ev.data, { id: 7 });
});

test('private channel with a wrong signature: subscription_error, connection still usable', { timeout: 10000 }, async () => {
  const wrong = sdk({ secret: 'not-the-secret' });
  const a = await connect({
    name: 'a',
    authorize: (socketId, channel, sign) => (channel.includes('-bad-') ? wrong.authorizeChannel(socketId, channel) : sign(socketId, channel)),
  });
  const socketId = a.socketId;
  const bad = uniq('private-bad-');
  a.subscribe(bad);
  const err = await a.waitEvent(bad, 'pusher:subscription_error');
  assert.equal(err.data.type, 'AuthError', JSON.stringify(err.data));
  assert.equal(err.data.status, 401, JSON.stringify(err.data));
  assert.equal(typeof err.data.error, 'string');
  assert.ok(err.data.error.length > 0, 'error message');
  expectNone(a.events, (e) => e.channel === bad && e.event === 'pusher:subscription_succeeded', 'subscription_succeeded after a bad signature');

  // The connection stays open and works.
  const good = uniq('private-good-');
  await a.subscribed(good);
  await sdk().trigger(good, 'still-here', { ok: true });
  await a.waitEvent(good, 'still-here');
  assert.equal(a.state, 'connected');
  assert.equal(a.socketId, socketId, 'same connection');
  assert.equal(a.tap.sockets.length, 1, 'no reconnect');
  // Nothing published to the refused channel reaches the client.
  await sdk().trigger(bad, 'leak', {});
  await sdk().trigger(good, 'marker', {});
  await a.waitEvent(good, 'marker');
  expectNone(a.frames, (f) => f.dir === 'in' && f.event === 'leak', 'event on a channel whose auth failed');
});

test('private channel auth signed for another socket_id is refused', { timeout: 10000 }, async () => {
  const a = await connect({
    name: 'a',
    authorize: (socketId, channel, sign) => sign('1234.5678', channel),
  });
  const ch = uniq('private-');
  a.subscribe(ch);
  const err = await a.waitEvent(ch, 'pusher:subscription_error');
  assert.equal(err.data.status, 401, JSON.stringify(err.data));
  assert.equal(a.state, 'connected');
});

test('private-encrypted channel: SDK-encrypted event relayed as is and decrypted by pusher-js', { timeout: 10000 }, async () => {
  const masterKey = randomBytes(32).toString('base64');
  const a = await connect({ name: 'a', sdkOptions: { encryptionMasterKeyBase64: masterKey } });
  const ch = uniq('private-encrypted-');
  await a.subscribed(ch);

  const publisher = sdk({ encryptionMasterKeyBase64: masterKey });
  const posted = [];
  const post = publisher.post.bind(publisher);
  publisher.post = (o) => {
    posted.push(o.body);
    return post(o);
  };
  const secret = { card: '4111 1111 1111 1111', note: 'do not log' };
  const res = await publisher.trigger(ch, 'payment', secret);
  assert.equal(res.status, 200);

  const ev = await a.waitEvent(ch, 'payment');
  assert.deepEqual(ev.data, secret, 'pusher-js decrypted what the SDK encrypted');
  const [frame] = a.inbound('payment', ch);
  assert.equal(frame.data, posted[0].data, 'ciphertext relayed byte for byte');
  assert.ok(!frame.raw.includes('4111'), 'plaintext never on the wire');
  assert.deepEqual(Object.keys(JSON.parse(frame.data)).sort(), ['ciphertext', 'nonce']);
});

test('socket_id in a publish excludes that connection only', { timeout: 10000 }, async () => {
  const a = await connect({ name: 'a' });
  const b = await connect({ name: 'b' });
  const ch = uniq('public-');
  await a.subscribed(ch);
  await b.subscribed(ch);
  await sdk().trigger(ch, 'from-a', { n: 1 }, { socket_id: a.socketId });
  await sdk().trigger(ch, 'marker', { n: 2 });
  await b.waitEvent(ch, 'from-a');
  await b.waitEvent(ch, 'marker');
  await a.waitEvent(ch, 'marker');
  expectNone(a.events, (e) => e.event === 'from-a', 'event excluded by socket_id');
});

test('cache channel: pusher:cache_miss first, then the last event on a later subscribe', { timeout: 10000 }, async () => {
  const ch = uniq('cache-');
  const a = await connect({ name: 'a' });
  await a.subscribed(ch);
  await a.waitEvent(ch, 'pusher:cache_miss');
  const frames = a.frames.entries.filter((f) => f.dir === 'in' && f.channel === ch).map((f) => f.event);
  assert.deepEqual(frames, ['pusher_internal:subscription_succeeded', 'pusher:cache_miss'], 'cache_miss comes after subscription_succeeded');

  await sdk().trigger(ch, 'price', { v: 1 });
  await sdk().trigger(ch, 'price', { v: 2 });
  await a.waitEvent(ch, 'price', 5000, (e) => e.data.v === 2);

  const b = await connect({ name: 'b' });
  await b.subscribed(ch);
  const cached = await b.waitEvent(ch, 'price');
  assert.deepEqual(cached.data, { v: 2 }, 'the last event is replayed');
  const bFrames = b.frames.entries.filter((f) => f.dir === 'in' && f.channel === ch);
  assert.deepEqual(bFrames.map((f) => f.event), ['pusher_internal:subscription_succeeded', 'price'], 'no cache_miss, cached event after subscription_succeeded');
  const [live] = a.inbound('price', ch).filter((f) => f.parsedData.v === 2);
  assert.equal(bFrames[1].raw, live.raw, 'the cached frame is the frame that was published');

  // GET /channels/{name}?info=cache shows the cached event (PUSHER.md 1.11, 2.1).
  const info = await json(await sdk().get({ path: `/channels/${ch}`, params: { info: 'cache' } }));
  assert.equal(info.occupied, true, JSON.stringify(info));
  assert.ok(info.cache, `no cache attribute: ${JSON.stringify(info)}`);
  assert.equal(info.cache.data, JSON.stringify({ v: 2 }), JSON.stringify(info));
  assert.ok(info.cache.ttl > 0 && info.cache.ttl <= 30 * 60, `ttl ${info.cache.ttl} s, want (0, 1800]`);
});

test('private-cache- and presence-cache- channels: cache_miss after auth, then the last event', { timeout: 10000 }, async () => {
  for (const prefix of ['private-cache-', 'presence-cache-']) {
    const ch = uniq(prefix);
    const a = await connect({ name: `${prefix}a`, user: { user_id: 'a' } });
    await a.subscribed(ch);
    await a.waitEvent(ch, 'pusher:cache_miss');
    await sdk().trigger(ch, 'last', { p: prefix });
    await a.waitEvent(ch, 'last');
    const b = await connect({ name: `${prefix}b`, user: { user_id: 'b' } });
    await b.subscribed(ch);
    const cached = await b.waitEvent(ch, 'last');
    assert.deepEqual(cached.data, { p: prefix });
    assert.equal(b.inbound('pusher:cache_miss', ch).length, 0);
  }
});

test('client events are not cached', { timeout: 10000 }, async () => {
  const ch = uniq('private-cache-');
  const a = await connect({ name: 'a' });
  const b = await connect({ name: 'b' });
  const chA = await a.subscribed(ch);
  await b.subscribed(ch);
  chA.trigger('client-note', { x: 1 });
  await b.waitEvent(ch, 'client-note');
  const c = await connect({ name: 'c' });
  await c.subscribed(ch);
  await c.waitEvent(ch, 'pusher:cache_miss');
  assert.equal(c.inbound('client-note', ch).length, 0, 'a client event replayed from the cache');
});

test('apps are isolated: same channel name, other app', { timeout: 10000 }, async () => {
  assert.ok(env.app2, 'the harness configures a second app (APP2_*)');
  const ch = uniq('shared-');
  const a = await connect({ name: 'app1' });
  const b = await connect({ name: 'app2', app: env.app2 });
  await a.subscribed(ch);
  await b.subscribed(ch);
  await sdk().trigger(ch, 'for-app1', {});
  await sdk({ app: env.app2 }).trigger(ch, 'for-app2', {});
  await a.waitEvent(ch, 'for-app1');
  await b.waitEvent(ch, 'for-app2');
  await sleep(100);
  expectNone(b.events, (e) => e.event === 'for-app1', "app 1's event on app 2");
  expectNone(a.events, (e) => e.event === 'for-app2', "app 2's event on app 1");

  // App 1's secret does not authorize app 2's private channels.
  const c = await connect({ name: 'app2-signed-by-app1', key: env.app2.key, app: env.app });
  const p = uniq('private-');
  c.subscribe(p);
  const err = await c.waitEvent(p, 'pusher:subscription_error');
  assert.equal(err.data.status, 401);
});
